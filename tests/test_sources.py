from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recsys_core.data import validation
from recsys_core.data.sources import (
    EVENT_FIELDS,
    SourceSpec,
    bundled_ml100k_dir,
    expand_paths,
    file_facts,
    inspect,
    plan_source,
    preflight,
    read_event_batches,
    read_items,
)
from recsys_core.data.validation import parse_timestamps
from recsys_core.errors import InputError


@dataclass
class SourceData:
    """A whole source read into memory: checked events and items, and quarantined rows."""

    events: pl.DataFrame
    items: pl.DataFrame
    quarantine: pl.DataFrame


def read_source(spec: SourceSpec, now: datetime | None = None) -> SourceData:
    """Read and check a whole source in memory, as ingestion does batch by batch (events
    keep their order; duplicates are not removed here)."""
    now = now or datetime.now(UTC)
    plan = plan_source(spec)
    events, items, quarantine = [], [], []
    for file in plan.events:
        header = inspect(file)
        for batch in read_event_batches(file, header, prepare=validation.prepare_events):
            checked = validation.check_events(batch, file, header, now)
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
    )


def test_bundled_movielens_100k():
    data = read_source(SourceSpec())
    assert data.events.height == 100_000
    assert data.events["user_id"].n_unique() == 943
    assert data.items.height == 1682
    assert data.quarantine.is_empty()
    toy = data.items.filter(pl.col("item_id") == "1").row(0, named=True)
    assert toy["title"] == "Toy Story (1995)"
    assert "Animation" in toy["categories"]
    assert data.events.schema["timestamp"] == pl.Datetime("us", "UTC")


def test_grouplens_ml100k_layout_is_detected(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t4\t881250949\n2\t10\t3\t881250950\n")
    flags = ["0"] * 19
    flags[1] = "1"  # Action
    line = "|".join(["10", "Café Story (1995)", "01-Jan-1995", "", "http://x", *flags])
    (tmp_path / "u.item").write_bytes((line + "\n").encode("latin-1"))
    data = read_source(SourceSpec(movielens=str(tmp_path)))
    assert data.events.height == 2
    item = data.items.row(0, named=True)
    assert item["title"] == "Café Story (1995)" and item["categories"] == ["Action"]


def test_ml_latest_layout_uses_tags_as_text(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,5,4.0,1000000000\n")
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n5,"Heat (1995)",Action|Crime\n')
    (tmp_path / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,5,Heist,1\n2,5,heist,2\n")
    data = read_source(SourceSpec(movielens=str(tmp_path)))
    item = data.items.row(0, named=True)
    assert item["categories"] == ["Action", "Crime"]
    assert item["description"] == "Tags: heist"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_generic_formats_and_timestamps(tmp_path, fmt):
    events = pl.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "item_id": ["a", "b", "a"],
            "timestamp": ["1700000000", "2023-11-14T22:13:21Z", "2023-11-14 22:13:22"],
            "value": ["2.5", "1", None],
        }
    )
    items = pl.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"], "brand": ["x", None]})
    paths = tmp_path / f"e.{fmt}", tmp_path / f"i.{fmt}"
    for frame, path in zip((events, items), paths, strict=True):
        {"csv": frame.write_csv, "jsonl": frame.write_ndjson, "parquet": frame.write_parquet}[fmt](
            path
        )
    data = read_source(SourceSpec(events=(str(paths[0]),), items=str(paths[1])))
    assert data.events.height == 3
    seconds = data.events["timestamp"].dt.epoch("s").to_list()
    assert seconds == [1_700_000_000, 1_700_000_001, 1_700_000_002]
    assert data.events["value"].to_list() == [2.5, 1.0, 1.0]
    assert data.events["event_type"].unique().to_list() == ["interaction"]
    brand = data.items.filter(pl.col("item_id") == "a")["attributes"][0].to_list()
    assert brand == [{"name": "brand", "value": "x"}]


def test_bad_rows_are_quarantined_with_a_reason(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text(
        "user_id,item_id,timestamp,value\n"
        "u1,a,1700000000,1\n"
        ",a,1700000000,1\n"
        "u2,,1700000000,1\n"
        "u3,a,yesterday,1\n"
        "u4,a,1700000000,lots\n"
    )
    items = tmp_path / "i.csv"
    items.write_text("item_id,title\na,A\n")
    data = read_source(SourceSpec(events=(str(path),), items=str(items)))
    assert data.events.height == 1
    reasons = dict(zip(data.quarantine["row_number"], data.quarantine["reason"], strict=True))
    assert reasons == {2: "missing_user_id", 3: "missing_item_id", 4: "bad_timestamp",
                       5: "bad_value"}  # fmt: skip
    assert data.quarantine["source_file"].unique().to_list() == [str(path)]


def test_missing_required_column_names_file_and_column(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("uid,item_id,timestamp\n1,2,3\n")
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n2,x\n")
    spec = SourceSpec(events=(str(path),), items=str(items))
    for check in (preflight, read_source):
        with pytest.raises(InputError, match=r"events\.csv: missing required column 'user_id'"):
            check(spec)


def test_missing_file_and_bad_combinations(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        preflight(SourceSpec(events=(str(tmp_path / "nope.csv"),), items=str(tmp_path / "i.csv")))
    with pytest.raises(InputError, match="go together"):
        SourceSpec(events=("x.csv",))
    with pytest.raises(InputError, match="not both"):
        SourceSpec(movielens="x", events=("y",), items="z")
    with pytest.raises(InputError, match="not a MovieLens folder"):
        read_source(SourceSpec(movielens=str(tmp_path)))


def test_expand_paths_folders_and_globs(tmp_path):
    for name in ("a.csv", "b.jsonl", "notes.txt"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in expand_paths([str(tmp_path)])] == ["a.csv", "b.jsonl"]
    assert [p.name for p in expand_paths([str(tmp_path / "*.csv")])] == ["a.csv"]
    with pytest.raises(InputError, match="no files match"):
        expand_paths([str(tmp_path / "*.parquet")])
    assert isinstance(expand_paths([str(tmp_path / "a.csv")])[0], Path)


def test_ml_latest_layout_reads_events_in_batches(tmp_path):
    rows = "".join(f"{u},{m},3.5,{1_000_000_000 + u * 10 + m}\n" for u in range(1, 6)
                   for m in range(1, 4))  # fmt: skip
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + rows)
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,"Heat (1995)",Action\n2,X,(no genres listed)\n3,Y,Drama\n'
    )
    plan = plan_source(SourceSpec(movielens=str(tmp_path)))
    file = plan.events[0]
    batches = list(read_event_batches(file, inspect(file), batch_rows=4))
    assert sum(b.height for b in batches) == 15 and len(batches) >= 2
    assert batches[0].columns[:6] == ["row_number", *EVENT_FIELDS]
    assert set(pl.concat(batches)["event_type"]) == {"rating"}
    data = read_source(SourceSpec(movielens=str(tmp_path)))
    assert data.events["value"].unique().to_list() == [3.5]
    assert data.items.filter(pl.col("item_id") == "2")["categories"].to_list() == [[]]


def test_recbole_folder_is_detected_like_the_bundled_copy(tmp_path):
    for name in ("ml-100k.inter", "ml-100k.item"):
        lines = (bundled_ml100k_dir() / name).read_text(encoding="latin-1").splitlines()[:20]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    data = read_source(SourceSpec(movielens=str(tmp_path)))
    assert data.events.height == 19 and data.items.height == 19
    assert data.items.filter(pl.col("item_id") == "1")["title"][0] == "Toy Story (1995)"


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_csv_reads_like_plain(tmp_path, compression):
    text = "user_id,item_id,timestamp\nu1,a,1700000000\nu2,b,1700000001\n"
    plain = tmp_path / "e.csv"
    plain.write_text(text)
    packed = tmp_path / f"e.csv{'.gz' if compression == 'gzip' else '.zst'}"
    with pa.CompressedOutputStream(str(packed), compression) as fh:
        fh.write(text.encode())
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\na,A\n")
    now = datetime.now(UTC)
    read = [read_source(SourceSpec(events=(str(p),), items=str(items)), now).events for p in
            (plain, packed)]  # fmt: skip
    assert read[0].drop("source").equals(read[1].drop("source"))
    assert file_facts(packed).valid_utf8 is None  # compressed bytes say nothing about text


def test_file_facts_hash_utf8_and_blanks(tmp_path):
    clean = tmp_path / "clean.csv"
    clean.write_bytes(b"user_id,item_id\nu1,caf\xc3\xa9\n")
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"user_id,item_id\nu1,caf\xe9\n")
    cut = tmp_path / "cut.csv"
    cut.write_bytes(b"a,b\nu1,caf\xc3")  # ends inside a character
    spaced = tmp_path / "spaced.csv"
    spaced.write_bytes(b"a,b\nu 1,x\n")
    facts = {p.name: file_facts(p, block=4) for p in (clean, broken, cut, spaced)}
    assert facts["clean.csv"].valid_utf8 and not facts["clean.csv"].has_blanks
    assert facts["broken.csv"].valid_utf8 is False and facts["cut.csv"].valid_utf8 is False
    assert facts["spaced.csv"].has_blanks
    assert facts["clean.csv"].content_hash == hashlib.sha256(clean.read_bytes()).hexdigest()


def test_parquet_catalog_keeps_text_columns_and_reports_others(tmp_path):
    items = pl.DataFrame(
        {"item_id": ["a"], "title": ["A"], "brand": ["Acme"], "price": [9.5],
         "categories": [["x", "y"]]}
    )  # fmt: skip
    path = tmp_path / "items.parquet"
    items.write_parquet(path)
    file = plan_source(SourceSpec(events=(str(path),), items=str(path))).items[
        0
    ]  # the events side is not read here
    header = inspect(file)
    assert header.unknown == ["price"]
    row = read_items(file, header).row(0, named=True)
    assert row["categories"] == ["x", "y"]
    assert row["attributes"] == [{"name": "brand", "value": "Acme"}]


@given(st.integers(min_value=788_918_400, max_value=4_102_444_800))  # 1995 .. 2100
def test_parse_timestamps_reads_seconds_and_iso_alike(seconds):
    moment = datetime.fromtimestamp(seconds, UTC)
    texts = pl.Series(
        [str(seconds), f"{seconds}.0", moment.isoformat(), moment.strftime("%Y-%m-%d %H:%M:%S"),
         moment.strftime("%Y-%m-%dT%H:%M:%SZ"), f" {seconds} "]
    )  # fmt: skip
    parsed = parse_timestamps(texts.cast(pl.String))
    got = parsed.dt.epoch("s").to_list()
    assert got[:5] == [seconds] * 5
    assert got[5] is None  # untrimmed text is trimmed by the caller, not here
