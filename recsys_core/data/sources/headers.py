"""Read a file's header and map its columns through the file's layout."""

from __future__ import annotations

import polars as pl

from recsys_core.data.sources.batch import (
    REQUIRED_EVENT_COLUMNS,
    REQUIRED_ITEM_COLUMNS,
    FileHeader,
    InputFile,
)
from recsys_core.data.sources.files import require_file
from recsys_core.data.sources.layout import layout_of
from recsys_core.data.sources.readers.delimited import read_header
from recsys_core.data.sources.readers.jsonl import read_keys
from recsys_core.data.sources.readers.parquet import read_schema
from recsys_core.errors import InputError


def inspect(file: InputFile) -> FileHeader:
    """Read `file`'s header and map its columns; unknown columns are listed, not read.

    Raises:
        InputError: The file is unreadable, or a required column is missing (naming both).
    """
    require_file(file.path)
    for companion in file.companions:
        require_file(companion)
    dtypes: dict[str, pl.DataType] | None = None
    if file.names:
        columns = list(file.names)
    elif file.fmt == "parquet":
        dtypes = read_schema(file)
        columns = list(dtypes)
    elif file.fmt == "jsonl":
        columns = read_keys(file.path)
    else:
        columns = read_header(file)
    if not columns:
        return FileHeader(columns=[], used={}, empty=True)
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated and file.fmt == "csv":
        raise InputError(f"{file.path}: column {duplicated[0]!r} appears more than once")
    used, unknown = layout_of(file).map_columns(file, columns, dtypes)
    required = REQUIRED_EVENT_COLUMNS if file.kind == "events" else REQUIRED_ITEM_COLUMNS
    have = set(used.values()) | {name for name, _ in file.constants}
    for column in required:
        if column not in have:
            expected = next((src for src, dst in file.rename if dst == column), column)
            raise InputError(
                f"{file.path}: missing required column '{expected}' (found: {', '.join(columns)})"
            )
    return FileHeader(columns=columns, used=used, unknown=unknown)
