"""Ingest: raw logs and catalog -> `events`, `items`, `quarantine` and `ingest_manifest`.

Idempotent: files whose content hash is in the manifest are skipped, events already stored
(same user, item, timestamp and event type) are not stored again, and items are merged on
`item_id` (a changed text updates the row and its hash). The manifest is written last, so a
run killed midway is simply repeated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import polars as pl

from recsys_core import schemas
from recsys_core.data.sources import SourceSpec, file_hash, read_source
from recsys_core.encoders.text import build_item_text
from recsys_core.storage import Lake


@dataclass
class IngestReport:
    source: str
    files_read: int = 0
    files_skipped: int = 0
    rows_read: int = 0
    events_added: int = 0
    duplicates: int = 0
    quarantined: int = 0
    unknown_item_events: int = 0
    items_added: int = 0
    items_updated: int = 0
    events_total: int = 0
    users_total: int = 0
    items_total: int = 0
    versions: dict[str, int | None] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def ingest(spec: SourceSpec, lake: Lake, *, run_id: str = "") -> IngestReport:
    """Read `spec` and add its new rows to the tables under `lake`.

    Args:
        spec: Where the raw data is.
        lake: The data directory.
        run_id: Stored in each commit's metadata.
    """
    now = datetime.now(UTC)
    data = read_source(spec)  # raises InputError before anything is written
    report = IngestReport(source=spec.describe())
    hashes = {str(path): file_hash(path) for path in data.files}
    done = set(lake.read_or_empty("ingest_manifest", ["content_hash"])["content_hash"].to_list())
    fresh = {path for path, digest in hashes.items() if digest not in done}
    report.files_read = len(fresh)
    report.files_skipped = len(hashes) - len(fresh)
    meta = {"run_id": run_id, "stage": "ingest"}

    events = data.events.filter(pl.col("source").is_in(list(fresh)))
    quarantine = data.quarantine.filter(pl.col("source_file").is_in(list(fresh)))
    report.rows_read = events.height + quarantine.height
    report.quarantined = quarantine.height

    unique = events.unique(list(schemas.EVENT_KEY), keep="first", maintain_order=True)
    if lake.exists("events") and unique.height:
        lo, hi = unique["timestamp"].min(), unique["timestamp"].max()
        stored = (
            lake.scan("events")
            .filter(pl.col("timestamp").is_between(lo, hi))
            .select(schemas.EVENT_KEY)
            .collect()
        )
        unique = unique.join(stored, on=list(schemas.EVENT_KEY), how="anti")
    report.events_added = unique.height
    report.duplicates = events.height - unique.height

    if unique.height:
        lake.write(
            "events",
            unique.with_columns(
                ingested_at=pl.lit(now).cast(schemas.UTC_TIME),
                event_date=pl.col("timestamp").dt.date(),
            ),
            mode="append",
            metadata={**meta, "rows": unique.height},
            partition_by=["event_date"],
        )
    report.items_added, report.items_updated = _merge_items(lake, data.items, now, meta)
    if quarantine.height:
        lake.write("quarantine", quarantine, mode="append", metadata=meta)

    catalog = lake.read_or_empty("items", ["item_id"])
    report.unknown_item_events = unique.join(catalog, on="item_id", how="anti").height
    if fresh:
        manifest = pl.DataFrame(
            {
                "source_file": sorted(fresh),
                "content_hash": [hashes[p] for p in sorted(fresh)],
                "kind": ["source"] * len(fresh),
                "rows_read": [
                    int(events.filter(pl.col("source") == p).height
                        + quarantine.filter(pl.col("source_file") == p).height)
                    for p in sorted(fresh)
                ],
                "ingested_at": [now] * len(fresh),
            }
        )  # fmt: skip
        lake.write("ingest_manifest", manifest, mode="append", metadata=meta)

    totals = lake.scan("events").select(
        pl.len().alias("events"), pl.col("user_id").n_unique().alias("users")
    )
    counts = totals.collect().row(0, named=True) if lake.exists("events") else {}
    report.events_total = int(counts.get("events", 0))
    report.users_total = int(counts.get("users", 0))
    report.items_total = catalog.height
    report.versions = {t: lake.version(t) for t in ("events", "items", "quarantine")}
    return report


def _merge_items(lake: Lake, items: pl.DataFrame, now: datetime, meta: dict) -> tuple[int, int]:
    """Upsert catalog rows on item_id; only rows whose text changed are rewritten."""
    if items.is_empty():
        return 0, 0
    rows = build_item_text(items).with_columns(updated_at=pl.lit(now).cast(schemas.UTC_TIME))
    rows = schemas.conform(rows, schemas.ITEMS, table="items")
    if not lake.exists("items"):
        lake.write("items", rows, mode="overwrite", metadata={**meta, "rows": rows.height})
        return rows.height, 0
    stored = lake.read("items", ["item_id", "text_hash"])
    added = rows.join(stored, on="item_id", how="anti")
    changed = rows.join(stored, on="item_id", how="inner").filter(
        pl.col("text_hash") != pl.col("text_hash_right")
    )
    if added.is_empty() and changed.is_empty():
        return 0, 0
    upsert = pl.concat([added, changed.select(schemas.ITEMS.names())])
    lake.upsert("items", upsert, keys=["item_id"], metadata={**meta, "rows": upsert.height})
    return added.height, changed.height
