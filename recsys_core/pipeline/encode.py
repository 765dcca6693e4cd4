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

The three steps are the sharded-stage contract (`pipeline.sharded`): `ENCODE` runs them in
this process (`encode_items`), and the Prefect flows map step 2 over shards on their task
runner. Staging folders and their owners live in `storage.staging`.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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
from recsys_core.pipeline.sharded import ShardedStage, results_in_plan_order
from recsys_core.progress import track
from recsys_core.storage import Lake
from recsys_core.storage.staging import Staging, read_parts, write_atomically, write_part

STAGE = "encode"  # its staging area: `Lake.staging(STAGE)`, one folder per plan
# figures of the report that the commit records too, so a run elsewhere (the encode
# deployment) reports them from the table's log
COMMITTED_FIGURES = ("items_total", "reused", "truncated", "empty_text", "seconds",
                     "items_per_second")  # fmt: skip


@dataclass
class EncodeReport:
    """What one encode run did (the JSON of `recsys encode`, the nightly summary's `encode`).

    Attributes:
        encoder: The encoder id of the vectors; a label of the deployment run when the
            encode ran elsewhere and committed nothing.
        items_total: Items in the catalog.
        encoded: Rows committed by this run.
        reused: Items whose vector from this encoder was already stored.
        truncated: Texts cut at the encoder's max length.
        empty_text: Items with no text.
        seconds: Encoding time summed over shards.
        items_per_second: Per worker: items encoded by this run / seconds.
        shards: Shards the run was cut into.
        version: `item_embeddings` version after the run.
        resumed: Of `encoded`: rows staged by earlier runs that never committed.
    """

    encoder: str
    items_total: int = 0
    encoded: int = 0
    reused: int = 0
    truncated: int = 0
    empty_text: int = 0
    seconds: float = 0.0
    items_per_second: float = 0.0
    shards: int = 0
    version: int | None = None
    resumed: int = 0

    @classmethod
    def from_commit(cls, entry: Mapping[str, object]) -> EncodeReport:
        """The report of the run that made the `item_embeddings` commit `entry` (one entry
        of `Lake.history`).

        Args:
            entry: Commit metadata written by `commit_encode`.
        """
        figures = {
            k: float(entry[k]) if k in ("seconds", "items_per_second") else int(entry[k])
            for k in COMMITTED_FIGURES
            if k in entry
        }
        return cls(
            encoder=str(entry.get("encoder", "")), encoded=int(entry.get("rows", 0)),
            shards=int(entry.get("shards", 0)), resumed=int(entry.get("resumed", 0)),
            version=int(entry["version"]), **figures,
        )  # fmt: skip


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
        staging_dir: Where the shards stage their rows (this plan's folder).
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
    """One encoded shard: its staged file and counts for the run's report."""

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
    area = lake.staging(STAGE)
    staging = area.plan_dir(plan_id)
    area.remove_stale()
    if todo.height:
        area.claim(plan_id)
    resumed_files, resumed_ids = _take_over_staged(area, staging, identity, todo)
    area.remove_empty_dead(staging)
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
    parts = _PartWriter(_parts_dir(target), shard.encoder, settings.encode.encode_part_seconds)
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
    write_atomically(staged.sort("item_id"), target)
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
        MissingShards: A shard of the plan returned no result; nothing is written.
        InputError: A shard staged other rows than it was given, or a file taken over from
            an earlier run is gone; nothing is written then.
        Stopped: A stop was requested before the commit; nothing is written.
    """
    lake = context.lake
    report = EncodeReport(
        encoder=plan.encoder, items_total=plan.items_total, reused=plan.reused,
        shards=len(plan.shards),
    )  # fmt: skip
    ordered = results_in_plan_order(STAGE, plan, results)
    if not plan.shards and not plan.resumed_items:
        report.version = lake.version("item_embeddings")
        return report
    frames = [_resumed_rows(plan, lake)] if plan.resumed_items else []
    for shard, result in zip(plan.shards, ordered, strict=True):
        staged = Path(result.staged)
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
    report.encoded = rows.height
    report.resumed = plan.resumed
    report.truncated = int(rows["truncated"].sum())
    report.empty_text = sum(r.empty_text for r in ordered)
    report.seconds = round(sum(r.seconds for r in ordered), 3)
    fresh = rows.height - plan.resumed
    report.items_per_second = round(fresh / report.seconds, 1) if report.seconds else 0.0
    raise_if_stopped()  # the last moment to stop with nothing written
    report.version = lake.upsert(
        "item_embeddings",
        rows,
        keys=["item_id", "encoder"],
        metadata={
            "run_id": context.run_id, "stage": STAGE, "encoder": plan.encoder,
            "rows": rows.height, "shards": len(plan.shards), "plan": plan.plan_id,
            "resumed": plan.resumed,
            **{name: getattr(report, name) for name in COMMITTED_FIGURES},
        },
    )  # fmt: skip
    shutil.rmtree(plan.staging_dir, ignore_errors=True)
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
    if shards is not None:
        context = context.with_settings(encode_shards=shards)
    return ENCODE.run_here(context, progress=progress)


class EncodeStage(ShardedStage[EncodePlan, EncodeShard, EncodeShardResult, EncodeReport]):
    """The encode stage in the sharded-stage contract (`plan_encode`, `encode_shard`,
    `commit_encode`)."""

    name, shard_name, commit_name = STAGE, "encode-shard", "commit-encode"
    wants_gpu = True

    def plan(self, context: RunContext) -> EncodePlan:
        return plan_encode(context)

    def run(
        self, context: RunContext, plan: EncodePlan, shard: EncodeShard, *, progress: bool = False
    ) -> EncodeShardResult:
        # a shard carries all it needs, so a worker is given no more than its shard's items
        return encode_shard(context, shard, progress=progress)

    def commit(
        self, context: RunContext, plan: EncodePlan, results: Sequence[EncodeShardResult]
    ) -> EncodeReport:
        return commit_encode(context, plan, results)

    def plan_line(self, plan: EncodePlan) -> str:
        return (
            f"{plan.items_total - plan.reused - plan.resumed} of {plan.items_total} items to "
            f"encode with {plan.encoder} in {len(plan.shards)} shard(s); {plan.resumed} more "
            "staged by an earlier run that did not commit"
        )

    def result_line(self, result: EncodeShardResult) -> str:
        return (
            f"shard {result.index}: {result.rows} items on {result.device} in "
            f"{result.seconds:.1f}s ({result.truncated} truncated)"
        )

    def report_line(self, report: EncodeReport) -> str:
        return (
            f"encoded {report.encoded} items with {report.encoder} ({report.reused} reused, "
            f"{report.resumed} from an earlier run, {report.truncated} truncated) at "
            f"{report.items_per_second:.1f} items/s per shard"
        )


ENCODE = EncodeStage()


def report_of_run(lake: Lake, run_id: str, *, label: str) -> EncodeReport:
    """The report of a finished encode run that ran elsewhere (the encode deployment), read
    back from the `item_embeddings` commit it made.

    A run that found every item encoded already commits nothing: its report counts every
    item as reused.

    Args:
        lake: The data directory the run wrote to.
        run_id: The run's id (recorded in its commit).
        label: Names the run in the report when it committed nothing (no encoder id then).
    """
    if lake.exists("item_embeddings"):
        latest = lake.history("item_embeddings")[0]
        if latest.get("run_id") == run_id and latest.get("stage") == STAGE:
            return EncodeReport.from_commit(latest)
    items = lake.scan("items").select(pl.len()).collect().item() if lake.exists("items") else 0
    return EncodeReport(
        encoder=label, items_total=items, reused=items, version=lake.version("item_embeddings")
    )


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


# -- staged parts, and taking over what dead runs staged ------------------------------------
class _PartWriter:
    """Collects a shard's rows and stages them as numbered part files.

    Args:
        folder: The shard's parts folder (created on the first flush).
        encoder: The encoder id every row carries.
        every: Seconds of encoding between part files (the `encode_part_seconds` setting):
            what a killed run loses is at most this much work per shard.
    """

    def __init__(self, folder: Path, encoder: str, every: float):
        self.folder, self.encoder, self.every = folder, encoder, every
        self.pending: list[pl.DataFrame] = []
        self.last = time.monotonic()

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
        write_part(frame, self.folder)
        self.pending = []


def _parts_dir(staged: Path) -> Path:
    return staged.with_suffix(".parts")


def _read_staged(files: Iterable[str | Path], encoder: str, wanted: pl.DataFrame) -> pl.DataFrame:
    """Rows of staged `files` made by `encoder` for the (item_id, text_hash) of `wanted`,
    one per item."""
    frames = read_parts(files)
    if not frames:
        return pl.DataFrame(schema=schemas.ITEM_EMBEDDINGS)
    return (
        pl.concat(frames)
        .filter(pl.col("encoder") == encoder)
        .join(wanted.select("item_id", "text_hash"), on=["item_id", "text_hash"], how="semi")
        .unique("item_id", keep="first", maintain_order=True)
    )


def _take_over_staged(
    area: Staging, staging: Path, encoder: str, todo: pl.DataFrame
) -> tuple[tuple[str, ...], set[str]]:
    """Move the staged files of dead plans that hold rows still wanted into `staging`.

    A row is still wanted when this encoder made it from the text the item has now.

    Returns:
        The moved files (under `staging/resumed`) and the ids of the items they cover.
    """
    if not todo.height:
        return (), set()
    wanted = todo.select("item_id", "text_hash")

    def wanted_in(file: Path) -> set[str]:
        try:
            keys = pl.read_parquet(file, columns=["item_id", "text_hash", "encoder"])
        except Exception:  # not a staged file of ours; leave it to the stale cleanup
            return set()
        useful = keys.filter(pl.col("encoder") == encoder).join(
            wanted, on=["item_id", "text_hash"], how="semi"
        )
        return set(useful["item_id"].to_list())

    return area.take_over(staging, wanted_in)


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
