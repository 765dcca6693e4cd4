"""RecBole atomic files (`ml-100k.inter`, `ml-100k.item`): the MovieLens-100K copy bundled
in the `recbole` wheel (the `movielens-100k` sample, which an empty data directory starts
from), or a `--movielens` folder holding them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl

from recsys_core.data.sources.batch import EXTRA, FileHeader, InputFile
from recsys_core.data.sources.files import require_file
from recsys_core.data.sources.layout import SourceLayout, register
from recsys_core.data.sources.readers.delimited import collect_csv
from recsys_core.data.sources.readers.text import no_attributes, split_list
from recsys_core.data.sources.spec import SourcePlan, SourceSpec
from recsys_core.errors import InputError

EVENTS_FILE = "ml-100k.inter"
ITEMS_FILE = "ml-100k.item"


class RecBoleLayout(SourceLayout):
    """The bundled copy (`--sample movielens-100k`, or nothing given), or a `--movielens`
    folder of atomic files."""

    name = "recbole"
    formats = ("csv",)

    def recognises(self, spec: SourceSpec) -> bool:
        folder = spec.folder
        if folder is None:
            return not spec.events
        return (folder / EVENTS_FILE).is_file()

    def plan(self, spec: SourceSpec) -> SourcePlan:
        folder = spec.folder or bundled_ml100k_dir()
        events = InputFile(
            require_file(folder / EVENTS_FILE), "events", "csv", layout=self.name,
            separator="\t", quote_char=None,
            rename=(("user_id:token", "user_id"), ("item_id:token", "item_id"),
                    ("rating:float", "value"), ("timestamp:float", "timestamp")),
            constants=(("event_type", "rating"),),
        )  # fmt: skip
        items = InputFile(
            require_file(folder / ITEMS_FILE), "items", "csv", layout=self.name,
            separator="\t", quote_char=None,
            rename=(("item_id:token", "item_id"), ("movie_title:token_seq", "title"),
                    ("release_year:token", "release_year"), ("class:token_seq", "categories")),
        )  # fmt: skip
        return SourcePlan(events=[events], items=[items])

    def read_items(self, file: InputFile, header: FileHeader) -> pl.DataFrame:
        raw = collect_csv(file, header)
        year = pl.col("release_year")
        return raw.select(
            "row_number", "item_id",
            pl.concat_str(pl.col("title"),
                          pl.when(year.is_not_null()).then(pl.format(" ({})", year))
                          .otherwise(pl.lit(""))).alias("title"),
            pl.lit(None, pl.String).alias("description"),
            split_list(pl.col("categories"), " ").alias("categories"),
            no_attributes(), EXTRA,
        )  # fmt: skip


def bundled_ml100k_dir() -> Path:
    """Folder of the MovieLens-100K copy in the `recbole` wheel (found, never imported)."""
    found = importlib.util.find_spec("recbole")
    if found is None or not found.submodule_search_locations:
        raise InputError(
            "MovieLens-100K not found: install it with `pip install --no-deps recbole==1.2.1` "
            "(make run does), or pass --movielens DIR or --events/--items"
        )
    folder = Path(next(iter(found.submodule_search_locations))) / "dataset_example" / "ml-100k"
    require_file(folder / EVENTS_FILE)
    return folder


register(RecBoleLayout())
