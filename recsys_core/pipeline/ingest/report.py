"""What an ingest run reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from recsys_core.data.sources import InputFile

EXAMPLES = 10  # ids listed in the report for each kind of finding


@dataclass
class IngestReport:
    """What one ingest run read, stored, skipped and set aside.

    Events: rows_read = events_added + duplicates + quarantined. Catalog: item_rows_read =
    items_added + items_updated + items_unchanged + item_duplicates + items_quarantined.
    """

    source: str
    notes: list[str] = field(default_factory=list)  # what a person should know about the run
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
    # file -> epoch unit of its timestamps, where not seconds (`ms`, `us`, `ns`)
    timestamp_units: dict[str, str] = field(default_factory=dict)
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

    @property
    def balanced(self) -> bool:
        """Every row read is stored, a duplicate or quarantined (events and catalog)."""
        return (
            self.rows_read == self.events_added + self.duplicates + self.quarantined
            and self.item_rows_read
            == self.items_added + self.items_updated + self.items_unchanged
            + self.item_duplicates + self.items_quarantined
        )  # fmt: skip


@dataclass
class FileCount:
    """Rows of one file read, stored, found duplicate and quarantined (its manifest row)."""

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
