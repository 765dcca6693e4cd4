"""Ingest: raw logs and catalog -> `events`, `items`, `quarantine` and `ingest_manifest`.

Events stream through in batches (memory is bounded by the batch size and a budget for
duplicate-detection keys, never by the size of the log):

    read batch (sources) -> parse + check (validation, dataframely) -> drop exact duplicates
    (same user, item, timestamp, event type: within the run and against stored events of the
    same dates) -> buffer per event date -> Parquet files -> one Delta commit per table

Idempotent: files whose content hash is in the manifest are skipped, duplicates are never
stored twice, and items are merged on `item_id` (a changed text updates the row and its
hash). The manifest is written last, so a run that fails midway is simply repeated: its
uncommitted files are invisible and removed, and what it did commit is not stored twice.

Every row read is accounted for: rows read = stored + duplicates + quarantined, per run and
per file (in the manifest).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import psutil
from deltalake import DeltaTable
from tqdm.auto import tqdm

from recsys_core import schemas
from recsys_core.data.sources import (
    FileFacts,
    FileHeader,
    InputFile,
    SourceSpec,
    file_facts,
    inspect,
    plan_source,
    read_event_batches,
    read_items,
)
from recsys_core.data.validation import check_events, check_items, latest_items, prepare_events
from recsys_core.storage import Lake
from recsys_core.storage.append import DeltaAppender

EXAMPLES = 10  # ids listed in the report for each kind of finding


@dataclass(frozen=True)
class IngestOptions:
    """How ingestion treats its input; `from_settings` reads them from `Settings`.

    Args:
        bot_events_per_day: A user with more events than this on one day is reported as
            bot-like (kept, not dropped).
        max_item_text_chars: Longer title, description or attribute values are cut and the
            item is flagged `text_truncated`.
        batch_rows: Rows read, checked and deduplicated at a time.
        key_memory_mb: Memory for duplicate-detection keys (24 bytes per event) before the
            keys of the least recently seen dates are spilled to a temporary folder.
        flush_rows: New rows buffered before they are written as Parquet files.
        progress: Show progress bars (default: when stderr is a terminal).
    """

    bot_events_per_day: int = 1000
    max_item_text_chars: int = 20_000
    batch_rows: int = 500_000
    key_memory_mb: int = 256
    flush_rows: int = 1_000_000
    progress: bool | None = None

    @classmethod
    def from_settings(cls, settings) -> IngestOptions:
        return cls(
            bot_events_per_day=settings.bot_events_per_day,
            max_item_text_chars=settings.max_item_text_chars,
        )


@dataclass
class IngestReport:
    """What one ingest run read, stored, skipped and set aside.

    Events: rows_read = events_added + duplicates + quarantined. Catalog: item_rows_read =
    items_added + items_updated + items_unchanged + item_duplicates + items_quarantined.
    """

    source: str
    files_read: int = 0
    files_skipped: int = 0  # already ingested (same content hash)
    rows_read: int = 0
    events_added: int = 0
    duplicates: int = 0
    quarantined: int = 0
    unknown_item_events: int = 0  # stored events whose item is not in the catalog
    unknown_item_examples: list[str] = field(default_factory=list)
    item_rows_read: int = 0
    items_added: int = 0
    items_updated: int = 0
    items_unchanged: int = 0
    item_duplicates: int = 0  # repeated item ids in this run (the latest row wins)
    items_quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)  # e.g. events.lossy_utf8
    unknown_columns: dict[str, list[str]] = field(default_factory=dict)  # file -> columns
    empty_files: list[str] = field(default_factory=list)
    bot_events_per_day: int = 0
    bot_users: int = 0  # users over the limit on at least one day touched by this run
    bot_user_days: list[dict] = field(default_factory=list)  # the busiest user-days
    events_total: int = 0
    users_total: int = 0
    items_total: int = 0
    accounted: bool = True  # every row read is stored, a duplicate or quarantined
    seconds: float = 0.0
    events_per_second: float = 0.0
    files: list[dict] = field(default_factory=list)  # per file: rows read/stored/...
    versions: dict[str, int | None] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _FileCount:
    file: InputFile
    content_hash: str
    rows_read: int = 0
    rows_stored: int = 0
    duplicates: int = 0
    quarantined: int = 0

    def manifest_row(self, now: datetime) -> dict:
        return {
            "source_file": self.file.label,
            "content_hash": self.content_hash,
            "kind": self.file.kind,
            "rows_read": self.rows_read,
            "rows_stored": self.rows_stored,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "ingested_at": now,
        }


def ingest(
    spec: SourceSpec, lake: Lake, *, run_id: str = "", options: IngestOptions | None = None
) -> IngestReport:
    """Read `spec` and add its new rows to the tables under `lake`.

    Args:
        spec: Where the raw data is.
        lake: The data directory.
        run_id: Stored in each commit's metadata.
        options: Limits and batch sizes (defaults: `IngestOptions()`).

    Raises:
        InputError: A file or a required column is missing (checked before any write).
    """
    options = options or IngestOptions()
    progress = sys.stderr.isatty() if options.progress is None else options.progress
    started = time.perf_counter()
    now = datetime.now(UTC)
    plan = plan_source(spec)
    layouts = {file.path: inspect(file) for file in [*plan.events, *plan.items]}
    report = IngestReport(source=spec.describe(), bot_events_per_day=options.bot_events_per_day)
    meta = {"run_id": run_id, "stage": "ingest"}

    facts = _file_facts(plan.files, progress)
    done = set(lake.read_or_empty("ingest_manifest", ["content_hash"])["content_hash"].to_list())
    fresh: set[Path] = set()
    for path in plan.files:
        if facts[path].content_hash not in done:
            fresh.add(path)
            done.add(facts[path].content_hash)  # a second copy in the same run is skipped too
    report.files_read = len(fresh)
    report.files_skipped = len(plan.files) - len(fresh)
    for file in [*plan.events, *plan.items]:
        layout = layouts[file.path]
        if file.path in fresh and layout.empty:
            report.empty_files.append(file.label)
        if file.path in fresh and layout.unknown:
            report.unknown_columns[file.label] = layout.unknown

    # a catalog is read whole when any of its files changed; the merge keeps only changes
    item_files = [f for f in plan.items if {f.path, *f.companions} & fresh]
    appender = DeltaAppender(
        lake.path("quarantine"), "quarantine",
        dictionary=["source_file", "reason", "kind", "ingested_at"],
    )  # fmt: skip
    quarantine = _NewQuarantine(
        appender,
        _stored_quarantine(lake, [f.label for f in [*plan.events, *plan.items] if f.path in fresh]),
    )
    counts: list[_FileCount] = []
    reasons: Counter[str] = Counter()
    try:
        item_counts, rejected = _ingest_items(
            item_files, layouts, facts, lake, now, options, meta, report
        )
        counts += item_counts
        for frame in rejected:
            quarantine.add(frame)
            reasons.update(frame["reason"].to_list())
        event_files = [f for f in plan.events if f.path in fresh]
        event_counts, bots = _ingest_events(
            event_files, layouts, facts, lake, now, options, meta, report, quarantine, reasons,
            progress,
        )  # fmt: skip
        counts += event_counts
        quarantine.commit({**meta, "rows": quarantine.rows_added})
    except BaseException:
        quarantine.abort()
        raise
    report.quarantine_reasons = dict(reasons.most_common())
    _report_bots(lake, bots, report)

    if counts:
        manifest = pl.DataFrame(
            [c.manifest_row(now) for c in counts], schema=schemas.INGEST_MANIFEST
        )
        lake.write("ingest_manifest", manifest, mode="append", metadata=meta)
    report.files = [
        {k: v for k, v in c.manifest_row(now).items() if k != "ingested_at"} for c in counts
    ]
    _totals(lake, report)
    report.accounted = (
        report.rows_read == report.events_added + report.duplicates + report.quarantined
        and report.item_rows_read
        == report.items_added + report.items_updated + report.items_unchanged
        + report.item_duplicates + report.items_quarantined
    )  # fmt: skip
    report.seconds = round(time.perf_counter() - started, 3)
    report.events_per_second = round(report.rows_read / max(report.seconds, 1e-9), 1)
    report.versions = {t: lake.version(t) for t in ("events", "items", "quarantine")}
    return report


def _file_facts(paths: Sequence[Path], progress: bool) -> dict[Path, FileFacts]:
    sizes = sum(p.stat().st_size for p in paths)
    out = {}
    with tqdm(total=sizes, unit="B", unit_scale=True, desc="hash", disable=not progress) as bar:
        for path in paths:
            out[path] = file_facts(path)
            bar.update(path.stat().st_size)
    return out


# -- catalog ---------------------------------------------------------------------------------
def _ingest_items(
    files: list[InputFile],
    layouts: dict[Path, FileHeader],
    facts: dict[Path, FileFacts],
    lake: Lake,
    now: datetime,
    options: IngestOptions,
    meta: dict,
    report: IngestReport,
) -> tuple[list[_FileCount], list[pl.DataFrame]]:
    counts, companions, rows, rejected = [], [], [], []
    flags: Counter[str] = Counter()
    for index, file in enumerate(files):
        raw = read_items(file, layouts[file.path])
        checked = check_items(raw, file, now, options.max_item_text_chars)
        digest = facts[file.path].content_hash
        counts.append(_FileCount(file, digest, raw.height, quarantined=checked.quarantine.height))
        # a companion (MovieLens tags.csv) is remembered too, so an unchanged one is skipped
        companions += [
            _FileCount(replace(file, path=path), facts[path].content_hash)
            for path in file.companions
        ]
        rows.append(checked.valid.with_columns(pl.lit(index).alias("file_index")))
        rejected.append(checked.quarantine)
        flags.update(checked.flags)
        report.item_rows_read += raw.height
        report.items_quarantined += checked.quarantine.height
    for name, count in flags.items():
        report.flags[f"items.{name}"] = count
    if not rows:
        return counts + companions, rejected
    candidates = pl.concat(rows)
    latest = latest_items(candidates)
    report.item_duplicates = candidates.height - latest.height
    stored = _merge_items(lake, latest, meta)
    report.items_added = int(stored["added"].sum())
    report.items_updated = stored.height - report.items_added
    report.items_unchanged = latest.height - stored.height
    per_file = latest.join(stored.select("item_id"), on="item_id", how="semi")["file_index"]
    written = Counter(per_file.to_list())
    valid_per_file = Counter(candidates["file_index"].to_list())
    for index, count in enumerate(counts):
        count.rows_stored = written.get(index, 0)
        count.duplicates = valid_per_file.get(index, 0) - count.rows_stored
    return counts + companions, rejected


def _merge_items(lake: Lake, items: pl.DataFrame, meta: dict) -> pl.DataFrame:
    """Upsert catalog rows on item_id; only new rows and rows whose text changed are written.

    Returns the written ids with `added` (True for new items, False for changed ones).
    """
    rows = schemas.conform(items, schemas.ITEMS, table="items")
    if not lake.exists("items"):
        lake.write("items", rows, mode="overwrite", metadata={**meta, "rows": rows.height})
        return rows.select("item_id", pl.lit(True).alias("added"))
    stored = lake.read("items", ["item_id", "text_hash", "quality"])
    joined = rows.join(stored, on="item_id", how="left", suffix="_stored")
    changed = joined.filter(
        pl.col("text_hash_stored").is_null()
        | (pl.col("text_hash") != pl.col("text_hash_stored"))
        | pl.col("quality").ne_missing(pl.col("quality_stored"))
    )
    if changed.is_empty():
        return pl.DataFrame(schema={"item_id": pl.String, "added": pl.Boolean})
    upsert = changed.select(schemas.ITEMS.names())
    lake.upsert("items", upsert, keys=["item_id"], metadata={**meta, "rows": upsert.height})
    return changed.select("item_id", pl.col("text_hash_stored").is_null().alias("added"))


# -- events ----------------------------------------------------------------------------------
SPILL_PREFIX = "recsys-ingest-keys-"


@contextmanager
def _spill_folder() -> Iterator[Path]:
    """A temporary folder for spilled keys, named after this process.

    Folders left behind by ingests that were killed (their process is gone) are removed first,
    so repeated kills do not pile up folders in the temporary directory.
    """
    for old in Path(tempfile.gettempdir()).glob(f"{SPILL_PREFIX}*-*"):
        pid = old.name.removeprefix(SPILL_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{SPILL_PREFIX}{os.getpid()}-") as path:
        yield Path(path)


def _ingest_events(
    files: list[InputFile],
    layouts: dict[Path, FileHeader],
    facts: dict[Path, FileFacts],
    lake: Lake,
    now: datetime,
    options: IngestOptions,
    meta: dict,
    report: IngestReport,
    quarantine: _NewQuarantine,
    reasons: Counter[str],
    progress: bool,
) -> tuple[list[_FileCount], pl.DataFrame]:
    """Stream event files into one `events` commit.

    Returns per-file counts and the bot-like (user hash, date, events) rows found.
    """
    events = DeltaAppender(
        lake.path("events"), "events", partition_by=["event_date"], flush_rows=options.flush_rows,
        dictionary=["event_type", "source", "ingested_at", "quality"],
        no_statistics=["user_id", "item_id", "event_type", "source", "quality"],
    )  # fmt: skip
    counts = []
    bar = tqdm(unit=" rows", unit_scale=True, desc="events", disable=not progress)
    with _spill_folder() as spill, bar:
        budget = options.key_memory_mb * (1 << 20) // SeenKeys.BYTES_PER_KEY
        stream = _EventStream(
            seen=SeenKeys(lake, spill, budget_rows=budget),
            events=events,
            quarantine=quarantine,
            catalog=lake.read_or_empty("items", ["item_id"])
            .select(SeenKeys.item_hash(pl.col("item_id")))
            .to_series()
            .implode(),
            reasons=reasons,
            report=report,
        )
        try:
            for file in files:
                fact = facts[file.path]
                count = _FileCount(file, fact.content_hash)
                layout = layouts[file.path]
                prepare = partial(
                    _prepare_with_keys, trim=fact.has_blanks is not False,
                    check_utf8=not fact.valid_utf8,
                )  # fmt: skip
                batches = read_event_batches(
                    file, layout, options.batch_rows, prepare, valid_utf8=bool(fact.valid_utf8)
                )
                for batch in batches:
                    stream.take(batch, file, layout, now, count)
                    bar.update(batch.height)
                counts.append(count)
            events.flush()  # the last files are written while the keys are summarized
            bots, users = stream.seen.summarize(options.bot_events_per_day)
            events.commit({**meta, "rows": events.rows_added})
            if lake.exists("events") and stream.seen.covers(_rows_per_date(lake)):
                report.users_total = users  # every stored event's user was among the keys
        except BaseException:
            events.abort()
            raise
    for count in counts:
        report.rows_read += count.rows_read
        report.events_added += count.rows_stored
        report.duplicates += count.duplicates
        report.quarantined += count.quarantined
    if stream.lossy:
        report.flags["events.lossy_utf8"] = stream.lossy
    report.unknown_item_examples = list(stream.unknown_items)[:EXAMPLES]
    return counts, bots


def _prepare_with_keys(frame: pl.LazyFrame, **options) -> pl.LazyFrame:
    """Parsing plus the duplicate-detection hashes, all computed while polars reads."""
    ids, key = SeenKeys.hash_columns(prefix="_")
    return prepare_events(frame, **options).with_columns(*ids).with_columns(*key)


QUARANTINE_KEY = ["source_file", "row_number", "raw"]


def _stored_quarantine(lake: Lake, labels: list[str]) -> pl.DataFrame:
    """Quarantine keys already stored for these files (from a run that died before its
    manifest was written: the files are read again, their bad rows must not be doubled)."""
    empty = pl.DataFrame(schema={k: schemas.QUARANTINE[k] for k in QUARANTINE_KEY})
    if not labels or not lake.exists("quarantine"):
        return empty
    return (
        lake.scan("quarantine")
        .filter(pl.col("source_file").is_in(labels))
        .select(QUARANTINE_KEY)
        .unique()
        .collect()
    )


class _NewQuarantine:
    """A quarantine appender that skips rows already stored by an earlier, interrupted run."""

    def __init__(self, appender: DeltaAppender, stored: pl.DataFrame):
        self.appender = appender
        self.stored = stored

    @property
    def rows_added(self) -> int:
        return self.appender.rows_added

    def add(self, frame: pl.DataFrame) -> None:
        if self.stored.height:
            frame = frame.join(self.stored, on=QUARANTINE_KEY, how="anti", nulls_equal=True)
        if frame.height:
            self.appender.add(frame)

    def commit(self, metadata: dict) -> int | None:
        return self.appender.commit(metadata)

    def abort(self) -> None:
        self.appender.abort()


@dataclass
class _EventStream:
    """Where each checked batch goes; a batch's frames are freed when `take` returns."""

    seen: SeenKeys
    events: DeltaAppender
    quarantine: _NewQuarantine
    catalog: pl.Series  # hashes of the catalog's item ids (see `SeenKeys`), for `is_in`
    reasons: Counter[str]
    report: IngestReport
    unknown_items: dict[str, None] = field(default_factory=dict)
    lossy: int = 0

    def take(
        self,
        batch: pl.DataFrame,
        file: InputFile,
        layout: FileHeader,
        now: datetime,
        count: _FileCount,
    ) -> None:
        checked = check_events(batch, file, layout, now, passthrough=("_h", "_u", "_i"))
        new, parts = self.seen.keep_new(checked.valid)
        self.events.add_parts(parts)
        if checked.quarantine.height:
            self.quarantine.add(checked.quarantine)
            self.reasons.update(checked.quarantine["reason"].to_list())
        self.lossy += checked.flags.get("lossy_utf8", 0)
        # by the item hash computed while reading (no string hashing here); a collision with
        # a catalog id (about 1 in 10^19 per pair) would only leave one event uncounted
        missing = ~new["_i"].is_in(self.catalog)
        unknown = int(missing.sum())
        self.report.unknown_item_events += unknown
        if unknown and len(self.unknown_items) < EXAMPLES:
            examples = new["item_id"].filter(missing).head(EXAMPLES)
            self.unknown_items.update(dict.fromkeys(examples))
        count.rows_read += batch.height
        count.rows_stored += new.height
        count.duplicates += checked.valid.height - new.height
        count.quarantined += checked.quarantine.height


class SeenKeys:
    """Keys of the events already stored or kept in this run, to drop exact duplicates.

    A key is the exact timestamp (microseconds) plus a 64-bit hash of (user, item, event
    type); two different events collide only if they share the microsecond and the hash
    (about 1 in 10^19 per such pair). A hash of the user rides along to count events per
    user and day. Keys are held per event date: the stored keys of a date are loaded the
    first time a batch touches it (only the dates a run touches are read), and beyond
    `budget_rows` keys the least recently touched dates are spilled to `spill_dir`.

    Args:
        lake: The data directory (its `events` table holds the stored keys).
        spill_dir: A temporary folder for spilled keys.
        budget_rows: Keys kept in memory before spilling.
    """

    SEED = 0x5EED
    BYTES_PER_KEY = 24  # _ts (i64), _h (u64), _u (u64)
    LOAD_ROWS = 2_000_000  # stored events read at a time when their keys are loaded

    def __init__(self, lake: Lake, spill_dir: Path, budget_rows: int) -> None:
        self.lake = lake
        self.spill_dir = spill_dir
        self.budget_rows = budget_rows
        self._keys: dict[date, list[pl.DataFrame]] = {}
        self._rows: dict[date, int] = {}
        self._spilled: dict[date, list[Path]] = {}
        self._loaded: set[date] = set()
        self._last_used: dict[date, int] = {}
        self._batch = 0
        # stored rows per date before this run (from the Delta log), to load keys in groups
        self._stored = _rows_per_date(lake) if lake.exists("events") else {}

    @classmethod
    def hash_columns(cls, prefix: str = "") -> list[list[pl.Expr]]:
        """Two steps of columns from the columns named with `prefix` (ingestion computes
        them while reading, from the parsed `_` columns): `_u` (user) and `_i` (item), then
        `_h` (user, item, event type) from those two, so each id is hashed once."""
        return [
            [
                cls.user_hash(pl.col(f"{prefix}user_id")).alias("_u"),
                cls.item_hash(pl.col(f"{prefix}item_id")).alias("_i"),
            ],
            [pl.struct("_u", "_i", pl.col(f"{prefix}event_type")).hash(cls.SEED).alias("_h")],
        ]

    @classmethod
    def user_hash(cls, user_id: pl.Expr) -> pl.Expr:
        return user_id.hash(cls.SEED)

    @classmethod
    def item_hash(cls, item_id: pl.Expr) -> pl.Expr:
        return item_id.hash(cls.SEED)

    def keep_new(
        self, events: pl.DataFrame
    ) -> tuple[pl.DataFrame, dict[tuple[date], pl.DataFrame]]:
        """The rows of `events` (with `event_date`, `_h` and `_u`) not seen before, first
        occurrences only, in their order, and the same rows split by event date; their keys
        are remembered."""
        if events.is_empty():
            return events, {}
        self._batch += 1
        keys = pl.DataFrame([events["timestamp"].to_physical().alias("_ts"), events["_h"]])
        hints = _hints(keys)
        dates = _distinct_dates(events["event_date"])
        self._prepare(dates)
        dropped = _repeats(keys, hints)
        known_dates = [d for d in dates if self._keys.get(d)]
        if known_dates:
            known = pl.concat([f for d in known_dates for f in self._keys[d]], rechunk=False)
            # only rows of those dates can repeat a known key (in a time-ordered log, the
            # rows of the date the previous batch ended in)
            rows = None
            if len(known_dates) < len(dates):
                rows = events["event_date"].is_in(pl.Series(known_dates).implode()).arg_true()
            seen = _seen_before(keys, hints, known, rows)
            dropped = seen if dropped is None else dropped | seen
        if dropped is not None:
            events = events.filter(pl.Series(~dropped))
        parts = split_by_date(events)
        for (day,), part in parts.items():
            timestamps = part["timestamp"].to_physical().alias("_ts")
            self._remember(day, pl.DataFrame([timestamps, part["_h"], part["_u"]]))
        self._spill_if_needed(set(dates))
        # `_h`, `_u` and `_i` stay: dropping them costs a pass; the table's schema leaves them
        return events, parts

    def summarize(self, limit: int) -> tuple[pl.DataFrame, int]:
        """(_u, event_date, events) for each user with more than `limit` events on a date
        this run touched (stored events included), and the number of distinct user hashes
        among the keys held. Only user hashes are read (8 bytes a key), one date at a time
        for the first, then counted by one streaming query."""
        found = [_no_busy()]
        users = []
        for day in sorted({*self._keys, *self._spilled}):
            spilled = [pl.read_ipc(path, columns=["_u"]) for path in self._spilled.get(day, [])]
            frames = [*self._keys.get(day, []), *spilled]
            users.append(pl.concat([frame["_u"] for frame in frames], rechunk=False))
            found.append(_busy(users[-1], day, limit))
        if not users:
            return pl.concat(found), 0
        held = pl.DataFrame([pl.concat(users, rechunk=False)]).lazy()
        distinct = held.select(pl.col("_u").n_unique()).collect(engine="streaming").item()
        return pl.concat(found), int(distinct)

    def covers(self, dates: Iterable[date]) -> bool:
        """Whether the keys held include every event of `dates` (loaded or added here)."""
        return set(dates) <= {*self._loaded, *self._keys, *self._spilled}

    def _prepare(self, dates: Iterable[date]) -> None:
        """Make the keys of `dates` present in memory: reload spilled ones, load stored ones."""
        to_load = []
        for day in dates:
            self._last_used[day] = self._batch
            for path in self._spilled.pop(day, []):
                self._remember(day, pl.read_ipc(path))
                path.unlink()
            if day not in self._loaded:
                self._loaded.add(day)
                to_load.append(day)
        to_load = [day for day in to_load if day in self._stored]
        group: list[date] = []
        for day in [*to_load, None]:  # a few million stored rows per read, then only keys
            if day is not None:
                group.append(day)
            rows = sum(self._stored[d] for d in group)
            if group and (rows >= self.LOAD_ROWS or day is None):
                self._load(group)
                group = []

    def _load(self, dates: list[date]) -> None:
        ids, key = self.hash_columns()
        stored = (
            self.lake.scan("events")
            .filter(pl.col("event_date").is_in(dates))
            .with_columns(*ids)
            .select("event_date", pl.col("timestamp").cast(pl.Int64).alias("_ts"), *key, "_u")
            .collect(engine="streaming")
        )
        for (day,), part in stored.partition_by("event_date", as_dict=True).items():
            self._remember(day, part.drop("event_date"))

    def _remember(self, day: date, keys: pl.DataFrame) -> None:
        self._keys.setdefault(day, []).append(keys)
        self._rows[day] = self._rows.get(day, 0) + keys.height

    def _spill_if_needed(self, in_use: set[date]) -> None:
        total = sum(self._rows.values())
        if total <= self.budget_rows:
            return
        for day in sorted(self._keys, key=lambda d: self._last_used.get(d, 0)):
            if total <= self.budget_rows // 2:
                break
            if day in in_use:
                continue
            # Arrow IPC: hashes do not compress, and it is written and read back at disk speed
            path = self.spill_dir / f"{day.isoformat()}-{len(self._spilled.get(day, []))}.arrow"
            pl.concat(self._keys.pop(day)).write_ipc(path)
            self._spilled.setdefault(day, []).append(path)
            total -= self._rows.pop(day)


def _busy(users: pl.Series, day: date, limit: int) -> pl.DataFrame:
    """(_u, event_date, events) for the user hashes with over `limit` events on `day`.

    Users are first counted into hash buckets (about one per event, so the counts stay in
    cache): a user over the limit fills its bucket over the limit, so only the events of
    such buckets (usually none) are counted exactly.
    """
    if len(users) <= limit:
        return _no_busy()
    buckets = _buckets(users, per_row=1)  # a chance bucket never reaches a useful limit
    full = np.flatnonzero(np.bincount(buckets) > limit)
    if not len(full):
        return _no_busy()
    suspects = users.filter(pl.Series(np.isin(buckets, full)))
    counts = suspects.value_counts(name="events").filter(pl.col("events") > limit)
    return counts.select(
        pl.col("_u"), pl.lit(day).alias("event_date"), pl.col("events").cast(pl.UInt32)
    )


def _no_busy() -> pl.DataFrame:
    return pl.DataFrame(schema={"_u": pl.UInt64, "event_date": pl.Date, "events": pl.UInt32})


_MIX = 0x9E3779B97F4A7C15  # an odd constant that spreads timestamps over 64 bits


def _hints(keys: pl.DataFrame) -> pl.Series:
    """One 64-bit mix of each exact key (_ts, _h): cheap to compare, but only a hint."""
    timestamps = keys["_ts"].to_numpy().view(np.uint64)
    return pl.Series("_hint", keys["_h"].to_numpy() ^ (timestamps * np.uint64(_MIX)))


def _distinct_dates(dates: pl.Series) -> list[date]:
    if dates.is_sorted():  # a time-ordered log: the runs of one date, without hashing
        return dates.rle().struct.field("value").to_list()
    return dates.unique().to_list()


def _repeats(keys: pl.DataFrame, hints: pl.Series) -> np.ndarray | None:
    """True for each row whose exact (_ts, _h) key occurred earlier in the batch; None when
    no key repeats.

    Counting the hints into buckets (numpy's bincount, far cheaper than a hash table or a
    sort over the batch) finds the rows that may repeat: those sharing a bucket. Among
    them, those whose hint repeats are compared exactly, so a bucket or hint collision
    never drops an event.
    """
    buckets = _buckets(hints, per_row=4)  # about 1 row in 5 shares a bucket by chance
    shared = np.flatnonzero((np.bincount(buckets) > 1)[buckets])  # gathers bytes, not counts
    if not len(shared):
        return None
    where = pl.Series(shared, dtype=pl.UInt32)
    where = where.filter(hints.gather(where).is_duplicated())
    if where.is_empty():
        return None
    candidates = keys.select("_ts", "_h")[where]
    later = ~candidates.select(pl.struct("_ts", "_h").is_first_distinct()).to_series()
    if not later.any():
        return None
    mask = np.zeros(keys.height, dtype=bool)
    mask[where.filter(later).to_numpy()] = True
    return mask


def _buckets(hashes: pl.Series, per_row: int) -> np.ndarray:
    """Bucket numbers from the low bits of 64-bit hashes, about `per_row` buckets per hash
    (a power of two; at most 2^24, so a bincount stays within 128 MB)."""
    bits = max(10, min(24, (len(hashes) * per_row).bit_length()))
    return (hashes.to_numpy() & np.uint64((1 << bits) - 1)).astype(np.intp)


def _seen_before(
    keys: pl.DataFrame, hints: pl.Series, known: pl.DataFrame, rows: pl.Series | None = None
) -> np.ndarray:
    """True for each row whose exact key is in `known` (keys of earlier rows and stored
    events of the same dates); only `rows` (indices) are looked at when given.

    The smaller side's hints are the hash set and the other side probes it (so a large
    `known`, as an out-of-order log builds up, costs a scan rather than a hash table per
    batch); the few matches are then confirmed exactly.
    """
    mask = np.zeros(keys.height, dtype=bool)
    probe = hints if rows is None else hints.gather(rows)
    known_hints = _hints(known)
    if len(known_hints) < len(probe):
        where = probe.is_in(known_hints.implode()).arg_true()
    else:
        matched = known_hints.filter(known_hints.is_in(probe.implode()))
        if matched.is_empty():
            return mask
        where = probe.is_in(matched.implode()).arg_true()
    if rows is not None:
        where = rows.gather(where)
    if where.is_empty():
        return mask
    candidates = keys.select("_ts", "_h")[where].with_columns(where.alias("_row"))
    found = known.join(candidates.select("_ts", "_h"), on=["_ts", "_h"], how="semi")
    hits = candidates.join(found.unique(), on=["_ts", "_h"], how="semi")["_row"]
    mask[hits.to_numpy()] = True
    return mask


def split_by_date(frame: pl.DataFrame) -> dict[tuple[date], pl.DataFrame]:
    """{(event_date,): rows} in row order; time-ordered logs are cut into zero-copy slices."""
    dates = frame["event_date"]
    if not dates.is_sorted():
        return frame.partition_by("event_date", as_dict=True, maintain_order=True)
    parts, offset = {}, 0
    for run in dates.rle().to_list():
        parts[(run["value"],)] = frame.slice(offset, run["len"])
        offset += run["len"]
    return parts


# -- findings over the stored table ----------------------------------------------------------
def _report_bots(lake: Lake, busy: pl.DataFrame, report: IngestReport) -> None:
    """Name the users behind the busy (user hash, date) pairs, reading only those dates."""
    if busy.is_empty():
        return
    users = (
        lake.scan("events")
        .filter(pl.col("event_date").is_in(busy["event_date"].unique().implode()))
        .select(pl.col("user_id").unique())
        .with_columns(SeenKeys.user_hash(pl.col("user_id")).alias("_u"))
        .collect()
    )
    found = busy.join(users, on="_u").sort(
        ["events", "user_id", "event_date"], descending=[True, False, False]
    )
    report.bot_users = found["user_id"].n_unique()
    report.bot_user_days = [
        {"user_id": r["user_id"], "date": r["event_date"].isoformat(), "events": r["events"]}
        for r in found.head(EXAMPLES).iter_rows(named=True)
    ]


def _rows_per_date(lake: Lake) -> dict[date, int]:
    """Rows per event date from the Delta log's file statistics (no data is read)."""
    actions = pl.DataFrame(DeltaTable(str(lake.path("events"))).get_add_actions(flatten=True))
    if actions.is_empty():
        return {}
    if actions["num_records"].null_count():  # a file without statistics: count its rows
        counted = lake.scan("events").group_by("event_date").len().collect()
        return dict(counted.iter_rows())
    per_date = actions.group_by("partition.event_date").agg(pl.col("num_records").sum())
    return {d: int(n) for d, n in per_date.iter_rows()}


def _totals(lake: Lake, report: IngestReport) -> None:
    if lake.exists("events"):
        report.events_total = sum(_rows_per_date(lake).values())
        if not report.users_total:  # this run did not see every date: count the table
            users = lake.scan("events").select(pl.col("user_id").n_unique())
            report.users_total = int(users.collect(engine="streaming").item())
    report.items_total = lake.read_or_empty("items", ["item_id"]).height
