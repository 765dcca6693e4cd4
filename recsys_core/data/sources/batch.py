"""The raw-batch format shared by the readers and `validation`: which file, what its header
maps, and how columns are named in the batches of string columns read from it.

A batch has `row_number` (1-based data row), the canonical fields (text), unknown columns
as `unknown:<name>` (read only to show a quarantined row whole) and `extra_fields` (text
found past the header's last column, else null).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

EVENT_FIELDS = ("user_id", "item_id", "timestamp", "event_type", "value")
REQUIRED_EVENT_COLUMNS = ("user_id", "item_id", "timestamp")
ITEM_FIELDS = ("item_id", "title", "description", "categories")
REQUIRED_ITEM_COLUMNS = ("item_id", "title")
EXTRA = "extra_fields"  # text of the fields found past the header's last column
UNKNOWN_PREFIX = "unknown:"  # batch name of a column that is read but never stored
ATTRIBUTE = pl.Struct({"name": pl.String, "value": pl.String})


@dataclass(frozen=True)
class InputFile:
    """One file to read and how.

    Args:
        path: The file.
        kind: `events` or `items`.
        fmt: `csv` (any separator), `jsonl` or `parquet`.
        layout: Name of the source layout that planned it (see `layout.LAYOUTS`): it maps
            the file's header and reads its catalog.
        separator: Field separator of a CSV file.
        quote_char: Quote character of a CSV file; None for files that never quote.
        names: Column names of a file without a header row.
        rename: (file column, canonical column) pairs.
        constants: (canonical column, value) pairs set on every row.
        encoding: `utf8` (invalid bytes are replaced and flagged) or `latin-1`.
        companions: Further files this one is read with (MovieLens `tags.csv`).
    """

    path: Path
    kind: str
    fmt: str
    layout: str = "generic"
    separator: str = ","
    quote_char: str | None = '"'
    names: tuple[str, ...] = ()
    rename: tuple[tuple[str, str], ...] = ()
    constants: tuple[tuple[str, str], ...] = ()
    encoding: str = "utf8"
    companions: tuple[Path, ...] = ()

    @property
    def label(self) -> str:
        return str(self.path)


@dataclass
class FileHeader:
    """What a file's header says: its columns, which are used and which are not.

    Args:
        columns: Column names as in the file (or as given for a headerless file).
        used: File column -> canonical column, for the columns that are read.
        unknown: Columns that are not read (reported, never stored).
        empty: The file has no bytes (after decompression) and no header.
    """

    columns: list[str]
    used: dict[str, str]
    unknown: list[str] = field(default_factory=list)
    empty: bool = False


def batch_column(header: FileHeader, column: str) -> str:
    """Name of a file column in a batch: its canonical name, or `unknown:<name>`."""
    return header.used.get(column) or UNKNOWN_PREFIX + column
