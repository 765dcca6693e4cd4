"""Encode: `items` -> `item_embeddings`, only for items whose text or encoder changed.

An encode run has three steps, so the middle one can run on many workers at once:

1. `plan_encode` finds the items whose (item_id, text_hash) has no vector from this encoder
   and splits them into shards of similar work (similar text lengths in each).
2. `encode_shard` encodes one shard and stages its rows as a Parquet file. Shards are small,
   picklable descriptions (paths, ids, the pinned catalog version) and independent of each
   other; a retried shard overwrites its own staged file.
3. `commit_encode` checks that every shard staged all its rows and upserts them all into
   `item_embeddings` in one Delta commit. A failed shard means no commit: nothing is
   published and the table stays as it was.

`encode_items` runs the three steps in this process; the Prefect flows map step 2 over
shards on their task runner.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys_core import schemas
from recsys_core.data.vocab import Vocabulary
from recsys_core.encoders.item_text_encoder import ItemTextEncoder, encoder_identity
from recsys_core.encoders.registry import resolve_encoder
from recsys_core.errors import InputError
from recsys_core.settings import Settings
from recsys_core.storage import Lake

STAGING = "_staging/encode"  # under the data directory; one folder per plan
STALE_STAGING_SECONDS = 24 * 3600  # staged shards of failed runs older than this are removed


@dataclass
class EncodeReport:
    encoder: str
    items_total: int = 0
    encoded: int = 0
    reused: int = 0
    truncated: int = 0
    empty_text: int = 0
    seconds: float = 0.0  # encoding time summed over shards
    items_per_second: float = 0.0  # per worker: encoded / seconds
    shards: int = 0
    version: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EncodeShard:
    """One independent piece of an encode run.

    Attributes:
        data_dir: The data directory (shared by every worker).
        plan_id: The run this shard belongs to.
        index: Shard number, 0-based.
        items_version: Delta version of `items` the plan read; every shard reads the same one.
        encoder_source: Local folder or Hugging Face id to load (registry references are
            resolved by the plan).
        encoder_name: Readable encoder name for the encoder id.
        encoder: The encoder id the plan expects; a worker whose model differs refuses.
        item_ids: Items to encode.
        staged: Parquet file this shard writes.
    """

    data_dir: str
    plan_id: str
    index: int
    items_version: int
    encoder_source: str | None
    encoder_name: str | None
    encoder: str
    item_ids: tuple[str, ...]
    staged: str


@dataclass(frozen=True)
class EncodePlan:
    data_dir: str
    plan_id: str
    encoder: str
    items_total: int
    reused: int
    shards: tuple[EncodeShard, ...]
    staging_dir: str


@dataclass(frozen=True)
class EncodeShardResult:
    index: int
    staged: str
    rows: int
    truncated: int
    empty_text: int
    seconds: float
    device: str


def encoder_id(settings: Settings) -> str:
    """Id of the configured encoder (what `item_embeddings.encoder` holds for its vectors)."""
    return _resolve(settings, settings.data_dir)[1]


def _resolve(settings: Settings, root: Path):
    """The configured encoder's files and its id (source, max length, name)."""
    resolved = resolve_encoder(settings.encoder, root)
    identity = encoder_identity(
        resolved.source, max_length=settings.encoder_max_length, name=resolved.name
    )
    return resolved, identity


def plan_encode(lake: Lake, settings: Settings, shards: int | None = None) -> EncodePlan:
    """Find the items to encode and split them into shards.

    Args:
        lake: The data directory.
        settings: Encoder, max length and (when `shards` is None) `encode_shards`.
        shards: Number of shards; fewer when there are fewer items than shards.
    """
    resolved, identity = _resolve(settings, lake.root)
    items_version = lake.version("items")
    if items_version is None:
        raise InputError(f"table items not found under {lake.root} (run `recsys ingest` first)")
    items = lake.read("items", ["item_id", "text", "text_hash"], version=items_version)
    stored = (
        lake.scan("item_embeddings")
        .filter(pl.col("encoder") == identity)
        .select("item_id", "text_hash")
        .collect()
        if lake.exists("item_embeddings")
        else pl.DataFrame(schema={"item_id": pl.String, "text_hash": pl.String})
    )
    todo = items.join(stored, on=["item_id", "text_hash"], how="anti")
    plan_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    staging = lake.root / STAGING / plan_id
    _remove_stale_staging(lake.root / STAGING)
    n_shards = max(1, min(shards or settings.encode_shards, todo.height))
    # deal items round-robin in order of text length, so every shard gets a similar mix of
    # long and short texts (and similar work); each shard sorts its own batches again
    order = todo.with_columns(length=pl.col("text").str.len_bytes()).sort(
        ["length", "item_id"], descending=[True, False]
    )
    ids = order["item_id"].to_list()
    plan_shards = tuple(
        EncodeShard(
            data_dir=str(lake.root),
            plan_id=plan_id,
            index=i,
            items_version=items_version,
            encoder_source=resolved.source,
            encoder_name=resolved.name,
            encoder=identity,
            item_ids=tuple(ids[i::n_shards]),
            staged=str(staging / f"shard-{i:05d}.parquet"),
        )
        for i in range(n_shards)
        if todo.height
    )
    return EncodePlan(
        data_dir=str(lake.root), plan_id=plan_id, encoder=identity, items_total=items.height,
        reused=items.height - todo.height, shards=plan_shards, staging_dir=str(staging),
    )  # fmt: skip


def encode_shard(
    shard: EncodeShard, settings: Settings, *, progress: bool = False
) -> EncodeShardResult:
    """Encode one shard's items and stage their rows (the table is not touched).

    Args:
        shard: From `plan_encode`.
        settings: Device, batch size, token budget and precision for this worker.
        progress: Show a progress bar with items/s.
    """
    lake = Lake(Path(shard.data_dir))
    rows = (
        lake.scan("items", version=shard.items_version)
        .filter(pl.col("item_id").is_in(list(shard.item_ids)))
        .select("item_id", "text", "text_hash")
        .collect()
    )
    if rows.height != len(shard.item_ids):
        raise InputError(
            f"encode shard {shard.index}: items version {shard.items_version} has "
            f"{rows.height} of the shard's {len(shard.item_ids)} items"
        )
    encoder = ItemTextEncoder(
        shard.encoder_source,
        max_length=settings.encoder_max_length,
        batch_size=_explicit_batch_size(settings),
        device=settings.device,
        precision=settings.encoder_precision,
        max_batch_tokens=settings.encoder_batch_tokens,
        name=shard.encoder_name,
    )
    if encoder.encoder_id != shard.encoder:
        raise InputError(
            f"encode shard {shard.index}: this worker's encoder is {encoder.encoder_id}, the plan "
            f"expects {shard.encoder} (same model files on every worker?)"
        )
    texts = rows["text"].to_list()
    result = encoder.encode(texts, progress=progress)
    staged = rows.select("item_id", "text_hash").with_columns(
        encoder=pl.lit(shard.encoder),
        embedding=pl.Series(result.embeddings).cast(pl.List(pl.Float32)),
        truncated=pl.Series(result.truncated),
        encoded_at=pl.lit(datetime.now(UTC)).cast(schemas.UTC_TIME),
    )
    staged = schemas.conform(staged, schemas.ITEM_EMBEDDINGS, table="item_embeddings")
    target = Path(shard.staged)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    staged.write_parquet(partial)
    os.replace(partial, target)  # a reader sees the whole file or none
    return EncodeShardResult(
        index=shard.index, staged=str(target), rows=staged.height,
        truncated=int(result.truncated.sum()),
        empty_text=int(sum(1 for t in texts if not (t and t.strip()))),
        seconds=round(result.seconds, 3), device=str(encoder.device),
    )  # fmt: skip


def commit_encode(
    plan: EncodePlan, results: Sequence[EncodeShardResult], *, run_id: str = ""
) -> EncodeReport:
    """Upsert every shard's staged rows into `item_embeddings` in one commit.

    Args:
        plan: From `plan_encode`.
        results: One result per shard of the plan, in any order.
        run_id: Recorded in the commit metadata.

    Raises:
        InputError: A shard is missing or staged other rows than it was given; nothing is
            written then.
    """
    lake = Lake(Path(plan.data_dir))
    report = EncodeReport(
        encoder=plan.encoder, items_total=plan.items_total, reused=plan.reused,
        shards=len(plan.shards),
    )  # fmt: skip
    by_index = {r.index: r for r in results}
    missing = [s.index for s in plan.shards if s.index not in by_index]
    if missing:
        raise InputError(
            f"encode plan {plan.plan_id}: shard(s) {missing} returned no result; nothing written"
        )
    if not plan.shards:
        report.version = lake.version("item_embeddings")
        return report
    frames = []
    for shard in plan.shards:
        staged = Path(by_index[shard.index].staged)
        if not staged.is_file():
            raise InputError(f"encode shard {shard.index}: staged file {staged} is missing")
        frame = pl.read_parquet(staged)
        if sorted(frame["item_id"].to_list()) != sorted(shard.item_ids):
            raise InputError(
                f"encode shard {shard.index}: {staged} holds {frame.height} rows, not the "
                f"shard's {len(shard.item_ids)} items"
            )
        frames.append(frame)
    rows = pl.concat(frames).sort("item_id")
    report.version = lake.upsert(
        "item_embeddings",
        rows,
        keys=["item_id", "encoder"],
        metadata={
            "run_id": run_id, "stage": "encode", "encoder": plan.encoder, "rows": rows.height,
            "shards": len(plan.shards), "plan": plan.plan_id,
        },
    )  # fmt: skip
    shutil.rmtree(plan.staging_dir, ignore_errors=True)
    report.encoded = rows.height
    report.truncated = sum(r.truncated for r in results)
    report.empty_text = sum(r.empty_text for r in results)
    report.seconds = round(sum(r.seconds for r in results), 3)
    report.items_per_second = round(rows.height / report.seconds, 1) if report.seconds else 0.0
    return report


def encode_items(
    lake: Lake,
    settings: Settings,
    *,
    run_id: str = "",
    progress: bool = False,
    shards: int | None = None,
) -> EncodeReport:
    """Embed every item whose (item_id, text_hash) has no vector from this encoder yet.

    Args:
        lake: The data directory.
        settings: Encoder and run settings.
        run_id: Recorded in the commit metadata.
        progress: Show a progress bar with items/s.
        shards: Shards to run one after another here (default `settings.encode_shards`).
    """
    plan = plan_encode(lake, settings, shards)
    results = [encode_shard(shard, settings, progress=progress) for shard in plan.shards]
    return commit_encode(plan, results, run_id=run_id)


def embedding_matrix(lake: Lake, items: Vocabulary, identity: str) -> torch.Tensor | None:
    """(n_items, D) vectors aligned with `items`; zero rows for items without one.

    Returns None when this encoder has no vectors stored at all.
    """
    if not lake.exists("item_embeddings"):
        return None
    stored = (
        lake.scan("item_embeddings")
        .filter(pl.col("encoder") == identity)
        .select("item_id", "embedding")
        .collect()
    )
    if stored.is_empty():
        return None
    dim = len(stored["embedding"][0])
    index = items.index(stored["item_id"])
    keep = index >= 0
    vectors = stored["embedding"].list.to_array(dim).to_numpy().astype(np.float32, copy=False)
    out = np.zeros((len(items), dim), dtype=np.float32)
    out[index[keep]] = vectors[keep]
    return torch.from_numpy(out)


def _explicit_batch_size(settings: Settings) -> int | None:
    """The batch size a user set (flag or RECSYS_ENCODER_BATCH_SIZE), else None so the
    encoder picks the device's default (64 texts on CPU, 1,024 on CUDA)."""
    return (
        settings.encoder_batch_size if "encoder_batch_size" in settings.model_fields_set else None
    )


def _remove_stale_staging(root: Path) -> None:
    """Staged shards of runs that failed long ago: no commit will ever read them."""
    if not root.is_dir():
        return
    cutoff = time.time() - STALE_STAGING_SECONDS
    for folder in root.iterdir():
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
