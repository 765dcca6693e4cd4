"""Helpers shared by the format readers: error text, string frames and list columns."""

from __future__ import annotations

import polars as pl

from recsys_core.data.sources.batch import ATTRIBUTE, EXTRA, InputFile


def first_line(exc: Exception) -> str:
    """The first line of an error's message (polars' can run over many lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def string_frame(names: list[str], rows: list[list]) -> pl.DataFrame:
    """Rows of text as a frame of String columns, with an Int64 `row_number`."""
    schema = {name: pl.String for name in names} | {"row_number": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def constants(file: InputFile) -> list[pl.Expr]:
    """The file's constant columns (e.g. `event_type` = `rating`) as literals."""
    return [pl.lit(value).alias(name) for name, value in file.constants]


def split_list(column: pl.Expr, separator: str) -> pl.Expr:
    """Text -> list of its non-empty, trimmed parts."""
    return (
        column.fill_null("")
        .str.split(separator)
        .list.eval(pl.element().str.strip_chars().filter(pl.element() != ""))
    )


def no_attributes() -> pl.Expr:
    """An empty `attributes` list on every row."""
    return pl.lit([], dtype=pl.List(ATTRIBUTE)).alias("attributes")


def empty_items() -> pl.DataFrame:
    """A catalog read with no rows, in the canonical columns of `read_items`."""
    return pl.DataFrame(
        schema={
            "row_number": pl.Int64, "item_id": pl.String, "title": pl.String,
            "description": pl.String, "categories": pl.List(pl.String),
            "attributes": pl.List(ATTRIBUTE), EXTRA: pl.String,
        }
    )  # fmt: skip
