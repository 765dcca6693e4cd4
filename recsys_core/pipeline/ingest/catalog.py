"""The catalog part of a run: read and check item files, keep the latest row per id and
merge them into `items` on `item_id` (only new items and changed texts are written)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import polars as pl

from recsys_core import schemas
from recsys_core.data.sources import InputFile, read_items
from recsys_core.data.validation import check_items, latest_items
from recsys_core.pipeline.ingest.report import FileCount
from recsys_core.pipeline.ingest.state import IngestRun
from recsys_core.storage import Lake


def ingest_items(run: IngestRun, files: list[InputFile]) -> list[FileCount]:
    """Read `files` whole, merge their latest rows into `items`, set bad rows aside.

    Returns per-file counts, companions (MovieLens `tags.csv`) included.
    """
    report = run.report
    counts, companions, rows, rejected = [], [], [], []
    flags: Counter[str] = Counter()
    for index, file in enumerate(files):
        raw = read_items(file, run.headers[file.path])
        checked = check_items(raw, file, run.now, run.limits.max_item_text_chars)
        digest = run.facts[file.path].content_hash
        counts.append(FileCount(file, digest, raw.height, quarantined=checked.quarantine.height))
        # a companion (MovieLens tags.csv) is remembered too, so an unchanged one is skipped
        companions += [
            FileCount(replace(file, path=path), run.facts[path].content_hash)
            for path in file.companions
        ]
        rows.append(checked.valid.with_columns(pl.lit(index).alias("file_index")))
        rejected.append(checked.quarantine)
        flags.update(checked.flags)
        report.item_rows_read += raw.height
        report.items_quarantined += checked.quarantine.height
    for name, count in flags.items():
        report.flags[f"items.{name}"] = count
    if rows:
        _merge_files(run, pl.concat(rows), counts)
    for frame in rejected:
        run.set_aside(frame)
    return counts + companions


def _merge_files(run: IngestRun, candidates: pl.DataFrame, counts: list[FileCount]) -> None:
    """Merge the checked rows of all files (`file_index` says whose) and count per file."""
    report = run.report
    latest = latest_items(candidates)
    report.item_duplicates = candidates.height - latest.height
    stored = merge_items(run.lake, latest, run.meta)
    report.items_added = int(stored["added"].sum())
    report.items_updated = stored.height - report.items_added
    report.items_unchanged = latest.height - stored.height
    per_file = latest.join(stored.select("item_id"), on="item_id", how="semi")["file_index"]
    written = Counter(per_file.to_list())
    valid_per_file = Counter(candidates["file_index"].to_list())
    for index, count in enumerate(counts):
        count.rows_stored = written.get(index, 0)
        count.duplicates = valid_per_file.get(index, 0) - count.rows_stored


def merge_items(lake: Lake, items: pl.DataFrame, meta: dict) -> pl.DataFrame:
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
