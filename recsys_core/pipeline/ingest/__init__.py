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

Parts: `run` (the order of the steps), `state` (what the steps share), `catalog` (the item
merge), `events` (the event stream), `dedupe` and `keys` (duplicate detection), `quarantine`
(rows set aside), `findings` (bot-like users, totals) and `report` (what a run reports).
"""

from recsys_core.pipeline.ingest.report import IngestReport
from recsys_core.pipeline.ingest.run import ingest

__all__ = ["IngestReport", "ingest"]
