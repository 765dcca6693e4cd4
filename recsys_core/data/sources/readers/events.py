"""Stream a file's events as batches of string columns, whatever its format."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

import polars as pl

from recsys_core.data.sources.batch import EVENT_FIELDS, EXTRA, FileHeader, InputFile, batch_column
from recsys_core.data.sources.readers.delimited import (
    python_csv_batches,
    python_readable,
    scan_csv,
)
from recsys_core.data.sources.readers.jsonl import jsonl_batches
from recsys_core.data.sources.readers.parquet import scan_parquet
from recsys_core.data.sources.readers.text import first_line
from recsys_core.errors import InputError


def read_event_batches(
    file: InputFile,
    header: FileHeader,
    batch_rows: int = 500_000,
    prepare: Callable[[pl.LazyFrame], pl.LazyFrame] | None = None,
    *,
    valid_utf8: bool = False,
) -> Iterator[pl.DataFrame]:
    """Stream `file`'s events as frames of string columns, `batch_rows` rows at a time.

    Each frame has `row_number` (Int64, 1-based data row), the canonical event fields
    (String; null where the file has no such column), the file's unknown columns (named
    `unknown:<name>`, read only to show a quarantined row whole) and `extra_fields` (text
    past the header's last column, else null). Memory stays bounded by `batch_rows`.

    Args:
        file: The file, from `plan_source`.
        header: Its header, from `inspect`.
        batch_rows: Rows per frame.
        prepare: Columns to add to each batch, as a lazy query: for CSV and Parquet polars
            evaluates it while it reads (in parallel), for JSONL on each decoded batch.
        valid_utf8: The file is known to be valid UTF-8 (see `file_facts`), so a CSV is
            decoded without looking for bytes to replace.
    """
    if header.empty:
        return
    prepare = prepare or (lambda frame: frame)
    if file.fmt == "jsonl":
        for batch in jsonl_batches(file, header, EVENT_FIELDS, batch_rows):
            yield prepare(batch.lazy()).collect()
        return
    if file.fmt == "csv":
        frame = scan_csv(file, header, lossy=not valid_utf8)
    else:
        frame = scan_parquet(file, header)
    present = set(frame.collect_schema())
    constants = dict(file.constants)
    fields = [
        pl.lit(constants[c]).alias(c) if c in constants
        else pl.col(c) if c in present
        else pl.lit(None, pl.String).alias(c)
        for c in EVENT_FIELDS
    ]  # fmt: skip
    unknown = [pl.col(batch_column(header, c)) for c in header.unknown]

    def shape(raw: pl.LazyFrame) -> pl.LazyFrame:
        selected = raw.select(pl.col("row_number").cast(pl.Int64), *fields, *unknown, pl.col(EXTRA))
        return prepare(selected)

    last_row = 0
    try:
        for batch in shape(frame).collect_batches(chunk_size=batch_rows):
            if batch.height:
                last_row = int(batch["row_number"][-1])
            yield batch
    except (pl.exceptions.PolarsError, OSError) as exc:
        if file.fmt != "csv" or not python_readable(file):
            raise InputError(f"{file.path}: cannot be read: {first_line(exc)}") from None
        # polars gives up on some damage (e.g. a quote never closed); Python's csv reader
        # does not, so the rest of the file is read record by record and bad rows are
        # quarantined instead of failing the whole file
        try:
            for raw in python_csv_batches(file, header, batch_rows, after_row=last_row):
                yield shape(raw.lazy()).collect()
        except (EOFError, OSError, zlib.error) as damaged:  # a compressed stream cut short
            raise InputError(f"{file.path}: cannot be read: {first_line(damaged)}") from None
