"""Encode: `items` -> `item_embeddings`, only for items whose text or encoder changed.

An encode run has three steps, so the middle one can run on many workers at once:

1. `plan_encode` finds the items whose (item_id, text_hash) has no vector from this encoder
   and splits them into shards of similar work (similar text lengths in each). Rows that
   earlier runs staged but never committed (a killed, stopped or failed run) are taken over
   when their (item_id, text_hash, encoder) still match, and not encoded again.
2. `encode_shard` encodes one shard and stages its rows as Parquet part files as it goes
   (one about every 30 s of work, each written whole or not at all), then merges them into
   one file per shard. Shards are small, picklable descriptions (paths, ids, the pinned
   catalog version) and independent of each other; a retried shard keeps its earlier parts.
3. `commit_encode` checks that every shard staged all its rows and upserts them, with the
   rows taken over from earlier runs, into `item_embeddings` in one Delta commit. A failed
   shard means no commit: nothing is published and the table stays as it was.

Nothing staged is visible in `item_embeddings` before that commit.

`encode_items` runs the three steps in this process; the Prefect flows map step 2 over
shards on their task runner.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
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
from recsys_core.cancel import raise_if_stopped
from recsys_core.context import RunContext
from recsys_core.data.vocab import Vocabulary
from recsys_core.encoders.item_text_encoder import ItemTextEncoder, encoder_identity
from recsys_core.encoders.registry import resolve_encoder
from recsys_core.errors import InputError
from recsys_core.progress import track
from recsys_core.storage import Lake
from recsys_core.storage.owners import claim, process_alive

STAGING = "_staging/encode"  # under the data directory; one folder per plan
STALE_STAGING_SECONDS = 24 * 3600  # staged shards of failed runs older than this are removed
# A shard stages a part file after about this much encoding (seconds); what a killed run
# loses is at most this much work per shard. RECSYS_ENCODE_PART_SECONDS overrides it.
PART_SECONDS = 30.0
OWNER_FILE = "owner.json"  # in each plan folder: the host and process that will commit it
# a plan folder of another host counts as a running plan while its files changed this recently
LIVE_SECONDS = 600.0
RESUMED = "resumed"  # subfolder of a plan holding the staged files taken over from dead plans


@dataclass
class EncodeReport:
    encoder: str
    items_total: int = 0
    encoded: int = 0
    reused: int = 0
    truncated: int = 0
    empty_text: int = 0
    seconds: float = 0.0  # encoding time summed over shards
    items_per_second: float = 0.0  # per worker: items encoded by this run / seconds
    shards: int = 0
    version: int | None = None
    resumed: int = 0  # of `encoded`: rows staged by earlier runs that never committed

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EncodeShard:
    """One independent piece of an encode run.

    Attributes:
        plan_id: The run this shard belongs to.
        index: Shard number, 0-based.
        items_version: Delta version of `items` the plan read; every shard reads the same one.
        encoder_source: Local folder or Hugging Face id to load (registry references are
            resolved by the plan).
        encoder_name: Readable encoder name for the encoder id.
        encoder: The encoder id the plan expects; a worker whose model differs refuses.
        item_ids: Items to encode, longest texts first.
        staged: Parquet file this shard writes; its parts go to the folder beside it with
            the suffix `.parts`.
    """

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
    """What an encode run will do; passed from the plan to the commit.

    Attributes:
        plan_id: This run's id (its staging folder's name).
        encoder: The encoder id of every row.
        items_total: Items in the catalog.
        reused: Items whose vector from this encoder is already in the table.
        shards: The work left, in shards.
        staging_dir: Where the shards stage their rows.
        items_version: Delta version of `items` the plan read.
        resumed_items: Items whose rows earlier, uncommitted runs staged; not encoded again.
        resumed_files: Those runs' staged files, moved under `staging_dir`.
    """

    plan_id: str
    encoder: str
    items_total: int
    reused: int
    shards: tuple[EncodeShard, ...]
    staging_dir: str
    items_version: int | None = None
    resumed_items: tuple[str, ...] = ()
    resumed_files: tuple[str, ...] = ()

    @property
    def resumed(self) -> int:
        return len(self.resumed_items)


@dataclass(frozen=True)
class EncodeShardResult:
    index: int
    staged: str
    rows: int
    truncated: int
    empty_text: int
    seconds: float
    device: str


def encoder_id(context: RunContext) -> str:
    """Id of the configured encoder (what `item_embeddings.encoder` holds for its vectors)."""
    return _resolve(context)[1]


def _resolve(context: RunContext):
    """The configured encoder's files and its id (source, max length, name).

    A local folder or registry reference resolves against the context's data directory.
    """
    embedding = context.settings.embedding
    resolved = resolve_encoder(embedding.encoder, context.lake.root)
    identity = encoder_identity(
        resolved.source, max_length=embedding.encoder_max_length, name=resolved.name,
        precision=embedding.encoder_precision,
    )  # fmt: skip
    return resolved, identity


def plan_encode(context: RunContext, shards: int | None = None) -> EncodePlan:
    """Find the items to encode and split them into shards.

    Rows staged by earlier runs that did not commit (their process is gone) count as done
    when their (item_id, text_hash, encoder) still match: their files move into this plan's
    staging folder and the commit publishes them with the rest.

    Args:
        context: The data directory; its settings give the encoder, max length and (when
            `shards` is None) `encode_shards`.
        shards: Number of shards; fewer when there are fewer items than shards.
    """
    lake = context.lake
    resolved, identity = _resolve(context)
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
    if todo.height:
        _claim_staging(staging)
    resumed_files, resumed_ids = _take_over_staged(lake.root / STAGING, staging, identity, todo)
    _remove_empty_dead_plans(lake.root / STAGING, staging)
    todo = todo.filter(~pl.col("item_id").is_in(sorted(resumed_ids)))
    n_shards = max(1, min(shards or context.settings.encode.encode_shards, todo.height))
    # deal items round-robin in order of text length, so every shard gets a similar mix of
    # long and short texts (and similar work); each shard sorts its own batches again
    order = todo.with_columns(length=pl.col("text").str.len_bytes()).sort(
        ["length", "item_id"], descending=[True, False]
    )
    ids = order["item_id"].to_list()
    plan_shards = tuple(
        EncodeShard(
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
        plan_id=plan_id, encoder=identity, items_total=items.height,
        reused=items.height - todo.height - len(resumed_ids), shards=plan_shards,
        staging_dir=str(staging), items_version=items_version,
        resumed_items=tuple(sorted(resumed_ids)), resumed_files=resumed_files,
    )  # fmt: skip


def encode_shard(
    context: RunContext, shard: EncodeShard, *, progress: bool = False
) -> EncodeShardResult:
    """Encode one shard's items and stage their rows (the table is not touched).

    Rows are staged in parts as they are made, so a run that is killed or stopped keeps
    them for the next plan; parts an earlier attempt of this shard staged are kept and their
    items not encoded again. At the end the parts become one file per shard.

    Args:
        context: The data directory; its settings give the device, batch size, token budget
            and precision for this worker.
        shard: From `plan_encode`.
        progress: Show a progress bar with items/s.

    Raises:
        Stopped: A stop was requested; the rows encoded so far are staged first.
    """
    lake, settings = context.lake, context.settings
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
    target = Path(shard.staged)
    parts = _PartWriter(_parts_dir(target), shard.encoder)
    done = _read_staged(parts.folder.glob("*.parquet"), shard.encoder, rows)
    todo = rows.join(done.select("item_id"), on="item_id", how="anti")
    encoder = ItemTextEncoder(
        shard.encoder_source,
        max_length=settings.embedding.encoder_max_length,
        batch_size=settings.encode.encoder_batch_size,
        device=settings.compute.device,
        precision=settings.embedding.encoder_precision,
        max_batch_tokens=settings.encode.encoder_batch_tokens,
        name=shard.encoder_name,
    )
    if encoder.encoder_id != shard.encoder:
        raise InputError(
            f"encode shard {shard.index}: this worker's encoder is {encoder.encoder_id}, the plan "
            f"expects {shard.encoder} (same model files on every worker?)"
        )
    start = time.perf_counter()
    keys = todo.select("item_id", "text_hash")
    try:
        batches = encoder.encode_batches(todo["text"].to_list(), progress=progress)
        for batch in track(
            batches,
            f"encode shard {shard.index}",
            total=todo.height,
            size=lambda b: len(b.rows),
            heartbeat=True,
        ):
            parts.add(keys[batch.rows], batch.vectors, batch.truncated)
            if parts.due():
                parts.flush()
    except BaseException:
        # keep what this attempt encoded (a stop, a lost worker): the next plan takes it over
        with contextlib.suppress(Exception):
            parts.flush()
        raise
    parts.flush()
    seconds = time.perf_counter() - start
    staged = _read_staged(parts.folder.glob("*.parquet"), shard.encoder, rows)
    if staged.height != rows.height:
        raise InputError(
            f"encode shard {shard.index}: {parts.folder} holds {staged.height} of the shard's "
            f"{rows.height} items"
        )
    _write_atomically(staged.sort("item_id"), target)
    shutil.rmtree(parts.folder, ignore_errors=True)  # the shard file holds every part's rows
    texts = rows["text"].to_list()
    return EncodeShardResult(
        index=shard.index, staged=str(target), rows=staged.height,
        truncated=int(staged["truncated"].sum()),
        empty_text=int(sum(1 for t in texts if not (t and t.strip()))),
        seconds=round(seconds, 3), device=str(encoder.device),
    )  # fmt: skip


def commit_encode(
    context: RunContext, plan: EncodePlan, results: Sequence[EncodeShardResult]
) -> EncodeReport:
    """Upsert every shard's staged rows, and those taken over from earlier runs, into
    `item_embeddings` in one commit.

    Args:
        context: The data directory and the run id (recorded in the commit metadata).
        plan: From `plan_encode`.
        results: One result per shard of the plan, in any order.

    Raises:
        InputError: A shard is missing or staged other rows than it was given, or a file
            taken over from an earlier run is gone; nothing is written then.
        Stopped: A stop was requested before the commit; nothing is written.
    """
    lake = context.lake
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
    if not plan.shards and not plan.resumed_items:
        report.version = lake.version("item_embeddings")
        return report
    frames = [_resumed_rows(plan, lake)] if plan.resumed_items else []
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
    raise_if_stopped()  # the last moment to stop with nothing written
    report.version = lake.upsert(
        "item_embeddings",
        rows,
        keys=["item_id", "encoder"],
        metadata={
            "run_id": context.run_id, "stage": "encode", "encoder": plan.encoder,
            "rows": rows.height, "shards": len(plan.shards), "plan": plan.plan_id,
            "resumed": plan.resumed,
        },
    )  # fmt: skip
    shutil.rmtree(plan.staging_dir, ignore_errors=True)
    report.encoded = rows.height
    report.resumed = plan.resumed
    report.truncated = int(rows["truncated"].sum())
    report.empty_text = sum(r.empty_text for r in results)
    report.seconds = round(sum(r.seconds for r in results), 3)
    fresh = rows.height - plan.resumed
    report.items_per_second = round(fresh / report.seconds, 1) if report.seconds else 0.0
    return report


def encode_items(
    context: RunContext, *, progress: bool = False, shards: int | None = None
) -> EncodeReport:
    """Embed every item whose (item_id, text_hash) has no vector from this encoder yet.

    Args:
        context: The data directory, encoder and run settings, and the run id (recorded in
            the commit metadata).
        progress: Show a progress bar with items/s.
        shards: Shards to run one after another here (default: the `encode_shards` setting).
    """
    plan = plan_encode(context, shards)
    results = [encode_shard(context, shard, progress=progress) for shard in plan.shards]
    return commit_encode(context, plan, results)


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


def _remove_empty_dead_plans(root: Path, staging: Path) -> None:
    """Plan folders with nothing staged whose run is gone (e.g. stopped before its first
    part): nothing in them can be taken over, so they go now, not after a day.

    A folder without an owner file is left for LIVE_SECONDS: a plan being claimed right now
    creates its folder an instant before its owner file.
    """
    if not root.is_dir():
        return
    for folder in root.iterdir():
        if not folder.is_dir() or folder == staging or any(folder.rglob("*.parquet")):
            continue
        if not (folder / OWNER_FILE).is_file():
            if time.time() - folder.stat().st_mtime < LIVE_SECONDS:
                continue
        elif _plan_is_live(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _remove_stale_staging(root: Path) -> None:
    """Staged shards of runs that failed long ago: no commit will ever read them."""
    if not root.is_dir():
        return
    cutoff = time.time() - STALE_STAGING_SECONDS
    for folder in root.iterdir():
        if folder.is_dir() and folder.stat().st_mtime < cutoff and not _plan_is_live(folder):
            shutil.rmtree(folder, ignore_errors=True)


# -- staging: parts, owners, taking over what dead runs staged ----------------------------
class _PartWriter:
    """Collects a shard's rows and stages them as numbered part files.

    Args:
        folder: The shard's parts folder (created on the first flush).
        encoder: The encoder id every row carries.
    """

    def __init__(self, folder: Path, encoder: str):
        self.folder, self.encoder = folder, encoder
        self.pending: list[pl.DataFrame] = []
        self.last = time.monotonic()
        self.every = _part_seconds()

    def add(self, keys: pl.DataFrame, vectors: np.ndarray, truncated: np.ndarray) -> None:
        """Rows of one batch: `keys` (item_id, text_hash) with their (B, D) vectors."""
        self.pending.append(
            keys.with_columns(
                encoder=pl.lit(self.encoder),
                embedding=pl.Series(vectors).cast(pl.List(pl.Float32)),
                truncated=pl.Series(truncated, dtype=pl.Boolean),
                encoded_at=pl.lit(datetime.now(UTC)).cast(schemas.UTC_TIME),
            )
        )

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every

    def flush(self) -> None:
        """Stage the rows collected since the last flush as the next part file."""
        self.last = time.monotonic()
        if not self.pending:
            return
        frame = schemas.conform(
            pl.concat(self.pending), schemas.ITEM_EMBEDDINGS, table="item_embeddings"
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        number = len(list(self.folder.glob("part-*.parquet")))
        _write_atomically(frame, self.folder / f"part-{number:05d}-{uuid.uuid4().hex[:6]}.parquet")
        self.pending = []


def _parts_dir(staged: Path) -> Path:
    return staged.with_suffix(".parts")


def _part_seconds() -> float:
    value = os.environ.get("RECSYS_ENCODE_PART_SECONDS")
    try:
        return max(0.0, float(value)) if value else PART_SECONDS
    except ValueError:
        raise InputError(
            f"RECSYS_ENCODE_PART_SECONDS={value!r} is not a number of seconds"
        ) from None


def _write_atomically(frame: pl.DataFrame, target: Path) -> None:
    """Write `frame` so that a reader (or a resuming plan) sees the whole file or none."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}-{uuid.uuid4().hex[:6]}.partial")
    frame.write_parquet(partial)
    os.replace(partial, target)


def _read_staged(files, encoder: str, wanted: pl.DataFrame) -> pl.DataFrame:
    """Rows of staged `files` made by `encoder` for the (item_id, text_hash) of `wanted`,
    one per item."""
    frames = [pl.read_parquet(f) for f in sorted(files)]
    if not frames:
        return pl.DataFrame(schema=schemas.ITEM_EMBEDDINGS)
    return (
        pl.concat(frames)
        .filter(pl.col("encoder") == encoder)
        .join(wanted.select("item_id", "text_hash"), on=["item_id", "text_hash"], how="semi")
        .unique("item_id", keep="first", maintain_order=True)
    )


def _claim_staging(staging: Path) -> None:
    """Create the plan's staging folder with its owner, so other plans leave it alone."""
    claim(staging / OWNER_FILE, plan=staging.name)


def _plan_is_live(folder: Path) -> bool:
    """Whether the plan staged in `folder` may still be running (and commit its rows).

    On this host: its process is alive, and is not this one (a plan of this process that
    is not running any more failed or was stopped). On another host (workers sharing the
    data directory), only time tells: a file changed within LIVE_SECONDS.
    """
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return False  # no owner: made by an older version, or the plan never started
    if owner.get("host") == socket.gethostname():
        pid = int(owner.get("pid", 0))
        return pid != os.getpid() and process_alive(pid)
    newest = max((f.stat().st_mtime for f in folder.rglob("*") if f.is_file()), default=0.0)
    return time.time() - newest < LIVE_SECONDS


def _take_over_staged(
    root: Path, staging: Path, encoder: str, todo: pl.DataFrame
) -> tuple[tuple[str, ...], set[str]]:
    """Move the staged files of dead plans that hold rows still wanted into `staging`.

    A row is still wanted when this encoder made it from the text the item has now. Files
    are moved, not copied, so two plans never publish the same file; a dead plan's folder
    emptied that way is removed.

    Returns:
        The moved files (under `staging/resumed`) and the ids of the items they cover.
    """
    if not todo.height or not root.is_dir():
        return (), set()
    wanted = todo.select("item_id", "text_hash")
    dead = [f for f in sorted(root.iterdir()) if f.is_dir() and f != staging]
    dead = [f for f in dead if not _plan_is_live(f)]
    found: set[str] = set()
    moved: list[str] = []
    for folder in dead:
        taken = len(moved)
        for file in sorted(folder.rglob("*.parquet")):
            try:
                keys = pl.read_parquet(file, columns=["item_id", "text_hash", "encoder"])
            except Exception:  # not a staged file of ours; leave it to the stale cleanup
                continue
            useful = keys.filter(pl.col("encoder") == encoder).join(
                wanted, on=["item_id", "text_hash"], how="semi"
            )
            new = set(useful["item_id"].to_list()) - found
            if not new:
                continue
            target = staging / RESUMED / f"{len(moved):05d}-{folder.name}-{file.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(file, target)
            except OSError:  # another plan took it first
                continue
            found |= new
            moved.append(str(target))
        if len(moved) > taken and not any(folder.rglob("*.parquet")):
            shutil.rmtree(folder, ignore_errors=True)
    return tuple(moved), found


def _resumed_rows(plan: EncodePlan, lake: Lake) -> pl.DataFrame:
    """The rows of `plan.resumed_items` from the files taken over from earlier runs."""
    missing = [f for f in plan.resumed_files if not Path(f).is_file()]
    if missing:
        raise InputError(
            f"encode plan {plan.plan_id}: {len(missing)} file(s) staged by an earlier run are "
            f"gone (e.g. {missing[0]}); nothing written, run the encode again"
        )
    items = lake.read("items", ["item_id", "text_hash"], version=plan.items_version)
    wanted = items.filter(pl.col("item_id").is_in(list(plan.resumed_items)))
    rows = _read_staged(plan.resumed_files, plan.encoder, wanted)
    if rows.height != len(plan.resumed_items):
        raise InputError(
            f"encode plan {plan.plan_id}: the files taken over from earlier runs hold "
            f"{rows.height} of the {len(plan.resumed_items)} items expected; nothing written"
        )
    return rows
