"""Every encoder configuration the project offers passes the encoder conformance checks.

Configurations: the bundled all-MiniLM-L6-v2 in fp32 and int8, the tiny random BERT the tests
use (mean and CLS pooling, bf16 autocast on the CPU), an encoder fine-tuned on co-occurring
items and saved as `recsys finetune-encoder` saves it, and MiniLM under fp16/bf16 autocast on
a CUDA device. A check that does not apply to a configuration, and a configuration this
machine cannot run, are explicit skips with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from recsys_core.data.interactions import Interactions
from recsys_core.data.synth import SynthConfig, synth_events, synth_items
from recsys_core.encoders import ItemTextEncoder
from recsys_core.encoders.finetune import FinetuneConfig, cooccurrence_pairs, finetune
from recsys_core.testing.encoders import CHECKS, EncoderCapabilities, NotApplicable

MAX_LENGTH = 64


@dataclass(frozen=True)
class Configuration:
    """How to build one encoder configuration and what it promises.

    Attributes:
        build: Makes the encoder and its capabilities from the shared pieces (`Pieces`).
        needs_cuda: Runs only where a CUDA device is present.
    """

    build: Callable[[Pieces], tuple[ItemTextEncoder, EncoderCapabilities]]
    needs_cuda: bool = False


class Pieces:
    """What several configurations share, built once per module: the tiny BERT folder, the
    fp32 encoders that reduced-precision ones are compared with, a fine-tuned encoder."""

    def __init__(self, tiny_folder: Path, workdir: Path):
        self.tiny_folder = tiny_folder
        self.workdir = workdir
        self._cache: dict[str, ItemTextEncoder] = {}

    def encoder(self, key: str, make: Callable[[], ItemTextEncoder]) -> ItemTextEncoder:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def minilm(self) -> ItemTextEncoder:
        return self.encoder(
            "minilm", lambda: ItemTextEncoder(None, max_length=MAX_LENGTH, device="cpu")
        )

    def tiny(self) -> ItemTextEncoder:
        return self.encoder(
            "tiny", lambda: ItemTextEncoder(self.tiny_folder, max_length=MAX_LENGTH, device="cpu")
        )

    def finetuned_folder(self) -> Path:
        """The tiny BERT after a few fine-tuning steps on synthetic co-consumption, saved."""
        folder = self.workdir / "finetuned"
        if not (folder / "config.json").is_file():
            config = SynthConfig(users=30, items=20, events=400, clusters=4, max_words=12, seed=3)
            data = Interactions.from_events(synth_events(config))
            items = synth_items(config)
            by_id = dict(
                zip(items["item_id"], items["title"] + ". " + items["description"], strict=True)
            )
            texts = [by_id[i] for i in data.items.ids.to_list()]
            tune = FinetuneConfig(
                pairs=32, validation_pairs=0, batch_size=8, max_steps=2, learning_rate=1e-3,
                max_length=32, warmup_fraction=0.0,
            )  # fmt: skip
            encoder = ItemTextEncoder(self.tiny_folder, max_length=32, device="cpu")
            finetune(encoder, texts, cooccurrence_pairs(data, tune), tune)
            encoder.save(folder, metadata={"base": str(self.tiny_folder), "steps": 2})
        return folder


def minilm_fp32(pieces: Pieces):
    return pieces.minilm(), EncoderCapabilities(source=None)


def minilm_int8(pieces: Pieces):
    encoder = ItemTextEncoder(None, max_length=MAX_LENGTH, device="cpu", precision="int8")
    # A 3-token text padded in a batch of longer ones is the worst case: cosine 0.987 to
    # fp32 (0.994 alone); the long texts of benchmarks/encode.py stay above 0.992.
    return encoder, EncoderCapabilities(
        source=None, approximate=True, min_cosine=0.98, reference=pieces.minilm()
    )


def tiny_mean(pieces: Pieces):
    return pieces.tiny(), EncoderCapabilities(source=str(pieces.tiny_folder))


def tiny_cls(pieces: Pieces):
    encoder = ItemTextEncoder(
        pieces.tiny_folder, max_length=MAX_LENGTH, device="cpu", pooling="cls"
    )
    return encoder, EncoderCapabilities(source=str(pieces.tiny_folder), query_encoder=False)


def tiny_bf16_cpu(pieces: Pieces):
    encoder = ItemTextEncoder(
        pieces.tiny_folder, max_length=MAX_LENGTH, device="cpu", precision="bf16"
    )
    return encoder, EncoderCapabilities(
        source=str(pieces.tiny_folder), approximate=True, min_cosine=0.99, reference=pieces.tiny()
    )


def finetuned(pieces: Pieces):
    folder = pieces.finetuned_folder()
    encoder = ItemTextEncoder(folder, max_length=MAX_LENGTH, device="cpu")
    assert encoder.encoder_id != pieces.tiny().encoder_id  # a new model, so a new id
    return encoder, EncoderCapabilities(source=str(folder))


def minilm_cuda(precision: str):
    def build(pieces: Pieces):
        encoder = ItemTextEncoder(None, max_length=MAX_LENGTH, device="cuda", precision=precision)
        return encoder, EncoderCapabilities(
            source=None, approximate=True, min_cosine=0.999, reference=pieces.minilm()
        )

    return build


CONFIGURATIONS = {
    "minilm-fp32": Configuration(minilm_fp32),
    "minilm-int8": Configuration(minilm_int8),
    "tiny-mean": Configuration(tiny_mean),
    "tiny-cls": Configuration(tiny_cls),
    "tiny-bf16-cpu": Configuration(tiny_bf16_cpu),
    "finetuned": Configuration(finetuned),
    "minilm-cuda-fp16": Configuration(minilm_cuda("fp16"), needs_cuda=True),
    "minilm-cuda-bf16": Configuration(minilm_cuda("bf16"), needs_cuda=True),
}


@pytest.fixture(scope="module")
def pieces(tiny_encoder_dir, tmp_path_factory) -> Pieces:
    return Pieces(tiny_encoder_dir, tmp_path_factory.mktemp("encoder-contract"))


@pytest.fixture(scope="module")
def built(pieces) -> dict[str, tuple[ItemTextEncoder, EncoderCapabilities]]:
    """Encoders built on first use and shared by every check of the module."""
    return {}


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
def test_encoder_configuration_meets_the_contract(configuration, check, pieces, built):
    setup = CONFIGURATIONS[configuration]
    if setup.needs_cuda and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if configuration not in built:
        built[configuration] = setup.build(pieces)
    encoder, capabilities = built[configuration]
    try:
        CHECKS[check](encoder, capabilities)
    except NotApplicable as reason:
        pytest.skip(f"{check} does not apply to {configuration}: {reason}")
