"""The run: plan the source, skip files already ingested, then the catalog, the events,
the quarantine commit, the findings and the manifest, in that order."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
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
    file_facts,
    inspect,
    plan_source,
)
from recsys_core.pipeline.ingest.catalog import ingest_items
from recsys_core.pipeline.ingest.events import ingest_events
from recsys_core.pipeline.ingest.findings import name_bots, totals
from recsys_core.pipeline.ingest.quarantine import NewQuarantine, stored_quarantine
from recsys_core.pipeline.ingest.report import FileCount, IngestReport
from recsys_core.pipeline.ingest.state import IngestRun
from recsys_core.storage import Lake
from recsys_core.storage.append import DeltaAppender


def ingest(context: RunContext, spec: SourceSpec, *, progress: bool | None = None) -> IngestReport:
    """Read `spec` and add its new rows to the tables of the context's data directory.

    Args:
        context: The data directory, settings and run id (stored in each commit's metadata).
        spec: Where the raw data is.
        progress: Show progress bars (default: when stderr is a terminal).

    Raises:
        InputError: A file or a required column is missing (checked before any write).
    """
    lake = context.lake
    limits = context.settings.ingest
    progress = sys.stderr.isatty() if progress is None else progress
    started = time.perf_counter()
    now = datetime.now(UTC)
    plan = plan_source(spec)
    headers = {file.path: inspect(file) for file in [*plan.events, *plan.items]}
    report = IngestReport(source=spec.describe(), bot_events_per_day=limits.bot_events_per_day)
    meta = {"run_id": context.run_id, "stage": "ingest"}

    facts = _file_facts(plan.files, progress)
    fresh = _fresh_files(lake, plan, facts)
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
    counts: list[FileCount] = []
    try:
        # a catalog is read whole when any of its files changed; the merge keeps only changes
        counts += ingest_items(run, [f for f in plan.items if {f.path, *f.companions} & fresh])
        event_counts, bots = ingest_events(run, [f for f in plan.events if f.path in fresh])
        counts += event_counts
        quarantine.commit({**meta, "rows": quarantine.rows_added})
    except BaseException:
        quarantine.abort()
        raise
    report.quarantine_reasons = dict(run.reasons.most_common())
    name_bots(lake, bots, report)

    if counts:
        manifest = pl.DataFrame(
            [c.manifest_row(now) for c in counts], schema=schemas.INGEST_MANIFEST
        )
        lake.write("ingest_manifest", manifest, mode="append", metadata=meta)
    report.files = [
        {k: v for k, v in c.manifest_row(now).items() if k != "ingested_at"} for c in counts
    ]
    totals(lake, report)
    report.accounted = report.balanced
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
