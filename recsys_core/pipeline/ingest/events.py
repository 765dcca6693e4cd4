"""The events part of a run: stream event files through parse, check and dedupe into the
files of one `events` commit (made by the run, once everything is read), counting each
file's rows and the events whose item is not in the catalog."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import partial
from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from recsys_core.data.sources import FileHeader, InputFile, read_event_batches
from recsys_core.data.validation import check_events, epoch_unit, prepare_events
from recsys_core.pipeline.ingest.dedupe import SeenKeys, spill_folder
from recsys_core.pipeline.ingest.findings import busy_user_days
from recsys_core.pipeline.ingest.keys import item_hash, key_columns
from recsys_core.pipeline.ingest.report import EXAMPLES, FileCount
from recsys_core.pipeline.ingest.state import IngestRun
from recsys_core.storage.append import DeltaAppender


@dataclass
class StagedEvents:
    """Events read and written as files of the `events` table, not yet committed.

    Args:
        counts: Rows of each file read, stored, duplicate and quarantined.
        bots: The bot-like (user hash, date, events) rows found.
        users: Distinct users among the keys held (stored events of the dates touched, and
            the new ones).
        dates: The dates whose keys were held.
        appender: Commits the files (`commit`) or deletes them (`abort`).
    """

    counts: list[FileCount]
    bots: pl.DataFrame
    users: int
    dates: set[date]
    appender: DeltaAppender

    def commit(self, run: IngestRun) -> int | None:
        """Commit the staged files as one version of `events`; None when none were added."""
        version = self.appender.commit({**run.meta, "rows": self.appender.rows_added})
        lake = run.lake
        if lake.exists("events") and set(lake.rows_per_partition("events", "event_date")) <= (
            self.dates
        ):
            run.report.users_total = self.users  # every stored event's user was among the keys
        return version


def ingest_events(run: IngestRun, files: list[InputFile], catalog: pl.Series) -> StagedEvents:
    """Stream event files into the files of one `events` commit (see `StagedEvents`).

    Args:
        run: The run.
        files: The event files to read.
        catalog: The item ids the catalog will hold after the run (stored and new), to
            count the events whose item it lacks.
    """
    lake, limits, report = run.lake, run.limits, run.report
    events = DeltaAppender(
        lake.path("events"), "events", partition_by=["event_date"],
        flush_rows=limits.ingest_flush_rows,
        dictionary=["event_type", "source", "ingested_at", "quality"],
        no_statistics=["user_id", "item_id", "event_type", "source", "quality"],
    )  # fmt: skip
    counts = []
    bar = tqdm(unit=" rows", unit_scale=True, desc="events", disable=not run.progress)
    with spill_folder() as spill, bar:
        budget = limits.dedupe_key_memory_mb * (1 << 20) // SeenKeys.BYTES_PER_KEY
        stream = _EventStream(
            run=run,
            seen=SeenKeys(lake, spill, budget_rows=budget),
            events=events,
            catalog=catalog.to_frame("item_id")
            .select(item_hash(pl.col("item_id")))
            .to_series()
            .implode(),
        )
        try:
            for file in files:
                fact = run.facts[file.path]
                count = FileCount(file, fact.content_hash)
                header = run.headers[file.path]
                prepare = partial(
                    _prepare_with_keys, trim=fact.has_blanks is not False,
                    check_utf8=not fact.valid_utf8,
                )  # fmt: skip
                batches = read_event_batches(
                    file, header, limits.ingest_batch_rows, prepare,
                    valid_utf8=bool(fact.valid_utf8),
                )  # fmt: skip
                for batch in batches:
                    stream.take(batch, file, header, count)
                    bar.update(batch.height)
                counts.append(count)
            events.flush()  # the last files are written while the keys are summarized
            bots, users = busy_user_days(stream.seen, limits.bot_events_per_day)
            events.flush()  # waits for the files: a failed write fails here, before any commit
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
    for path, unit in stream.units.items():
        if unit != "s":
            report.timestamp_units[str(path)] = unit
    return StagedEvents(counts, bots, users, stream.seen.dates_held(), events)


def _prepare_with_keys(frame: pl.LazyFrame, **options) -> pl.LazyFrame:
    """Parsing plus the duplicate-detection hashes, all computed while polars reads."""
    ids, key = key_columns(prefix="_")
    return prepare_events(frame, **options).with_columns(*ids).with_columns(*key)


@dataclass
class _EventStream:
    """Where each checked batch goes; a batch's frames are freed when `take` returns."""

    run: IngestRun
    seen: SeenKeys
    events: DeltaAppender
    catalog: pl.Series  # hashes of the catalog's item ids (see `keys`), for `is_in`
    unknown_items: dict[str, None] = field(default_factory=dict)
    lossy: int = 0
    units: dict[Path, str] = field(default_factory=dict)  # each file's epoch unit, once known

    def take(
        self, batch: pl.DataFrame, file: InputFile, header: FileHeader, count: FileCount
    ) -> None:
        unit = self.units.get(file.path)
        if unit is None:  # the file's first batch that holds epoch numbers decides
            unit = epoch_unit(batch["_timestamp_text"])
            if unit is not None:
                self.units[file.path] = unit
        checked = check_events(
            batch, file, header, self.run.now, passthrough=("_h", "_u", "_i"), unit=unit or "s"
        )
        new, parts = self.seen.keep_new(checked.valid)
        self.events.add_parts(parts)
        if checked.quarantine.height:
            self.run.set_aside(checked.quarantine)
        self.lossy += checked.flags.get("lossy_utf8", 0)
        # by the item hash computed while reading (no string hashing here); a collision with
        # a catalog id (about 1 in 10^19 per pair) would only leave one event uncounted
        missing = ~new["_i"].is_in(self.catalog)
        unknown = int(missing.sum())
        self.run.report.unknown_item_events += unknown
        if unknown and len(self.unknown_items) < EXAMPLES:
            examples = new["item_id"].filter(missing).head(EXAMPLES)
            self.unknown_items.update(dict.fromkeys(examples))
        count.rows_read += batch.height
        count.rows_stored += new.height
        count.duplicates += checked.valid.height - new.height
        count.quarantined += checked.quarantine.height
