"""The catalog part of a run: read and check item files, keep the latest row per id and work
out what to merge into `items` on `item_id` (only new items and changed texts); the run
writes it once everything is read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import polars as pl

from recsys_core import schemas
from recsys_core.data.sources import InputFile, read_items
from recsys_core.data.validation import check_items, latest_items
from recsys_core.pipeline.ingest.report import FileCount
from recsys_core.pipeline.ingest.state import IngestRun
from recsys_core.storage import Lake


@dataclass
class StagedItems:
    """Catalog rows read and checked, not yet written.

    Args:
        counts: Per-file counts, companions (MovieLens `tags.csv`) included.
        upsert: The new and changed rows to merge into `items` (empty when none).
        item_ids: Every item id the catalog holds once they are merged.
    """

    counts: list[FileCount]
    upsert: pl.DataFrame
    item_ids: pl.Series

    def commit(self, run: IngestRun) -> int | None:
        """Merge the rows into `items` in one commit; None when there is nothing to write."""
        if self.upsert.is_empty():
            return None
        meta = {**run.meta, "rows": self.upsert.height}
        if not run.lake.exists("items"):
            return run.lake.write("items", self.upsert, mode="overwrite", metadata=meta)
        return run.lake.upsert("items", self.upsert, keys=["item_id"], metadata=meta)


def ingest_items(run: IngestRun, files: list[InputFile]) -> StagedItems:
    """Read `files` whole, work out the merge of their latest rows, set bad rows aside."""
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
    stored_ids = run.lake.read_or_empty("items", ["item_id"])["item_id"]
    upsert = pl.DataFrame(schema=schemas.ITEMS)
    item_ids = stored_ids
    if rows:
        upsert = _plan_merge(run, pl.concat(rows), counts)
        item_ids = pl.concat([stored_ids, upsert["item_id"]]).unique()
    for frame in rejected:
        run.set_aside(frame)
    return StagedItems(counts + companions, upsert, item_ids)


def _plan_merge(run: IngestRun, candidates: pl.DataFrame, counts: list[FileCount]) -> pl.DataFrame:
    """The rows to merge from the checked rows of all files (`file_index` says whose), and
    the counts per file."""
    report = run.report
    latest = latest_items(candidates)
    report.item_duplicates = candidates.height - latest.height
    upsert, stored = items_to_merge(run.lake, latest)
    report.items_added = int(stored["added"].sum())
    report.items_updated = stored.height - report.items_added
    report.items_unchanged = latest.height - stored.height
    per_file = latest.join(stored.select("item_id"), on="item_id", how="semi")["file_index"]
    written = Counter(per_file.to_list())
    valid_per_file = Counter(candidates["file_index"].to_list())
    for index, count in enumerate(counts):
        count.rows_stored = written.get(index, 0)
        count.duplicates = valid_per_file.get(index, 0) - count.rows_stored
    return upsert


def items_to_merge(lake: Lake, items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What an upsert of catalog rows on item_id writes: only new rows and rows whose text
    (or quality) changed.

    Returns the rows to write (the `items` schema), and their ids with `added` (True for
    new items, False for changed ones).
    """
    rows = schemas.conform(items, schemas.ITEMS, table="items")
    if not lake.exists("items"):
        return rows, rows.select("item_id", pl.lit(True).alias("added"))
    stored = lake.read("items", ["item_id", "text_hash", "quality"])
    joined = rows.join(stored, on="item_id", how="left", suffix="_stored")
    changed = joined.filter(
        pl.col("text_hash_stored").is_null()
        | (pl.col("text_hash") != pl.col("text_hash_stored"))
        | pl.col("quality").ne_missing(pl.col("quality_stored"))
    )
    ids = changed.select("item_id", pl.col("text_hash_stored").is_null().alias("added"))
    return changed.select(schemas.ITEMS.names()), ids
