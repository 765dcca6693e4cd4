"""Parquet files: their schema as a header, and typed values read as the text a CSV holds."""

from __future__ import annotations

import polars as pl

from recsys_core.data.sources.batch import EXTRA, FileHeader, InputFile, batch_column
from recsys_core.errors import InputError


def read_schema(file: InputFile) -> dict[str, pl.DataType]:
    """Column -> dtype of a Parquet file.

    Raises:
        InputError: The file is not readable Parquet (naming it).
    """
    try:
        return pl.read_parquet_schema(file.path)
    except Exception as exc:
        raise InputError(
            f"{file.path}: not a readable Parquet file ({type(exc).__name__})"
        ) from None


def scan_parquet(file: InputFile, header: FileHeader) -> pl.LazyFrame:
    """All header columns as text, named for a batch, plus a null `extra_fields`."""
    frame = pl.scan_parquet(file.path, row_index_name="row_number", row_index_offset=1)
    schema = frame.collect_schema()
    return frame.select(
        "row_number",
        *[as_text(pl.col(c), schema[c]).alias(batch_column(header, c)) for c in header.columns],
        pl.lit(None, pl.String).alias(EXTRA),
    )


def read_used_columns(file: InputFile, header: FileHeader) -> pl.DataFrame:
    """The used columns of a whole Parquet file as text under their canonical names."""
    frame = pl.scan_parquet(file.path, row_index_name="row_number", row_index_offset=1)
    schema = frame.collect_schema()
    return frame.select(
        pl.col("row_number").cast(pl.Int64),
        *[as_text(pl.col(c), schema[c]).alias(t) for c, t in header.used.items()],
        pl.lit(None, pl.String).alias(EXTRA),
    ).collect()


def as_text(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Typed Parquet values as the text a CSV would hold (times as ISO-8601 in UTC)."""
    if isinstance(dtype, pl.Datetime):
        utc = column.dt.convert_time_zone("UTC") if dtype.time_zone else column
        return utc.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f") + pl.lit("+00:00")
    if isinstance(dtype, pl.List | pl.Array):
        return column.cast(pl.List(pl.String)).list.join("|")
    return column.cast(pl.String)
