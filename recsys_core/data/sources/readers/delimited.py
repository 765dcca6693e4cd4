"""CSV and TSV files (any separator, quoted or not, `.gz`/`.zst` compressed): headers,
streamed scans, and a record-by-record fallback for damage polars gives up on."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator

import polars as pl

from recsys_core.data.sources.batch import EXTRA, FileHeader, InputFile, batch_column
from recsys_core.data.sources.readers.text import first_line, string_frame
from recsys_core.errors import InputError


def read_header(file: InputFile) -> list[str]:
    """The header row's column names (trimmed); empty for a file with no bytes.

    Raises:
        InputError: The file cannot be read (naming it).
    """
    try:
        header = pl.read_csv(
            file.path, n_rows=0, separator=file.separator, quote_char=file.quote_char,
            infer_schema=False, encoding="utf8-lossy", truncate_ragged_lines=True,
        )  # fmt: skip
    except pl.exceptions.NoDataError:
        return []
    except (pl.exceptions.PolarsError, OSError) as exc:  # OSError: a broken .gz or .zst
        raise InputError(f"{file.path}: cannot be read: {first_line(exc)}") from None
    return [c.strip() for c in header.columns]


def scan_csv(file: InputFile, header: FileHeader, *, lossy: bool = True) -> pl.LazyFrame:
    """All columns as text; one more column catches fields past the header's last one.
    Invalid UTF-8 is replaced (and flagged later) unless `lossy` is False: the file is
    known to be valid UTF-8."""
    schema = {column: pl.String for column in header.columns}
    schema[EXTRA] = pl.String
    frame = pl.scan_csv(
        file.path,
        has_header=False,
        skip_rows=0 if file.names else 1,
        separator=file.separator,
        quote_char=file.quote_char,
        schema=schema,
        missing_columns="insert",
        # a row with more fields than the header keeps its first extra one in EXTRA (and is
        # quarantined for it), also when it is the first row polars sees
        extra_columns="ignore",
        truncate_ragged_lines=True,
        encoding="utf8-lossy" if lossy else "utf8",
        row_index_name="row_number",
        row_index_offset=1,
        raise_if_empty=False,
    )
    return frame.select(
        "row_number",
        *[pl.col(c).alias(batch_column(header, c)) for c in header.columns],
        pl.col(EXTRA),
    )


def collect_csv(file: InputFile, header: FileHeader) -> pl.DataFrame:
    """A whole (catalog) file, as `scan_csv` reads it.

    Raises:
        InputError: The file cannot be read (naming it).
    """
    try:
        frame = scan_csv(file, header).collect()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{file.path}: cannot be read: {first_line(exc)}") from None
    return frame.with_columns(pl.col("row_number").cast(pl.Int64))


def read_latin1_csv(file: InputFile) -> pl.DataFrame:
    """A small headerless latin-1 file (named columns), decoded to UTF-8 text first."""
    text = file.path.read_bytes().decode("latin-1")
    data = io.BytesIO(text.encode("utf-8"))
    schema = {column: pl.String for column in file.names} | {EXTRA: pl.String}
    frame = pl.read_csv(
        data, has_header=False, separator=file.separator, quote_char=file.quote_char,
        schema=schema, missing_columns="insert", truncate_ragged_lines=True,
        row_index_name="row_number", row_index_offset=1,
    )  # fmt: skip
    return frame.with_columns(pl.col("row_number").cast(pl.Int64))


def python_readable(file: InputFile) -> bool:
    """Whether Python's csv reader can take over the file (it cannot decompress zstd)."""
    name = file.path.name.lower()
    return not name.endswith((".zst", ".zstd"))


def python_csv_batches(
    file: InputFile, header: FileHeader, batch_rows: int, *, after_row: int
) -> Iterator[pl.DataFrame]:
    """The records of a CSV file past `after_row`, as `scan_csv` would give them."""
    opener = gzip.open if file.path.name.lower().endswith(".gz") else open
    encoding = "latin-1" if file.encoding == "latin-1" else "utf-8-sig"
    n_columns = len(header.columns)
    names = ["row_number", *[batch_column(header, c) for c in header.columns], EXTRA]
    options: dict = {"delimiter": file.separator}
    if file.quote_char is None:
        options["quoting"] = csv.QUOTE_NONE
    else:
        options["quotechar"] = file.quote_char
    with opener(file.path, "rt", encoding=encoding, errors="replace", newline="") as handle:
        reader = csv.reader(handle, **options)
        if not file.names:
            next(reader, None)  # the header
        rows: list[list] = []
        number = 0
        for record in reader:
            if not record:  # a blank line is not a record, as for polars
                continue
            number += 1
            if number <= after_row:
                continue
            values = [value if value != "" else None for value in record[: n_columns + 1]]
            values += [None] * (n_columns + 1 - len(values))
            rows.append([number, *values])
            if len(rows) == batch_rows:
                yield string_frame(names, rows)
                rows = []
        if rows:
            yield string_frame(names, rows)
