"""Conformance checks for source layouts (`recsys_core.data.sources.LAYOUTS`).

Every layout must pass them on small examples of its own (`EXAMPLES`, by layout name): it
recognises its examples and no other layout's, plans existing files in formats it declares,
maps their headers to the canonical columns so the example's events and items read back,
reads the same events from CSV and Parquet where it supports both, and bad input is an
`InputError` naming the file. A test runs them over every registered layout, so a new
layout is checked once it is registered and has an example here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys_core.data.sources import (
    EVENT_FIELDS,
    SourceLayout,
    SourcePlan,
    SourceSpec,
    inspect,
    plan_source,
    preflight,
    read_event_batches,
    read_items,
)
from recsys_core.data.sources.batch import REQUIRED_EVENT_COLUMNS, REQUIRED_ITEM_COLUMNS
from recsys_core.errors import InputError

# (user, item, unix seconds, rating) and (item, title): what every example holds
EXAMPLE_EVENTS = (
    ("1", "10", 1_700_000_000, 4.0),
    ("2", "20", 1_700_000_100, 3.0),
    ("1", "20", 1_700_000_200, 5.0),
)
EXAMPLE_ITEMS = (("10", "Heat"), ("20", "Fargo"))


@dataclass(frozen=True)
class LayoutExample:
    """A small source of one layout, written into a folder on demand.

    Args:
        name: Names the example in test ids.
        write: (folder, format) -> the spec of the source it wrote there.
    """

    name: str
    write: Callable[[Path, str], SourceSpec]


def _write_ml100k(folder: Path, fmt: str) -> SourceSpec:
    rows = [f"{u}\t{i}\t{v:g}\t{t}" for u, i, t, v in EXAMPLE_EVENTS]
    (folder / "u.data").write_text("\n".join(rows) + "\n")
    genres = ["0"] * 19
    lines = ["|".join([i, title, "01-Jan-1995", "", "http://x", *genres]) for i, title in
             EXAMPLE_ITEMS]  # fmt: skip
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return SourceSpec(movielens=str(folder))


def _write_ml_latest(folder: Path, fmt: str) -> SourceSpec:
    rows = [f"{u},{i},{v},{t}" for u, i, t, v in EXAMPLE_EVENTS]
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows))
    movies = [f"{i},{title},Drama" for i, title in EXAMPLE_ITEMS]
    (folder / "movies.csv").write_text("movieId,title,genres\n" + "\n".join(movies) + "\n")
    (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,10,heist,1\n")
    return SourceSpec(movielens=str(folder))


def _write_recbole(folder: Path, fmt: str) -> SourceSpec:
    rows = [f"{u}\t{i}\t{v}\t{t}" for u, i, t, v in EXAMPLE_EVENTS]
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    (folder / "ml-100k.inter").write_text(header + "\n".join(rows) + "\n")
    items = [f"{i}\t{title}\t1995\tDrama" for i, title in EXAMPLE_ITEMS]
    header = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    (folder / "ml-100k.item").write_text(header + "\n".join(items) + "\n")
    return SourceSpec(movielens=str(folder))


def _write_generic(folder: Path, fmt: str) -> SourceSpec:
    events = pl.DataFrame(
        [(u, i, t, v) for u, i, t, v in EXAMPLE_EVENTS],
        schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64,
                "value": pl.Float64},
        orient="row",
    )  # fmt: skip
    items = pl.DataFrame(list(EXAMPLE_ITEMS), schema=["item_id", "title"], orient="row")
    suffix = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}[fmt]
    paths = folder / f"events.{suffix}", folder / f"items.{suffix}"
    for frame, path in zip((events, items), paths, strict=True):
        {"csv": frame.write_csv, "jsonl": frame.write_ndjson, "parquet": frame.write_parquet}[fmt](
            path
        )
    return SourceSpec(events=(str(paths[0]),), items=str(paths[1]))


EXAMPLES: dict[str, tuple[LayoutExample, ...]] = {
    "movielens": (
        LayoutExample("ml-100k", _write_ml100k),
        LayoutExample("ml-latest", _write_ml_latest),
    ),
    "recbole": (LayoutExample("recbole-folder", _write_recbole),),
    "generic": (LayoutExample("generic", _write_generic),),
}


# -- the checks ------------------------------------------------------------------------------
def check_recognises_own_only(
    layout: SourceLayout, own: SourceSpec, others: Sequence[SourceSpec]
) -> None:
    """`layout` recognises its own example and none of the other layouts' examples."""
    assert layout.recognises(own), f"{layout.name} does not recognise its example {own}"
    for spec in others:
        assert not layout.recognises(spec), f"{layout.name} also recognises {spec}"


def check_plans_files(layout: SourceLayout, spec: SourceSpec) -> SourcePlan:
    """The layout plans existing event and item files it owns, in formats it declares, and
    planning the spec through the registry picks this layout."""
    plan = layout.plan(spec)
    assert plan.events and plan.items, f"{layout.name} planned no events or no items"
    for file in [*plan.events, *plan.items]:
        assert file.path.is_file(), f"{file.path} is planned but missing"
        assert file.layout == layout.name, f"{file.path} is planned as {file.layout}"
        assert file.fmt in layout.formats, f"{file.path}: {file.fmt} not in {layout.formats}"
    assert plan_source(spec) == plan, f"the registry does not pick {layout.name} for {spec}"
    return plan


def check_maps_headers(layout: SourceLayout, spec: SourceSpec) -> None:
    """Headers map to the canonical columns, so the example's events and items read back."""
    plan = layout.plan(spec)
    for file in plan.events:
        header = inspect(file)
        have = set(header.used.values()) | {name for name, _ in file.constants}
        assert set(REQUIRED_EVENT_COLUMNS) <= have, f"{file.path}: {header.used}"
    for file in plan.items:
        assert set(REQUIRED_ITEM_COLUMNS) <= set(inspect(file).used.values())
    assert read_events(plan) == sorted(EXAMPLE_EVENTS)
    items = pl.concat([read_items(file, inspect(file)) for file in plan.items])
    titles = dict(zip(items["item_id"], items["title"], strict=True))
    assert sorted(titles) == sorted(i for i, _ in EXAMPLE_ITEMS)
    for item, title in EXAMPLE_ITEMS:
        assert titles[item].startswith(title), f"{item}: {titles[item]!r}, not {title!r}"


def check_formats_agree(layout: SourceLayout, example: LayoutExample, root: Path) -> None:
    """The example written as CSV and as Parquet reads the same events."""
    read = {}
    for fmt in ("csv", "parquet"):
        folder = root / fmt
        folder.mkdir(parents=True)
        read[fmt] = read_events(layout.plan(example.write(folder, fmt)))
    assert read["csv"] == read["parquet"] == sorted(EXAMPLE_EVENTS)


def check_bad_input_names_file(layout: SourceLayout, spec: SourceSpec) -> None:
    """A missing file, and a file that is not what the layout expects, are `InputError`s
    naming the file (a missing file that makes a folder unrecognisable may name the folder
    instead: the error then says which files it expected)."""
    plan = layout.plan(spec)
    for file in [*plan.events, *plan.items]:
        content = file.path.read_bytes()
        file.path.unlink()
        try:
            message = _input_error(spec)
            named = str(file.path) in message or (
                str(file.path.parent) in message and "expected" in message
            )
            assert named, f"missing {file.path}: {message!r}"
        finally:
            file.path.write_bytes(content)
        broken = _broken(file.fmt, file.separator, has_header=not file.names)
        if broken is None:  # a headerless text file cannot lack a column
            continue
        file.path.write_bytes(broken)
        try:
            message = _input_error(spec)
            assert str(file.path) in message, f"broken {file.path}: {message!r}"
        finally:
            file.path.write_bytes(content)


def read_events(plan: SourcePlan) -> list[tuple[str, str, int, float]]:
    """(user, item, seconds, value) of every event in the plan's files, sorted, read raw."""
    rows = []
    for file in plan.events:
        for batch in read_event_batches(file, inspect(file)):
            text = batch.select(EVENT_FIELDS)
            for user, item, timestamp, _, value in text.iter_rows():
                rows.append((user, item, int(float(timestamp)), float(value)))
    return sorted(rows)


def _input_error(spec: SourceSpec) -> str:
    try:
        preflight(spec)
    except InputError as exc:
        return str(exc)
    raise AssertionError(f"{spec}: bad input passed preflight")


def _broken(fmt: str, separator: str, *, has_header: bool) -> bytes | None:
    if fmt == "parquet":
        return b"not a parquet file"
    if fmt == "jsonl":
        return b'{"nothing": "useful"}\n'
    if not has_header:
        return None
    return f"nothing{separator}useful\n1{separator}2\n".encode()
