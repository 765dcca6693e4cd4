"""Row checks for events and catalog rows, declared as dataframely schemas.

Events are parsed in two steps: `prepare_events` adds the parsed columns as expressions that
polars evaluates while it streams the file (ids trimmed, integer timestamps to numbers,
numbers to floats), and `check_events` turns epoch numbers into UTC times in the file's unit
(seconds, or milliseconds, microseconds or nanoseconds as `epoch_unit` finds them), finishes
the rare rows the fast path left (ISO-8601 text, decimal numbers) and filters the batch by a
dataframely schema: rows that pass are stored,
rows that fail go to the `quarantine` table with a reason code and a sentence naming the
column and the value. Catalog rows are checked whole by `check_items`.

Why dataframely rather than pandera.polars: its `Schema.filter` returns the valid rows and,
for the others, which rule failed per row, which is exactly a quarantine; it is polars-only
(no pandas layer) and checks data on lazy and eager frames alike, while pandera's polars
backend skips data checks on lazy frames unless an environment variable says otherwise.

Flags (the `quality` column) mark rows that are kept but not clean: `lossy_utf8` (invalid
UTF-8 was replaced by U+FFFD), and for items `empty_text` and `text_truncated`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dataframely as dy
import polars as pl

from recsys_core import schemas
from recsys_core.data.sources.batch import EXTRA, FileHeader, InputFile, batch_column
from recsys_core.encoders.text import build_item_text

EARLIEST_EVENT = datetime(1995, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)  # clocks drift; more than this ahead is an error
DEFAULT_EVENT_TYPE = "interaction"
DEFAULT_VALUE = 1.0
REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True)
class Reason:
    """Why a row is quarantined: the sentence stored as its `detail`, with `{}` where the
    row's text of `column` is quoted.

    Args:
        detail: The sentence.
        column: The column whose text fills `{}`; None for a sentence without a value.
    """

    detail: str
    column: str | None = None

    def expression(self) -> pl.Expr:
        """The `detail` of each row, as a polars expression."""
        return pl.lit(self.detail) if self.column is None else pl.format(self.detail, self.column)


REASONS: dict[str, Reason] = {
    "empty_row": Reason("the row has no fields"),
    "malformed_json": Reason("the line is not one JSON object"),
    "wrong_field_count": Reason("more fields than the header names (extra: '{}')", EXTRA),
    "missing_user_id": Reason("user_id is null or empty"),
    "missing_item_id": Reason("item_id is null or empty"),
    "bad_timestamp": Reason(
        "timestamp '{}' is neither unix epoch time nor ISO-8601", "timestamp_text"
    ),
    "missing_timestamp": Reason("timestamp is null or empty"),
    "timestamp_too_old": Reason("timestamp '{}' is before 1995-01-01", "timestamp_text"),
    "timestamp_in_future": Reason(
        "timestamp '{}' is more than a day after ingestion", "timestamp_text"
    ),
    "bad_value": Reason("value '{}' is not a finite number", "value_text"),
}
FLAGS: dict[str, str] = {
    "lossy_utf8": "invalid UTF-8 was replaced by U+FFFD",
    "empty_text": "the item has no text (title, categories, description, attributes)",
    "text_truncated": "a text field was cut to the configured maximum length",
}


class EventRow(dy.Schema):
    """One parsed event; each failing rule is a quarantine reason (see `_EVENT_REASONS`)."""

    row_number = dy.Int64(nullable=False)
    # non-empty ids are rules on the byte length, which a string column knows without
    # reading the text (a minimum length in characters would count each string's chars)
    user_id = dy.String(nullable=False)
    item_id = dy.String(nullable=False)
    timestamp = dy.Datetime(nullable=False, time_zone="UTC", time_unit="us", min=EARLIEST_EVENT)
    event_type = dy.String(nullable=False)  # never empty: a blank one is the default type
    value = dy.Float64(nullable=False)  # NaN and infinities fail too
    ingested_at = dy.Datetime(nullable=False, time_zone="UTC", time_unit="us")
    quality = dy.String(nullable=True)
    # the text as read, kept so a failing row can say what was wrong with it
    timestamp_text = dy.String(nullable=True)
    value_text = dy.String(nullable=True)
    extra_fields = dy.String(nullable=True)

    @dy.rule()
    def fields_match_header(cls) -> pl.Expr:
        return pl.col(EXTRA).is_null()

    @dy.rule()
    def user_id_not_empty(cls) -> pl.Expr:
        return pl.col("user_id").str.len_bytes() > 0

    @dy.rule()
    def item_id_not_empty(cls) -> pl.Expr:
        return pl.col("item_id").str.len_bytes() > 0

    @dy.rule()
    def timestamp_readable(cls) -> pl.Expr:
        return pl.col("timestamp_text").is_null() | pl.col("timestamp").is_not_null()

    @dy.rule()
    def timestamp_not_in_future(cls) -> pl.Expr:
        return pl.col("timestamp") <= pl.col("ingested_at") + FUTURE_SLACK

    @dy.rule()
    def value_readable(cls) -> pl.Expr:
        return pl.col("value_text").is_null() | pl.col("value").is_not_null()


class ItemRow(dy.Schema):
    """One catalog row; only an id is required (an item without text is flagged, kept)."""

    row_number = dy.Int64(nullable=False)
    item_id = dy.String(nullable=False, min_length=1)
    title = dy.String(nullable=True)
    description = dy.String(nullable=True)
    categories = dy.List(dy.String(nullable=True), nullable=True)
    attributes = dy.List(
        dy.Struct({"name": dy.String(nullable=True), "value": dy.String(nullable=True)}),
        nullable=True,
    )
    extra_fields = dy.String(nullable=True)

    @dy.rule()
    def fields_match_header(cls) -> pl.Expr:
        return pl.col(EXTRA).is_null()


# failing rule -> reason code, in order of precedence (a row gets the first that applies)
_EVENT_REASONS: dict[str, str] = {
    "fields_match_header": "wrong_field_count",
    "user_id|nullability": "missing_user_id",
    "user_id_not_empty": "missing_user_id",
    "item_id|nullability": "missing_item_id",
    "item_id_not_empty": "missing_item_id",
    "timestamp_readable": "bad_timestamp",
    "timestamp|nullability": "missing_timestamp",
    "timestamp|min": "timestamp_too_old",
    "timestamp_not_in_future": "timestamp_in_future",
    "value_readable": "bad_value",
    "value|nullability": "bad_value",
    "value|nan": "bad_value",
    "value|inf": "bad_value",
}
_ITEM_REASONS: dict[str, str] = {
    "fields_match_header": "wrong_field_count",
    "item_id|nullability": "missing_item_id",
    "item_id|min_length": "missing_item_id",
}


@dataclass
class Checked:
    """Rows that passed, quarantine rows for those that did not, and counts of flags."""

    valid: pl.DataFrame
    quarantine: pl.DataFrame
    flags: dict[str, int] = field(default_factory=dict)


# -- events ----------------------------------------------------------------------------------
def prepare_events(
    frame: pl.LazyFrame, *, trim: bool = True, check_utf8: bool = True
) -> pl.LazyFrame:
    """Add the parsed event columns to raw string columns, as expressions, so polars'
    streaming reader computes them in parallel with reading.

    Parsed columns are prefixed with `_` (the raw text stays, for quarantined rows):
    `_user_id`, `_item_id`, `_event_type`, `_timestamp_number` (an integer epoch timestamp in
    the file's unit, which `check_events` is told; other forms are parsed there), `_value`,
    `_timestamp_text`, `_value_text` (null when blank), plus `quality` when `check_utf8`
    (without it every row is clean).

    Args:
        frame: From `sources.read_event_batches` (before collecting).
        trim: Strip surrounding blanks; False when the file has no space or tab at all
            (see `sources.file_facts`), which saves a pass over every text column.
        check_utf8: Look for replaced invalid UTF-8; False when the file is valid UTF-8.
    """

    def text(name: str) -> pl.Expr:
        value = pl.col(name).str.strip_chars() if trim else pl.col(name)
        return pl.when(value != "").then(value)  # empty means absent

    number = text("timestamp").cast(pl.Int64, strict=False)
    value = text("value").cast(pl.Float64, strict=False)
    quality = []
    if check_utf8:
        lossy = pl.any_horizontal(
            pl.col(c).str.contains(REPLACEMENT_CHAR, literal=True).fill_null(False)
            for c in ("user_id", "item_id", "event_type")
        )
        quality.append(pl.when(lossy).then(pl.lit("lossy_utf8")).alias("quality"))
    return frame.with_columns(
        (pl.col(c).str.strip_chars() if trim else pl.col(c)).alias(f"_{c}")
        for c in ("user_id", "item_id")
    ).with_columns(
        text("event_type").fill_null(DEFAULT_EVENT_TYPE).alias("_event_type"),
        text("timestamp").alias("_timestamp_text"),
        text("value").alias("_value_text"),
        number.alias("_timestamp_number"),
        pl.when(text("value").is_null())
        .then(pl.lit(DEFAULT_VALUE))
        .otherwise(value)
        .alias("_value"),
        *quality,
    )


def check_events(
    batch: pl.DataFrame,
    file: InputFile,
    header: FileHeader,
    now: datetime,
    passthrough: Sequence[str] = (),
    unit: str = "s",
) -> Checked:
    """Check one prepared batch (see `prepare_events`).

    Args:
        batch: Raw columns (`row_number`, the event fields, `extra_fields`, any unknown
            columns) plus the parsed `_` columns.
        file: The file the batch came from (its name and format go into quarantine rows).
        header: The file's header (its column order rebuilds a quarantined row's text).
        now: Ingestion time (`ingested_at` of the valid rows and of quarantine rows).
        passthrough: Columns of `batch` to keep on the valid rows (e.g. precomputed keys).
        unit: The unit of the file's epoch timestamps (`EPOCH_UNITS`; see `epoch_unit`).

    Returns:
        `valid`: the `events` columns plus `event_date`; `quarantine`: rows of the
        `quarantine` table; `flags`: {"lossy_utf8": n} when any.
    """
    # whole columns are picked and renamed rather than selected by expressions: a batch is
    # wide, and every query over it costs a pass over all of its columns. Values that are
    # the same on every row are literals: a column of one chunk among the batch's columns
    # of many would make each query copy them all to line the chunks up.
    numbers = batch["_timestamp_number"]
    timestamps = _finish_timestamps(epoch_to_time(numbers, unit), batch["_timestamp_text"], unit)
    columns = [
        batch["row_number"],
        *[batch[f"_{c}"].alias(c) for c in ("user_id", "item_id", "event_type", "value")],
        timestamps.alias("timestamp"),
        batch["_timestamp_text"].alias("timestamp_text"),
        batch["_value_text"].alias("value_text"),
        batch[EXTRA],
    ]
    ingested_at = pl.lit(now).cast(schemas.UTC_TIME).alias("ingested_at")
    clean = pl.lit(None, pl.String).alias("quality")
    flagged = "quality" in batch.columns and batch["quality"].null_count() < batch.height
    if flagged:
        columns.append(batch["quality"])
    typed = pl.DataFrame(columns).with_columns(ingested_at, *([] if flagged else [clean]))
    # only the failing rows are collected (the passing ones are the rest, in order): a
    # clean batch is checked without copying it, and its columns keep lining up with the
    # passthrough ones
    failure = EventRow.filter(typed.lazy()).failure
    failed = len(failure)
    good = typed
    if failed:
        bad = failure.invalid()["row_number"].implode()
        good = typed.filter(~pl.col("row_number").is_in(bad))
    kept = [good[c] for c in ("user_id", "item_id", "timestamp", "event_type", "value")]
    kept += [good["quality"]] if flagged else []
    kept += [utc_date(good["timestamp"]).alias("event_date")]
    if passthrough:
        extra = batch[list(passthrough)]
        if failed:  # the same rows as `good`, in the same order
            extra = extra.filter(~batch["row_number"].is_in(bad))
        kept += extra.get_columns()
    # literals also stay one value however the rows are cut later
    literals = [pl.lit(file.label).alias("source"), ingested_at, *([] if flagged else [clean])]
    valid = pl.DataFrame(kept).with_columns(literals)
    valid = valid[[*schemas.EVENTS.names(), *passthrough]]
    lossy = valid.height - valid["quality"].null_count() if flagged else 0
    if failed:
        columns = [batch_column(header, c) for c in header.columns]
        raw = batch.select(pl.exclude("^_.*$", "ingested_at", "quality"))
        quarantine = _quarantine(failure, raw, file, now, _EVENT_REASONS, columns, kind="events")
    else:
        quarantine = empty_quarantine()
    return Checked(valid=valid, quarantine=quarantine, flags={"lossy_utf8": lossy} if lossy else {})


_DAY_US = 86_400_000_000


def utc_date(timestamps: pl.Series) -> pl.Series:
    """The UTC date of UTC timestamps, by whole days since the epoch (the same as
    `dt.date()`, without the time zone lookup per value)."""
    return (timestamps.to_physical() // _DAY_US).cast(pl.Int32).cast(pl.Date)


def _finish_timestamps(parsed: pl.Series, text: pl.Series, unit: str) -> pl.Series:
    """Parse the timestamps the integer fast path left (ISO text, decimal numbers)."""
    todo = parsed.is_null() & text.is_not_null()
    if not todo.any():
        return parsed
    where = todo.arg_true()
    return parsed.scatter(where, parse_timestamps(text.gather(where), unit))


# epoch units: microseconds per unit, and what a report calls them
EPOCH_UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
# the largest magnitude of each unit, below the next: 1e11 seconds is the year 5138, and
# 1e11 milliseconds 1973, before the earliest event kept, so the ranges of dates a log can
# hold never overlap
_UNIT_BOUNDS = (("s", 1e11), ("ms", 1e14), ("us", 1e17))


def epoch_unit(text: pl.Series) -> str | None:
    """The unit of epoch timestamps from their magnitude: `s`, `ms`, `us` or `ns` (by the
    median of the numbers among `text`, so a few stray values do not decide); None when no
    value is a number (ISO-8601 text).

    Args:
        text: Timestamp text, e.g. a file's first batch.
    """
    numbers = text.cast(pl.Float64, strict=False).abs().drop_nulls().drop_nans()
    if numbers.is_empty():
        return None
    median = numbers.median()
    return next((unit for unit, bound in _UNIT_BOUNDS if median < bound), "ns")


def epoch_to_time(numbers: pl.Series, unit: str) -> pl.Series:
    """Integer epoch timestamps in `unit` -> UTC times; null where microseconds would
    overflow (such a value is unreadable, not wrapped around)."""
    if unit == "ns":
        micros = numbers // 1_000
    else:
        factor = EPOCH_UNITS[unit]
        fits = numbers.abs() < _MAX_MICROS // factor
        micros = numbers * factor
        if not fits.all():
            micros = pl.select(pl.when(fits).then(micros)).to_series()
    return micros.cast(schemas.UTC_TIME)


ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M%:z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)
_MAX_MICROS = 9_000_000_000_000_000_000  # about the largest int64


def parse_timestamps(text: pl.Series, unit: str = "s") -> pl.Series:
    """Unix epoch numbers (integer or decimal, in `unit`) or ISO-8601 text -> UTC datetimes;
    null if neither.

    Integers, by far the most common, take one cast; only the rows that are not integers
    pay for decimal and ISO parsing. ISO text may use 'T' or a space, 'Z' or an offset
    (converted to UTC); text without an offset is taken as UTC.

    Args:
        text: Timestamp text (null where absent).
        unit: The unit of epoch numbers: `s` (seconds), `ms`, `us` or `ns`.
    """
    parsed = epoch_to_time(text.cast(pl.Int64, strict=False), unit)
    todo = parsed.is_null() & text.is_not_null()
    if not todo.any():
        return parsed.alias(text.name)
    rest = text.filter(todo)
    values = pl.select(_parse_text_timestamps(pl.lit(rest), EPOCH_UNITS[unit])).to_series()
    return parsed.scatter(todo.arg_true(), values).alias(text.name)


def _parse_text_timestamps(text: pl.Expr, factor: float) -> pl.Expr:
    number = text.cast(pl.Float64, strict=False)
    from_seconds = (
        pl.when(number.abs() < _MAX_MICROS / factor)
        .then((number * factor).cast(pl.Int64, strict=False))
        .cast(schemas.UTC_TIME)
    )
    iso = text.str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T").str.replace(r"Z$", "+00:00")
    parsed = []
    for fmt in ISO_FORMATS:
        value = iso.str.to_datetime(format=fmt, strict=False, time_unit="us")
        zoned = "%:z" in fmt
        parsed.append(
            value.dt.convert_time_zone("UTC") if zoned else value.dt.replace_time_zone("UTC")
        )
    return pl.when(number.is_not_null()).then(from_seconds).otherwise(pl.coalesce(parsed))


# -- items -----------------------------------------------------------------------------------
def check_items(
    raw: pl.DataFrame, file: InputFile, now: datetime, max_text_chars: int = 20_000
) -> Checked:
    """Check catalog rows from `sources.read_items` and build their canonical text.

    Args:
        raw: Canonical item columns with `row_number` and `extra_fields`.
        file: The file they came from.
        now: Ingestion time (`updated_at`).
        max_text_chars: Longer title, description or attribute values are cut (and flagged).

    Returns:
        `valid`: rows with the `items` columns (text, text_hash, quality), in file order,
        repeated ids included (see `latest_items`); `quarantine`; `flags` counted per flag.
    """
    typed = raw.with_columns(
        pl.col("item_id").str.strip_chars(),
        pl.col("title").str.strip_chars(),
        pl.col("description").str.strip_chars(),
    )
    good, failure = ItemRow.filter(typed)
    too_long = pl.any_horizontal(
        pl.col("title").str.len_chars() > max_text_chars,
        pl.col("description").str.len_chars() > max_text_chars,
        pl.col("attributes")
        .list.eval(pl.element().struct.field("value").str.len_chars() > max_text_chars)
        .list.any(),
    ).fill_null(False)
    cut = good.with_columns(too_long.alias("truncated")).with_columns(
        pl.col("title").str.slice(0, max_text_chars),
        pl.col("description").str.slice(0, max_text_chars),
        pl.col("attributes").list.eval(
            pl.struct(
                pl.element().struct.field("name"),
                pl.element().struct.field("value").str.slice(0, max_text_chars),
            )
        ),
    )
    texts = build_item_text(cut.with_columns(pl.col("categories").fill_null([])))
    lossy = texts["text"].str.contains(REPLACEMENT_CHAR, literal=True) | texts[
        "item_id"
    ].str.contains(REPLACEMENT_CHAR, literal=True)
    flags = {
        "lossy_utf8": lossy,
        "empty_text": texts["text"] == "",
        "text_truncated": texts["truncated"],
    }
    quality = pl.concat_str(
        [pl.when(pl.lit(mask)).then(pl.lit(name)) for name, mask in flags.items()],
        separator=",",
        ignore_nulls=True,
    )
    valid = texts.with_columns(
        pl.when(quality != "").then(quality).alias("quality"),
        pl.lit(now).cast(schemas.UTC_TIME).alias("updated_at"),
    ).select(*schemas.ITEMS.names())
    quarantine = _quarantine(failure, raw, file, now, _ITEM_REASONS, None, kind="items")
    counts = {name: int(mask.sum()) for name, mask in flags.items() if mask.any()}
    return Checked(valid=valid, quarantine=quarantine, flags=counts)


def latest_items(items: pl.DataFrame) -> pl.DataFrame:
    """One row per item id: a repeated id keeps its last row (the latest wins)."""
    return items.unique("item_id", keep="last", maintain_order=True)


# -- quarantine ------------------------------------------------------------------------------
def _quarantine(
    failure: dy.FailureInfo,
    raw: pl.DataFrame,
    file: InputFile,
    now: datetime,
    reasons: dict[str, str],
    columns: list[str] | None,
    *,
    kind: str,
) -> pl.DataFrame:
    """Quarantine rows for the rows that failed: reason, detail and the raw text.

    Args:
        failure: From dataframely's `Schema.filter`.
        raw: The batch as read (for the raw text).
        file: Where it came from.
        now: Ingestion time.
        reasons: Failing rule -> reason code, in order of precedence.
        columns: The file's columns as named in `raw`, in file order (CSV events).
        kind: `events` or `items`.
    """
    if len(failure) == 0:
        return empty_quarantine()
    details = failure.details()
    rules = [c for c, dtype in details.schema.items() if dtype == _RESULT]
    ordered = [rule for rule in reasons if rule in rules]
    ordered += [rule for rule in rules if rule not in reasons]
    reason = pl.coalesce(
        pl.when(pl.col(rule) == "invalid").then(pl.lit(reasons.get(rule, rule))) for rule in ordered
    )
    rows = details.select("row_number", reason.alias("reason"), *_detail_inputs(details))
    raw = raw.filter(pl.col("row_number").is_in(rows["row_number"].implode()))  # only these
    rows = rows.join(_raw_text(raw, file, columns), on="row_number", how="left")
    if columns is not None:
        # a blank line, or a JSONL line that is not an object, is named as such
        present = [c for c in columns if c in raw.columns]
        blank = pl.all_horizontal(
            pl.lit(True), *[pl.col(c).fill_null("").str.strip_chars() == "" for c in present]
        ) & (pl.col(EXTRA).fill_null("").str.strip_chars() == "")
        text = raw.select("row_number", blank.alias("blank"))
        rows = rows.join(text, on="row_number", how="left").with_columns(
            pl.when(pl.col("blank"))
            .then(pl.lit("empty_row"))
            .when(pl.lit(file.fmt == "jsonl") & pl.col(EXTRA).is_not_null())
            .then(pl.lit("malformed_json"))
            .otherwise(pl.col("reason"))
            .alias("reason")
        )
    detail = pl.coalesce(
        *[
            pl.when(pl.col("reason") == code).then(reason.expression())
            for code, reason in REASONS.items()
        ],
        pl.col("reason"),
    )
    return rows.select(
        pl.col("raw").fill_null(""),
        pl.lit(file.label).alias("source_file"),
        "row_number",
        "reason",
        detail.alias("detail"),
        pl.lit(kind).alias("kind"),
        pl.lit(now).cast(schemas.UTC_TIME).alias("ingested_at"),
    ).sort("row_number")


_RESULT = pl.Enum(["valid", "invalid", "unknown"])


def _detail_inputs(details: pl.DataFrame) -> list[pl.Expr]:
    wanted = (EXTRA, "timestamp_text", "value_text")
    return [
        (pl.col(c).cast(pl.String) if c in details.columns else pl.lit(None, pl.String)).alias(c)
        for c in wanted
    ]


def _raw_text(raw: pl.DataFrame, file: InputFile, columns: list[str] | None) -> pl.DataFrame:
    """The row as text: CSV fields re-joined by the separator in file order (quoted where
    needed), the line itself for JSONL, and a JSON object of the values otherwise."""
    if "raw" in raw.columns:
        return raw.select("row_number", "raw")
    if file.fmt != "csv" or columns is None:
        fields = [c for c in raw.columns if c not in ("row_number", EXTRA)]
        values = pl.struct(pl.col(fields).cast(pl.String) if columns else pl.col(fields))
        return raw.select("row_number", values.struct.json_encode().alias("raw"))
    special = f'[{_escape(file.separator)}"\r\n]'
    quoted = [
        pl.when(pl.col(c).str.contains(special))
        .then(pl.format('"{}"', pl.col(c).str.replace_all('"', '""', literal=True)))
        .otherwise(pl.col(c))
        .fill_null("")
        for c in columns
    ]
    joined = pl.concat_str(quoted, separator=file.separator)
    extra = pl.when(pl.col(EXTRA).is_not_null()).then(
        pl.format("{}{}", pl.lit(file.separator), pl.col(EXTRA))
    )
    return raw.select("row_number", pl.concat_str([joined, extra], ignore_nulls=True).alias("raw"))


def _escape(char: str) -> str:
    return "\\t" if char == "\t" else ("\\" + char if char in "\\^]-[" else char)


# -- empty frames ----------------------------------------------------------------------------
def empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=schemas.EVENTS)


def empty_items() -> pl.DataFrame:
    return pl.DataFrame(schema=schemas.ITEMS)


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=schemas.QUARANTINE)
