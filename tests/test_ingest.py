from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile

import polars as pl
import pytest

from recsys_core import schemas
from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.data.synth import SynthConfig, write_synthetic
from recsys_core.errors import InputError
from recsys_core.pipeline import ingest
from recsys_core.storage import Lake


def write_source(folder, events_csv: str, items_csv: str) -> SourceSpec:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.csv").write_text(events_csv)
    (folder / "items.csv").write_text(items_csv)
    return SourceSpec(events=(str(folder / "events.csv"),), items=str(folder / "items.csv"))


EVENTS = (
    "user_id,item_id,timestamp,event_type\n"
    "u1,a,1700000000,view\n"
    "u1,a,1700000000,view\n"  # exact duplicate: stored once
    "u1,b,1700000100,view\n"
    "u2,a,1700000200,click\n"
    "u2,ghost,1700000300,view\n"  # not in the catalog: kept and counted
    ",a,1700000400,view\n"  # quarantined
)
ITEMS = "item_id,title,description\na,Alpha,first\nb,Beta,second\n"


def test_ingest_is_idempotent(tmp_path):
    lake = Lake(tmp_path / "lake")
    spec = write_source(tmp_path / "src", EVENTS, ITEMS)
    first = ingest(RunContext.of(lake.root), spec)
    assert (first.rows_read, first.events_added, first.duplicates, first.quarantined) == (
        6, 4, 1, 1,
    )  # fmt: skip
    assert first.rows_read == first.events_added + first.duplicates + first.quarantined
    assert first.unknown_item_events == 1
    snapshot = lake.read("events").drop("ingested_at").sort(["user_id", "item_id"])
    second = ingest(RunContext.of(lake.root), spec)
    assert second.events_added == 0 and second.files_skipped == 2
    again = lake.read("events").drop("ingested_at").sort(["user_id", "item_id"])
    assert again.equals(snapshot)
    assert lake.read("quarantine").height == 1


def test_new_file_adds_only_new_rows_and_changed_text_updates_the_item(tmp_path):
    lake = Lake(tmp_path / "lake")
    ingest(RunContext.of(lake.root), write_source(tmp_path / "day1", EVENTS, ITEMS))
    before = lake.read("items").sort("item_id")
    more = EVENTS + "u3,b,1700000500,view\n"
    items = "item_id,title,description\na,Alpha,first\nb,Beta,a new description\nc,Gamma,x\n"
    report = ingest(RunContext.of(lake.root), write_source(tmp_path / "day2", more, items))
    assert report.events_added == 1  # the old rows of the new file are already stored
    assert (report.items_added, report.items_updated) == (1, 1)
    after = lake.read("items").sort("item_id")
    assert after.height == 3
    a_before, a_after = (f.filter(pl.col("item_id") == "a").row(0, named=True)
                         for f in (before, after))  # fmt: skip
    assert a_before["text_hash"] == a_after["text_hash"]
    b_after = after.filter(pl.col("item_id") == "b").row(0, named=True)
    assert "a new description" in b_after["text"]
    assert b_after["text_hash"] != before.filter(pl.col("item_id") == "b")["text_hash"][0]


def test_events_are_partitioned_by_event_date(tmp_path):
    lake = Lake(tmp_path / "lake")
    ingest(RunContext.of(lake.root), write_source(tmp_path / "src", EVENTS, ITEMS))
    partitions = sorted(p.name for p in lake.path("events").glob("event_date=*"))
    assert partitions == ["event_date=2023-11-14"]


def test_ingesting_twice_leaves_every_table_at_the_same_version(tmp_path):
    lake = Lake(tmp_path / "lake")
    spec = write_source(tmp_path / "src", EVENTS, ITEMS)
    ingest(RunContext.of(lake.root), spec)
    versions = {t: lake.version(t) for t in ("events", "items", "quarantine")}
    contents = {t: lake.read(t) for t in versions}
    again = ingest(RunContext.of(lake.root), spec)
    assert (again.rows_read, again.events_added, again.items_added, again.files_skipped) == (
        0, 0, 0, 2,
    )  # fmt: skip
    assert {t: lake.version(t) for t in versions} == versions
    assert all(lake.read(t).equals(contents[t]) for t in versions)


def test_the_same_rows_in_a_new_file_are_duplicates_not_new_events(tmp_path):
    lake = Lake(tmp_path / "lake")
    ingest(RunContext.of(lake.root), write_source(tmp_path / "a", EVENTS, ITEMS))
    stored = lake.read("events").drop("ingested_at", "source").sort(list(schemas.EVENT_KEY))
    # same events, other file name and one more column: content differs, events do not
    renamed = EVENTS.replace("event_type\n", "event_type,extra\n", 1)
    report = ingest(RunContext.of(lake.root), write_source(tmp_path / "b", renamed, ITEMS))
    assert report.files_read == 1 and report.events_added == 0
    assert report.duplicates == 5 and report.quarantined == 1
    again = lake.read("events").drop("ingested_at", "source").sort(list(schemas.EVENT_KEY))
    assert again.equals(stored)


def test_late_and_out_of_order_events_are_accepted(tmp_path):
    lake = Lake(tmp_path / "lake")
    day2 = "user_id,item_id,timestamp\nu1,a,1700100000\nu1,b,1700090000\n"
    ingest(RunContext.of(lake.root), write_source(tmp_path / "d2", day2, ITEMS))
    late = "user_id,item_id,timestamp\nu2,a,1600000000\nu1,a,1700100000\n"
    report = ingest(RunContext.of(lake.root), write_source(tmp_path / "late", late, ITEMS))
    assert (report.events_added, report.duplicates) == (1, 1)
    dates = sorted(p.name for p in lake.path("events").glob("event_date=*"))
    assert dates == ["event_date=2020-09-13", "event_date=2023-11-15", "event_date=2023-11-16"]


def test_every_row_is_accounted_for_per_file_in_the_manifest(tmp_path):
    lake = Lake(tmp_path / "lake")
    spec = write_source(tmp_path / "src", EVENTS, ITEMS + "a,Alpha again,x\n")
    report = ingest(RunContext.of(lake.root), spec)
    manifest = lake.read("ingest_manifest").sort("kind")
    counts = ["kind", "rows_read", "rows_stored", "duplicates", "quarantined"]
    assert manifest.select(counts).rows() == [
        ("events", 6, 4, 1, 1),
        ("items", 3, 2, 1, 0),
    ]
    assert report.files == [
        {k: v for k, v in row.items() if k != "ingested_at"} for row in manifest.sort(
            "kind", descending=True).to_dicts()
    ]  # fmt: skip


def test_dedupe_keys_spilled_to_disk_give_the_same_table(tmp_path):
    config = SynthConfig(users=30, items=20, events=3000, days=20, duplicate_fraction=0.1, seed=5)
    events, items = write_synthetic(config, tmp_path / "src")
    late = tmp_path / "late.csv"
    late.write_text(events.read_text().splitlines()[0] + "\n" + "\n".join(
        events.read_text().splitlines()[1:400]) + "\n")  # fmt: skip
    spec = SourceSpec(events=(str(events), str(late)), items=str(items))
    tables = []
    spill = {"ingest_batch_rows": 500, "dedupe_key_memory_mb": 0}
    for name, options in (("memory", {}), ("spill", spill)):
        lake = Lake(tmp_path / name)
        report = ingest(RunContext.of(lake.root, **options), spec)
        assert report.events_added + report.duplicates == 3000 + 300 + 399
        tables.append(lake.read("events").drop("ingested_at").sort(list(schemas.EVENT_KEY)))
    assert tables[0].equals(tables[1])
    assert tables[0].height == tables[0].unique(list(schemas.EVENT_KEY)).height == 3000


def test_spill_folders_of_killed_ingests_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = temp / f"recsys-ingest-keys-{gone.stdout.strip()}-x1"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "2020-01-01-0.arrow").write_bytes(b"keys")
    live = temp / f"recsys-ingest-keys-{os.getppid()}-x2"  # the test runner's parent is alive
    live.mkdir()
    other = temp / "unrelated-123-x3"
    other.mkdir()
    source = write_source(tmp_path / "src", EVENTS, ITEMS)
    ingest(RunContext.of(tmp_path / "lake", dedupe_key_memory_mb=0), source)
    assert sorted(p.name for p in temp.iterdir()) == sorted([live.name, other.name])


@pytest.mark.parametrize(("fmt", "compression"), [("csv", "gzip"), ("jsonl", "zstd"),
                                                   ("parquet", "none")])  # fmt: skip
def test_compressed_and_typed_formats_ingest_the_same_events(tmp_path, fmt, compression):
    config = SynthConfig(users=20, items=10, events=500, max_words=20, seed=2)
    plain = write_synthetic(config, tmp_path / "plain")
    other = write_synthetic(config, tmp_path / fmt, fmt=fmt, compression=compression)
    frames = []
    for name, (events, items) in (("plain", plain), (fmt, other)):
        lake = Lake(tmp_path / f"lake-{name}")
        report = ingest(
            RunContext.of(lake.root), SourceSpec(events=(str(events),), items=str(items))
        )
        assert report.quarantined == 0 and report.events_added == 500
        frames.append(lake.read("events").drop("ingested_at", "source").sort(
            list(schemas.EVENT_KEY)))  # fmt: skip
    assert frames[0].equals(frames[1])


def test_a_failure_midway_leaves_the_tables_as_they_were(tmp_path, monkeypatch):
    lake = Lake(tmp_path / "lake")
    ingest(RunContext.of(lake.root), write_source(tmp_path / "day1", EVENTS, ITEMS))
    version, files = lake.version("events"), set(lake.path("events").rglob("*.parquet"))
    rows = "".join(f"u9,a,{1_700_000_000 + i * 3600}\n" for i in range(100))
    spec = write_source(tmp_path / "day2", "user_id,item_id,timestamp\n" + rows, ITEMS)
    stage = importlib.import_module("recsys_core.pipeline.ingest.events")
    check_events, calls = stage.check_events, []

    def failing_check(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # after four batches were checked and written
            raise RuntimeError("disk on fire")
        return check_events(*args, **kwargs)

    monkeypatch.setattr(stage, "check_events", failing_check)
    with pytest.raises(RuntimeError, match="disk on fire"):
        ingest(RunContext.of(lake.root, ingest_batch_rows=10, ingest_flush_rows=10), spec)
    assert lake.version("events") == version
    assert set(lake.path("events").rglob("*.parquet")) == files  # no stray files either
    assert lake.read("ingest_manifest").height == 2  # so the new file can be ingested again
    monkeypatch.undo()
    assert ingest(RunContext.of(lake.root), spec).events_added == 100


def test_corrupt_compressed_file_is_an_input_error_naming_it(tmp_path):
    broken = tmp_path / "events.csv.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    items = tmp_path / "items.csv"
    items.write_text(ITEMS)
    with pytest.raises(InputError, match=r"events\.csv\.gz: cannot be read"):
        ingest(
            RunContext.of(tmp_path / "lake"), SourceSpec(events=(str(broken),), items=str(items))
        )


def test_totals_count_the_whole_table_whether_or_not_a_run_saw_every_date(tmp_path):
    lake = Lake(tmp_path / "lake")
    first = ingest(
        RunContext.of(lake.root), write_source(tmp_path / "a", EVENTS, ITEMS)
    )  # every date is new
    assert (first.events_total, first.users_total) == (4, 2)
    # a later day with one new and one known user: the earlier date is not read again
    later = "user_id,item_id,timestamp\nu9,a,1700200000\nu1,b,1700200001\n"
    second = ingest(RunContext.of(lake.root), write_source(tmp_path / "b", later, ITEMS))
    stored = lake.read("events")
    assert (second.events_total, second.users_total) == (6, 3)
    assert (stored.height, stored["user_id"].n_unique()) == (6, 3)


def test_movielens_folder_ingested_again_reads_nothing(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,5,4.0,1000000000\n")
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n5,"Heat (1995)",Action|Crime\n')
    (tmp_path / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,5,heist,1\n")
    lake = Lake(tmp_path / "lake")
    first = ingest(RunContext.of(lake.root), SourceSpec(movielens=str(tmp_path)))
    assert (first.files_read, first.events_added, first.items_added) == (3, 1, 1)
    again = ingest(RunContext.of(lake.root), SourceSpec(movielens=str(tmp_path)))
    assert (again.files_read, again.files_skipped) == (0, 3)
    # new tags change the movie's text: the catalog is read again and the item updated
    (tmp_path / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,5,heist,1\n2,5,noir,2\n")
    tagged = ingest(RunContext.of(lake.root), SourceSpec(movielens=str(tmp_path)))
    assert (tagged.files_read, tagged.items_updated) == (1, 1)
    assert "noir" in lake.read("items")["text"][0]


def test_appender_writes_many_files_in_one_commit_with_safe_statistics(tmp_path):
    from datetime import UTC, datetime, timedelta

    from deltalake import DeltaTable

    from recsys_core.storage.append import DeltaAppender

    lake = Lake(tmp_path / "lake")
    base = datetime(2024, 1, 1, 12, tzinfo=UTC).timestamp() * 1_000_000
    frame = pl.DataFrame({"user_id": ["u"] * 6, "item_id": list("abcdef")}).with_columns(
        timestamp=pl.Series([int(base) + i * 86_400_000_000 // 2 + 999 for i in range(6)])
        .cast(schemas.UTC_TIME),
        event_type=pl.lit("view"), value=pl.lit(1.0), source=pl.lit("x"),
        ingested_at=pl.lit(datetime.now(UTC)).cast(schemas.UTC_TIME),
        quality=pl.lit(None, pl.String),
    ).with_columns(event_date=pl.col("timestamp").dt.date())  # fmt: skip
    appender = DeltaAppender(lake.path("events"), "events", partition_by=["event_date"],
                             flush_rows=2)  # fmt: skip
    for start in range(0, 6, 2):
        appender.add(frame.slice(start, 2))
    assert appender.commit({"run_id": "t"}) == 0 and lake.version("events") == 0
    stored = lake.read("events").sort("item_id")
    assert stored.drop("ingested_at").equals(frame.drop("ingested_at").select(stored.drop(
        "ingested_at").columns))  # fmt: skip
    actions = pl.DataFrame(DeltaTable(str(lake.path("events"))).get_add_actions(flatten=True))
    assert actions.height >= 3 and actions["num_records"].sum() == 6
    for path, low, high in actions.select("path", "min.timestamp", "max.timestamp").iter_rows():
        written = pl.read_parquet(lake.path("events") / path)["timestamp"]
        # the log holds milliseconds: the maximum is rounded up, so no reader skips a file
        assert low <= written.min() and high >= written.max() > high - timedelta(milliseconds=1)
