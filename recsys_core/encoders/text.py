"""The canonical item text: labeled fields in a fixed order, so its hash means something."""

from __future__ import annotations

import hashlib

import polars as pl


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def build_item_text(items: pl.DataFrame) -> pl.DataFrame:
    """Add `text` and `text_hash` to catalog rows.

    Text reads "Title: ... Categories: a, b. Description: ... name: value." with empty fields
    left out; an item with no text at all gets the empty string (encoded as a zero vector).
    """

    def labeled(label: str, expr: pl.Expr) -> pl.Expr:
        value = expr.cast(pl.String).str.strip_chars()
        return pl.when(value.is_not_null() & (value != "")).then(pl.format(label + ": {}.", value))

    attributes = (
        pl.col("attributes")
        .list.eval(
            pl.format(
                "{}: {}.",
                pl.element().struct.field("name"),
                pl.element().struct.field("value").str.strip_chars(),
            )
        )
        .list.join(" ")
    )
    text = pl.concat_str(
        [
            labeled("Title", pl.col("title")),
            labeled("Categories", pl.col("categories").list.join(", ")),
            labeled("Description", pl.col("description")),
            pl.when(attributes != "").then(attributes),
        ],
        separator=" ",
        ignore_nulls=True,
    ).fill_null("")
    out = items.with_columns(text.alias("text"))
    return out.with_columns(
        pl.Series("text_hash", [text_hash(t) for t in out["text"].to_list()], dtype=pl.String)
    )
