"""One declared schema per table, checked whenever a table is written or read.

External ids are strings end to end; integer indexes exist only inside models.
"""

from __future__ import annotations

import polars as pl

from recsys_core.errors import InputError

UTC_TIME = pl.Datetime("us", "UTC")

EVENTS = pl.Schema(
    {
        "user_id": pl.String,
        "item_id": pl.String,
        "timestamp": UTC_TIME,
        "event_type": pl.String,
        "value": pl.Float64,
        "source": pl.String,
        "ingested_at": UTC_TIME,
        # null for a clean row; otherwise comma-separated flags such as "lossy_utf8"
        "quality": pl.String,
        "event_date": pl.Date,  # partition column, derived from timestamp
    }
)
EVENT_KEY = ("user_id", "item_id", "timestamp", "event_type")

ITEMS = pl.Schema(
    {
        "item_id": pl.String,
        "title": pl.String,
        "description": pl.String,
        "categories": pl.List(pl.String),
        "attributes": pl.List(pl.Struct({"name": pl.String, "value": pl.String})),
        "text": pl.String,  # the canonical text that is encoded
        "text_hash": pl.String,
        "updated_at": UTC_TIME,
        # null for a clean row; otherwise comma-separated flags: lossy_utf8, empty_text,
        # text_truncated
        "quality": pl.String,
    }
)

ITEM_EMBEDDINGS = pl.Schema(
    {
        "item_id": pl.String,
        "text_hash": pl.String,
        "encoder": pl.String,
        "embedding": pl.List(pl.Float32),
        "truncated": pl.Boolean,
        "encoded_at": UTC_TIME,
    }
)

RECOMMENDATIONS = pl.Schema(
    {
        "user_id": pl.String,
        "rank": pl.Int32,
        "item_id": pl.String,
        "score": pl.Float32,
        "reason_item_id": pl.String,
        "model": pl.String,
        "generated_at": UTC_TIME,
    }
)

QUARANTINE = pl.Schema(
    {
        "raw": pl.String,  # the row as read: its fields joined by the file's separator
        "source_file": pl.String,
        "row_number": pl.Int64,  # 1-based data row (record) number; the header is row 0
        "reason": pl.String,  # a reason code, see recsys_core.data.validation.REASONS
        "detail": pl.String,  # the reason in words, naming the column and value
        "kind": pl.String,  # events or items
        "ingested_at": UTC_TIME,
    }
)

INGEST_MANIFEST = pl.Schema(
    {
        "source_file": pl.String,
        "content_hash": pl.String,  # sha256 of the file's bytes
        "kind": pl.String,  # events or items
        "rows_read": pl.Int64,
        "rows_stored": pl.Int64,  # new events, or catalog rows added or changed
        "duplicates": pl.Int64,  # already stored, or repeated in this run
        "quarantined": pl.Int64,
        "ingested_at": UTC_TIME,
    }
)

TABLES: dict[str, pl.Schema] = {
    "events": EVENTS,
    "items": ITEMS,
    "item_embeddings": ITEM_EMBEDDINGS,
    "recommendations": RECOMMENDATIONS,
    "quarantine": QUARANTINE,
    "ingest_manifest": INGEST_MANIFEST,
}


def conform(df: pl.DataFrame, schema: pl.Schema, *, table: str) -> pl.DataFrame:
    """Return `df` with exactly the schema's columns, in order and with its dtypes.

    Args:
        df: Frame to check.
        schema: The declared schema.
        table: Table name, for the error message.

    Raises:
        InputError: A column is missing or cannot be cast losslessly.
    """
    missing = [name for name in schema.names() if name not in df.columns]
    if missing:
        raise InputError(f"table {table}: missing column(s) {', '.join(missing)}")
    out = df[schema.names()]  # picks the columns, without running a query over the frame
    if out.schema == schema:
        return out
    try:
        return out.cast(dict(schema), strict=True)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"table {table}: columns do not match the declared schema: {exc}") from exc


def check(df: pl.DataFrame, schema: pl.Schema, *, table: str) -> pl.DataFrame:
    """Raise unless `df` has exactly the declared schema (what a reader may rely on)."""
    if df.schema != schema:
        raise InputError(
            f"table {table}: schema {dict(df.schema)} differs from the declared {dict(schema)}"
        )
    return df
