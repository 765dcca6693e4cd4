"""The source-layout interface and its registry.

A layout is one kind of source (a MovieLens download, RecBole atomic files, generic
CSV/JSONL/Parquet files): it recognises a `SourceSpec` as its own, plans the files to read
and how, maps each file's header to the canonical columns, and reads its catalog into the
canonical item columns. Each layout module registers one instance in `LAYOUTS`, so a new
layout is one new file (imported by the package, which fixes the order they are asked in).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import polars as pl

from recsys_core.data.sources.batch import EVENT_FIELDS, FileHeader, InputFile
from recsys_core.data.sources.readers.text import empty_items
from recsys_core.data.sources.spec import SourcePlan, SourceSpec


class SourceLayout(ABC):
    """One kind of source: how it is recognised, planned, mapped and its catalog read.

    Attributes:
        name: Its key in `LAYOUTS`, and the `layout` of the files it plans.
        formats: The file formats (`csv`, `jsonl`, `parquet`) its files may have.
    """

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]

    @abstractmethod
    def recognises(self, spec: SourceSpec) -> bool:
        """Whether `spec` names a source of this layout (looking at file names only)."""

    @abstractmethod
    def plan(self, spec: SourceSpec) -> SourcePlan:
        """The files of `spec` and how to read each (no data is read).

        Raises:
            InputError: A file the layout needs is missing (naming it).
        """

    @abstractmethod
    def read_items(self, file: InputFile, header: FileHeader) -> pl.DataFrame:
        """Read a catalog file whole into the canonical item columns (see `read_items`)."""

    def map_columns(
        self, file: InputFile, columns: list[str], dtypes: dict[str, pl.DataType] | None
    ) -> tuple[dict[str, str], list[str]]:
        """File column -> canonical column for the columns read; the rest are unknown.

        Events read the five event fields (a repeated one once). Catalogs read the columns
        `reads_item_column` accepts: the known fields, and any other becomes an attribute of
        the item text.

        Args:
            file: The file, with its renames.
            columns: Its columns, in file order.
            dtypes: Column -> dtype where the format is typed (Parquet), else None.
        """
        rename = dict(file.rename)
        used: dict[str, str] = {}
        unknown: list[str] = []
        for column in columns:
            target = rename.get(column, column)
            if file.kind == "events":
                keep = target in EVENT_FIELDS and target not in used.values()
            else:
                keep = self.reads_item_column(target, None if dtypes is None else dtypes[column])
            if keep:
                used[column] = target
            else:
                unknown.append(column)
        return used, unknown

    def reads_item_column(self, target: str, dtype: pl.DataType | None) -> bool:
        """Whether a catalog column (by canonical name and dtype) is read: every one here."""
        return True


LAYOUTS: dict[str, SourceLayout] = {}


def register(layout: SourceLayout) -> SourceLayout:
    """Add `layout` to `LAYOUTS` under its name (layouts are asked in this order)."""
    if layout.name in LAYOUTS:
        raise ValueError(f"source layout {layout.name!r} is registered twice")
    LAYOUTS[layout.name] = layout
    return layout


def layout_of(file: InputFile) -> SourceLayout:
    """The layout that planned `file`."""
    return LAYOUTS[file.layout]


def read_items(file: InputFile, header: FileHeader) -> pl.DataFrame:
    """Read a catalog into canonical columns (catalogs are read whole; logs stream).

    Returns a frame with `row_number`, `item_id`, `title`, `description` (String),
    `categories` (list of strings), `attributes` (list of name/value structs: every other
    column, all part of the item text) and `extra_fields`.
    """
    if header.empty:
        return empty_items()
    return layout_of(file).read_items(file, header)
