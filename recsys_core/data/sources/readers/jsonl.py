"""JSONL files: one JSON object per line. Keys of the first lines make the header; a line
that is not one object becomes a row with null fields and the line in `extra_fields`, so
validation quarantines it instead of failing the file."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl

from recsys_core.data.sources.batch import EXTRA, FileHeader, InputFile
from recsys_core.data.sources.readers.text import constants, first_line
from recsys_core.errors import InputError

JSON_SAMPLE_LINES = 1000  # lines read to learn a JSONL file's keys


def scan_lines(path: Path) -> pl.LazyFrame:
    """Each physical line as text (a BOM and CR line ends removed, bad UTF-8 replaced)."""
    return pl.scan_csv(
        path, has_header=False, separator="\x1f", quote_char=None,
        schema={"line": pl.String}, encoding="utf8-lossy", raise_if_empty=False,
        row_index_name="row_number", row_index_offset=1,
    )  # fmt: skip


def read_keys(path: Path) -> list[str]:
    """Keys of the objects in the first lines (a JSONL file has no header).

    Raises:
        InputError: The file cannot be read (naming it).
    """
    try:
        lines = scan_lines(path).head(JSON_SAMPLE_LINES).collect()["line"]
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{path}: cannot be read: {first_line(exc)}") from None
    keys: dict[str, None] = {}
    for line in lines.drop_nulls():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            keys.update(dict.fromkeys(record))
    return list(keys)


def jsonl_batches(
    file: InputFile, header: FileHeader, fields: Sequence[str], batch_rows: int
) -> Iterator[pl.DataFrame]:
    """JSON objects per line; a line that is not one object gets `extra_fields` = the line
    and null fields, so validation quarantines it."""
    used = {dst: src for src, dst in header.used.items() if dst in fields}
    dtype = pl.Struct({src: pl.String for src in used.values()})
    try:
        yield from _decoded_jsonl(file, used, dtype, fields, batch_rows)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{file.path}: cannot be read: {first_line(exc)}") from None


def _decoded_jsonl(
    file: InputFile, used: dict[str, str], dtype: pl.Struct, fields: Sequence[str], batch_rows: int
) -> Iterator[pl.DataFrame]:
    for batch in scan_lines(file.path).collect_batches(chunk_size=batch_rows):
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
        ).with_columns(constants(file))


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
