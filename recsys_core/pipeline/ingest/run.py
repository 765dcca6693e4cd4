"""The run: plan the source, check its files, skip those already ingested, read the catalog
and the events, then commit `items`, `events`, `quarantine` and the manifest, in that order.

An ingest is one unit. Every file is read (and every check that can refuse the input made)
before the first commit, so bad input commits nothing. Should a commit fail after an earlier
one succeeded, the earlier ones are undone (`_Commits`); a run killed in between is simply
run again: its files are not in the manifest yet, and nothing is stored twice.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from recsys_core import schemas
from recsys_core.context import RunContext
from recsys_core.data.sources import (
    FileFacts,
    FileHeader,
    SourcePlan,
    SourceSpec,
    check_complete,
    file_facts,
    inspect,
    plan_source,
)
from recsys_core.data.sources.spec import DEFAULT_SAMPLE
from recsys_core.data.validation import UNIT_NAMES
from recsys_core.errors import InputError
from recsys_core.pipeline.ingest.catalog import StagedItems, ingest_items
from recsys_core.pipeline.ingest.events import StagedEvents, ingest_events
from recsys_core.pipeline.ingest.findings import name_bots, totals
from recsys_core.pipeline.ingest.quarantine import NewQuarantine, stored_quarantine
from recsys_core.pipeline.ingest.report import FileCount, IngestReport
from recsys_core.pipeline.ingest.state import IngestRun
from recsys_core.storage import Lake
from recsys_core.storage.append import DeltaAppender


def ingest(context: RunContext, spec: SourceSpec, *, progress: bool | None = None) -> IngestReport:
    """Read `spec` and add its new rows to the tables of the context's data directory.

    A spec that names no source adds the default sample (MovieLens-100K) to a data
    directory without events, and nothing to one that holds events: the run then works on
    the data it has, and its report says so.

    Args:
        context: The data directory, settings and run id (stored in each commit's metadata).
        spec: Where the raw data is.
        progress: Show progress bars (default: when stderr is a terminal).

    Raises:
        InputError: A file or a required column is missing, a compressed file is cut short
            or damaged, or every row of a file is quarantined. Nothing is committed then.
    """
    lake = context.lake
    limits = context.settings.ingest
    progress = sys.stderr.isatty() if progress is None else progress
    started = time.perf_counter()
    now = datetime.now(UTC)
    notes = []
    if not spec.given:
        if lake.exists("events"):
            return _nothing_given(lake, started)
        spec = SourceSpec(sample=DEFAULT_SAMPLE)
        notes.append(f"no source given and {lake.root} holds no events: ingesting the "
                     f"{DEFAULT_SAMPLE} sample")  # fmt: skip
    plan = plan_source(spec)
    headers = {file.path: inspect(file) for file in [*plan.events, *plan.items]}
    report = IngestReport(
        source=spec.describe(), notes=notes, bot_events_per_day=limits.bot_events_per_day
    )
    meta = {"run_id": context.run_id, "stage": "ingest"}

    facts = _file_facts(plan.files, progress)
    fresh = _fresh_files(lake, plan, facts)
    for path in plan.files:  # a compressed file cut short is refused before any write
        if path in fresh:
            check_complete(path)
    report.files_read = len(fresh)
    report.files_skipped = len(plan.files) - len(fresh)
    _note_headers(plan, headers, fresh, report)

    appender = DeltaAppender(
        lake.path("quarantine"), "quarantine",
        dictionary=["source_file", "reason", "kind", "ingested_at"],
    )  # fmt: skip
    labels = [f.label for f in [*plan.events, *plan.items] if f.path in fresh]
    quarantine = NewQuarantine(appender, stored_quarantine(lake, labels))
    run = IngestRun(
        lake=lake, now=now, limits=limits, report=report, headers=headers, facts=facts,
        quarantine=quarantine, meta=meta, progress=progress,
    )  # fmt: skip
    staged_events: StagedEvents | None = None
    try:
        # a catalog is read whole when any of its files changed; the merge keeps only changes
        items = ingest_items(run, [f for f in plan.items if {f.path, *f.companions} & fresh])
        staged_events = ingest_events(
            run, [f for f in plan.events if f.path in fresh], items.item_ids
        )
        counts = items.counts + staged_events.counts
        _refuse_wholly_quarantined(run, counts)  # before the first commit
        _commit_all(run, items, staged_events, quarantine, counts)
    except BaseException:
        quarantine.abort()
        if staged_events is not None:
            staged_events.appender.abort()
        raise
    report.quarantine_reasons = dict(run.reasons.most_common())
    name_bots(lake, staged_events.bots, report)
    for label, unit in report.timestamp_units.items():
        report.notes.append(
            f"{label}: timestamps read as {UNIT_NAMES[unit]} since the epoch (by their size)"
        )
    report.files = [
        {k: v for k, v in c.manifest_row(now).items() if k != "ingested_at"} for c in counts
    ]
    totals(lake, report)
    report.accounted = report.balanced
    report.seconds = round(time.perf_counter() - started, 3)
    report.events_per_second = round(report.rows_read / max(report.seconds, 1e-9), 1)
    report.versions = {t: lake.version(t) for t in ("events", "items", "quarantine")}
    return report


def _nothing_given(lake: Lake, started: float) -> IngestReport:
    """The report of a run that names no source on a data directory holding events."""
    report = IngestReport(source=SourceSpec().describe())
    report.notes.append(
        f"no source given: nothing ingested; {lake.root} keeps the data it holds and the run "
        f"goes on with it (name files, a folder or --sample {DEFAULT_SAMPLE} to add data)"
    )
    totals(lake, report)
    report.seconds = round(time.perf_counter() - started, 3)
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


def _refuse_wholly_quarantined(run: IngestRun, counts: list[FileCount]) -> None:
    """Bad input: a file with rows of which none could be kept (all quarantined). Such a
    file is most likely in a format the run misreads, so nothing of the run is committed and
    the file stays out of the manifest, to be ingested once it is fixed.

    Raises:
        InputError: naming the file, its reasons and its first bad row.
    """
    for count in counts:
        if not count.rows_read or count.quarantined < count.rows_read:
            continue
        label = count.file.label
        reasons = sorted(
            ((n, reason) for (source, reason), n in run.file_reasons.items() if source == label),
            reverse=True,
        )
        why = ", ".join(f"{reason} {n}" for n, reason in reasons)
        row, detail = run.examples.get(label, (0, ""))
        # one line whatever the row held: line breaks shown escaped, a long value cut
        detail = detail.replace("\r", "\\r").replace("\n", "\\n")
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        raise InputError(
            f"{label}: all {count.rows_read} rows were quarantined ({why}; row {row}: "
            f"{detail}); nothing was ingested"
        )


def _commit_all(
    run: IngestRun,
    items: StagedItems,
    events: StagedEvents,
    quarantine: NewQuarantine,
    counts: list[FileCount],
) -> None:
    """Commit the run's tables: `items`, `events`, `quarantine`, then the manifest of the
    files read (last, so a run that stops before it is read again)."""
    commits = _Commits(run.lake, run.meta)
    commits.make("items", lambda: items.commit(run))
    commits.make("events", lambda: events.commit(run))
    rows = {**run.meta, "rows": quarantine.rows_added}
    commits.make("quarantine", lambda: quarantine.commit(rows))
    if counts:
        manifest = pl.DataFrame(
            [c.manifest_row(run.now) for c in counts], schema=schemas.INGEST_MANIFEST
        )
        commits.make(
            "ingest_manifest",
            lambda: run.lake.write("ingest_manifest", manifest, mode="append", metadata=run.meta),
        )


class _Commits:
    """Commits of one run, undone together when a later one fails: a table the run changed
    is restored to its version before the run (in a new commit), and a table it created is
    removed, so a failed run leaves every table as it found it."""

    def __init__(self, lake: Lake, meta: dict[str, str]) -> None:
        self.lake = lake
        self.meta = meta
        self.made: list[tuple[str, int | None]] = []  # (table, its version before the run)

    def make(self, table: str, commit: Callable[[], int | None]) -> None:
        before = self.lake.version(table)
        try:
            version = commit()
        except BaseException:
            self.undo()
            raise
        if version is not None and version != before:
            self.made.append((table, before))

    def undo(self) -> None:
        for table, before in reversed(self.made):
            # the failure that led here is what the run reports; a table that cannot be
            # restored now converges when the run is repeated (nothing is stored twice)
            with contextlib.suppress(Exception):
                if before is None:
                    shutil.rmtree(self.lake.path(table))
                else:
                    undone = {"run_id": self.meta.get("run_id", ""), "undoes": "ingest"}
                    self.lake.rollback(table, before, metadata=undone)
        self.made = []


def _fresh_files(lake: Lake, plan: SourcePlan, facts: dict[Path, FileFacts]) -> set[Path]:
    """The planned files whose content is not in the manifest (nor read earlier in the run)."""
    done = set(lake.read_or_empty("ingest_manifest", ["content_hash"])["content_hash"].to_list())
    fresh: set[Path] = set()
    for path in plan.files:
        if facts[path].content_hash not in done:
            fresh.add(path)
            done.add(facts[path].content_hash)  # a second copy in the same run is skipped too
    return fresh


def _note_headers(
    plan: SourcePlan, headers: dict[Path, FileHeader], fresh: set[Path], report: IngestReport
) -> None:
    """Report the fresh files that are empty or have columns that are not read."""
    for file in [*plan.events, *plan.items]:
        header = headers[file.path]
        if file.path in fresh and header.empty:
            report.empty_files.append(file.label)
        if file.path in fresh and header.unknown:
            report.unknown_columns[file.label] = header.unknown
