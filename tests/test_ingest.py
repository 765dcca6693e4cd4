from __future__ import annotations

import polars as pl

from recsys_core.data.sources import SourceSpec
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
    first = ingest(spec, lake)
    assert (first.rows_read, first.events_added, first.duplicates, first.quarantined) == (
        6, 4, 1, 1,
    )  # fmt: skip
    assert first.rows_read == first.events_added + first.duplicates + first.quarantined
    assert first.unknown_item_events == 1
    snapshot = lake.read("events").drop("ingested_at").sort(["user_id", "item_id"])
    second = ingest(spec, lake)
    assert second.events_added == 0 and second.files_skipped == 2
    again = lake.read("events").drop("ingested_at").sort(["user_id", "item_id"])
    assert again.equals(snapshot)
    assert lake.read("quarantine").height == 1


def test_new_file_adds_only_new_rows_and_changed_text_updates_the_item(tmp_path):
    lake = Lake(tmp_path / "lake")
    ingest(write_source(tmp_path / "day1", EVENTS, ITEMS), lake)
    before = lake.read("items").sort("item_id")
    more = EVENTS + "u3,b,1700000500,view\n"
    items = "item_id,title,description\na,Alpha,first\nb,Beta,a new description\nc,Gamma,x\n"
    report = ingest(write_source(tmp_path / "day2", more, items), lake)
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
    ingest(write_source(tmp_path / "src", EVENTS, ITEMS), lake)
    partitions = sorted(p.name for p in lake.path("events").glob("event_date=*"))
    assert partitions == ["event_date=2023-11-14"]
