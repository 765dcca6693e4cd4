"""The state of one ingest run, carried by the object its parts share."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from recsys_core.data.sources import FileFacts, FileHeader
from recsys_core.pipeline.ingest.quarantine import NewQuarantine
from recsys_core.pipeline.ingest.report import IngestReport
from recsys_core.settings import IngestSettings
from recsys_core.storage import Lake


@dataclass
class IngestRun:
    """What the parts of one ingest run share: where and when it writes, how, what it has
    found so far (the report) and where its quarantined rows go.

    Args:
        lake: The data directory.
        now: The run's ingestion time (`ingested_at`, `updated_at`).
        limits: The ingest settings: limits and batch sizes.
        report: Filled in as the run goes.
        headers: Each planned file's header, by path.
        facts: Each planned file's content hash and text facts, by path.
        quarantine: The run's quarantine commit.
        meta: Stored in each commit's metadata.
        progress: Show progress bars.
        reasons: Quarantined rows per reason code so far.
        file_reasons: Quarantined rows per (file, reason code) so far.
        examples: The first quarantined row of each file: (row number, detail).
    """

    lake: Lake
    now: datetime
    limits: IngestSettings
    report: IngestReport
    headers: dict[Path, FileHeader]
    facts: dict[Path, FileFacts]
    quarantine: NewQuarantine
    meta: dict[str, str]
    progress: bool = False
    reasons: Counter[str] = field(default_factory=Counter)
    file_reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[str, tuple[int, str]] = field(default_factory=dict)

    def set_aside(self, rows: pl.DataFrame) -> None:
        """Add quarantine rows to the run's quarantine commit and count their reasons."""
        if rows.is_empty():
            return
        self.quarantine.add(rows)
        self.reasons.update(rows["reason"].to_list())
        per_file = rows.group_by("source_file", "reason").len()
        for source, reason, count in per_file.iter_rows():
            self.file_reasons[(source, reason)] += count
        for row in rows.unique("source_file", keep="first", maintain_order=True).iter_rows(
            named=True
        ):
            self.examples.setdefault(row["source_file"], (row["row_number"], row["detail"]))
