"""Generic sources: event files, folders or globs plus a catalog file, each CSV, TSV, JSONL
or Parquet (optionally `.gz` or `.zst` compressed), with the canonical column names."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_core.data.sources.batch import (
    EXTRA,
    ITEM_FIELDS,
    UNKNOWN_PREFIX,
    FileHeader,
    InputFile,
)
from recsys_core.data.sources.files import expand_paths, plain_name
from recsys_core.data.sources.layout import SourceLayout, register
from recsys_core.data.sources.readers.delimited import collect_csv
from recsys_core.data.sources.readers.jsonl import jsonl_batches
from recsys_core.data.sources.readers.parquet import read_used_columns
from recsys_core.data.sources.readers.text import empty_items, no_attributes, split_list
from recsys_core.data.sources.spec import SourcePlan, SourceSpec
from recsys_core.errors import InputError


class GenericLayout(SourceLayout):
    """`--events` and `--items`: the format follows each file's name."""

    name = "generic"
    formats = ("csv", "jsonl", "parquet")

    def recognises(self, spec: SourceSpec) -> bool:
        return bool(spec.events)

    def plan(self, spec: SourceSpec) -> SourcePlan:
        events = [self._file(path, "events") for path in expand_paths(spec.events)]
        items = [self._file(path, "items") for path in expand_paths([spec.items])]
        return SourcePlan(events=events, items=items)

    def _file(self, path: Path, kind: str) -> InputFile:
        name = plain_name(path)
        if name.endswith(".parquet"):
            return InputFile(path, kind, "parquet", layout=self.name)
        if name.endswith((".jsonl", ".ndjson", ".json")):
            return InputFile(path, kind, "jsonl", layout=self.name)
        if name.endswith(".tsv"):
            return InputFile(path, kind, "csv", layout=self.name, separator="\t")
        if name.endswith(".csv"):
            return InputFile(path, kind, "csv", layout=self.name)
        raise InputError(
            f"{path}: unsupported file type (use .csv, .tsv, .jsonl or .parquet, optionally "
            ".gz or .zst)"
        )

    def reads_item_column(self, target: str, dtype: pl.DataType | None) -> bool:
        """Known fields and text columns; in Parquet, columns that are not text (numbers,
        flags, nested data) are unknown."""
        return target in ITEM_FIELDS or dtype is None or dtype in (pl.String, pl.Categorical)

    def read_items(self, file: InputFile, header: FileHeader) -> pl.DataFrame:
        """Known fields by name; every other column read becomes an attribute."""
        if file.fmt == "csv":
            raw = collect_csv(file, header)
        elif file.fmt == "jsonl":
            fields = list(dict.fromkeys(header.used.values()))
            batches = list(jsonl_batches(file, header, fields, 1_000_000))
            if not batches:
                return empty_items()
            raw = pl.concat(batches)
        else:
            raw = read_used_columns(file, header)
        if raw.is_empty() and not raw.columns:
            return empty_items()
        extra = [
            c for c in raw.columns
            if c not in (*ITEM_FIELDS, "row_number", EXTRA, "raw")
            and not c.startswith(UNKNOWN_PREFIX)
        ]  # fmt: skip
        attributes = (
            pl.concat_list(
                [pl.struct(pl.lit(c).alias("name"), pl.col(c).str.strip_chars().alias("value"))
                 for c in extra]
            ).list.eval(pl.element().filter(
                pl.element().struct.field("value").is_not_null()
                & (pl.element().struct.field("value") != "")
            ))
            if extra
            else no_attributes()
        )  # fmt: skip
        optional = {
            c: pl.col(c) if c in raw.columns else pl.lit(None, pl.String) for c in ITEM_FIELDS
        }
        return raw.select(
            pl.col("row_number").cast(pl.Int64),
            optional["item_id"].alias("item_id"),
            optional["title"].alias("title"),
            optional["description"].alias("description"),
            split_list(optional["categories"], "|").alias("categories"),
            attributes.alias("attributes"),
            pl.col(EXTRA),
        )


register(GenericLayout())
