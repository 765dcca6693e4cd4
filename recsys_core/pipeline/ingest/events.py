"""The events part of a run: stream event files through parse, check and dedupe into one
`events` commit, counting each file's rows and the events whose item is not in the catalog."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import polars as pl
from tqdm.auto import tqdm

from recsys_core.data.sources import FileHeader, InputFile, read_event_batches
from recsys_core.data.validation import check_events, prepare_events
from recsys_core.pipeline.ingest.dedupe import SeenKeys, spill_folder
from recsys_core.pipeline.ingest.findings import busy_user_days
from recsys_core.pipeline.ingest.keys import item_hash, key_columns
from recsys_core.pipeline.ingest.report import EXAMPLES, FileCount
from recsys_core.pipeline.ingest.state import IngestRun
from recsys_core.storage.append import DeltaAppender


def ingest_events(run: IngestRun, files: list[InputFile]) -> tuple[list[FileCount], pl.DataFrame]:
    """Stream event files into one `events` commit.

    Returns per-file counts and the bot-like (user hash, date, events) rows found.
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
            catalog=lake.read_or_empty("items", ["item_id"])
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
            events.commit({**run.meta, "rows": events.rows_added})
            if lake.exists("events") and stream.seen.covers(
                lake.rows_per_partition("events", "event_date")
            ):
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

    def take(
        self, batch: pl.DataFrame, file: InputFile, header: FileHeader, count: FileCount
    ) -> None:
        checked = check_events(batch, file, header, self.run.now, passthrough=("_h", "_u", "_i"))
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
