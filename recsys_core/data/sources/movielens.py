"""GroupLens MovieLens downloads: ml-100k (`u.data`, `u.item`) and the ml-latest family
(`ratings.csv`, `movies.csv` and optional `tags.csv`: ml-latest, ml-25m, ml-32m), detected
from the folder's files."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_core.data.sources.batch import EXTRA, FileHeader, InputFile
from recsys_core.data.sources.files import require_file
from recsys_core.data.sources.layout import SourceLayout, register
from recsys_core.data.sources.readers.delimited import collect_csv, read_latin1_csv
from recsys_core.data.sources.readers.text import no_attributes, split_list
from recsys_core.data.sources.spec import SourcePlan, SourceSpec
from recsys_core.errors import InputError

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML100K_ITEMS = "u.item"
ML_LATEST_MOVIES = "movies.csv"


class MovieLensLayout(SourceLayout):
    """A `--movielens` folder holding `u.data` or `ratings.csv`."""

    name = "movielens"
    formats = ("csv",)

    def recognises(self, spec: SourceSpec) -> bool:
        folder = spec.folder
        return folder is not None and any(
            (folder / name).is_file() for name in ("u.data", "ratings.csv")
        )

    def plan(self, spec: SourceSpec) -> SourcePlan:
        folder = spec.folder
        if folder is None:
            raise InputError("the MovieLens layout reads a --movielens folder; none was given")
        if (folder / "u.data").is_file():
            return self._plan_ml100k(folder)
        return self._plan_ml_latest(folder)

    def _plan_ml100k(self, folder: Path) -> SourcePlan:
        events = InputFile(
            folder / "u.data", "events", "csv", layout=self.name, separator="\t",
            quote_char=None, names=("user_id", "item_id", "value", "timestamp"),
            constants=(("event_type", "rating"),),
        )  # fmt: skip
        items = InputFile(
            require_file(folder / ML100K_ITEMS), "items", "csv", layout=self.name,
            separator="|", quote_char=None, encoding="latin-1",
            names=("item_id", "title", "release_date", "video_release_date", "url",
                   *ML100K_GENRES),
        )  # fmt: skip
        return SourcePlan(events=[events], items=[items])

    def _plan_ml_latest(self, folder: Path) -> SourcePlan:
        events = InputFile(
            folder / "ratings.csv", "events", "csv", layout=self.name,
            rename=(("userId", "user_id"), ("movieId", "item_id"), ("rating", "value"),
                    ("timestamp", "timestamp")),
            constants=(("event_type", "rating"),),
        )  # fmt: skip
        tags = folder / "tags.csv"
        items = InputFile(
            require_file(folder / ML_LATEST_MOVIES), "items", "csv", layout=self.name,
            rename=(("movieId", "item_id"), ("title", "title"), ("genres", "categories")),
            companions=(tags,) if tags.is_file() else (),
        )  # fmt: skip
        return SourcePlan(events=[events], items=[items])

    def read_items(self, file: InputFile, header: FileHeader) -> pl.DataFrame:
        if file.path.name == ML100K_ITEMS:
            raw = read_latin1_csv(file)
            genres = [pl.when(pl.col(g) == "1").then(pl.lit(g)) for g in ML100K_GENRES]
            return raw.select(
                "row_number", "item_id", "title", pl.lit(None, pl.String).alias("description"),
                pl.concat_list(genres).list.drop_nulls().alias("categories"),
                no_attributes(), EXTRA,
            )  # fmt: skip
        raw = collect_csv(file, header)
        description = pl.lit(None, pl.String)
        if file.companions:
            raw = raw.join(_tags(file.companions[0]), on="item_id", how="left")
            description = pl.when(pl.col("tags").is_not_null()).then(
                pl.format("Tags: {}", pl.col("tags"))
            )
        categories = split_list(pl.col("categories"), "|").list.eval(
            pl.element().filter(pl.element() != "(no genres listed)")
        )
        return raw.select(
            "row_number", "item_id", "title", description.alias("description"),
            categories.alias("categories"), no_attributes(), EXTRA,
        )  # fmt: skip


def _tags(path: Path) -> pl.DataFrame:
    """tags.csv -> one line of distinct lower-case tags per movie (its description)."""
    tags = pl.scan_csv(path, infer_schema=False, encoding="utf8-lossy")
    return (
        tags.filter(pl.col("tag").is_not_null())
        .group_by(pl.col("movieId").alias("item_id"))
        .agg(pl.col("tag").str.strip_chars().str.to_lowercase().unique().sort().head(50))
        .select("item_id", pl.col("tag").list.join(", ").alias("tags"))
        .collect()
    )


register(MovieLensLayout())
