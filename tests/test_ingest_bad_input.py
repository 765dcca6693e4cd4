"""Every class of bad input named by the ingestion issue, each through the whole `ingest`:
what is stored, what is quarantined with which reason, and what the report says."""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from recsys_core.context import RunContext
from recsys_core.data import validation
from recsys_core.data.sources import SourceSpec
from recsys_core.errors import InputError
from recsys_core.pipeline import IngestReport, ingest
from recsys_core.storage import Lake

ITEMS = "item_id,title\na,Alpha\nb,Beta\n"
T0 = 1_700_000_000  # 2023-11-14


def run(tmp_path: Path, events: bytes | str, items: str = ITEMS, name: str = "events.csv",
        **options) -> tuple[IngestReport, Lake, Path]:  # fmt: skip
    src = tmp_path / "src"
    src.mkdir(parents=True, exist_ok=True)
    path = src / name
    path.write_bytes(events.encode() if isinstance(events, str) else events)
    (src / "items.csv").write_text(items)
    lake = Lake(tmp_path / "lake")
    spec = SourceSpec(events=(str(path),), items=str(src / "items.csv"))
    report = ingest(RunContext.of(lake.root, **options), spec)
    assert report.accounted
    assert report.rows_read == report.events_added + report.duplicates + report.quarantined
    return report, lake, path


def quarantined(lake: Lake) -> dict[int, str]:
    rows = lake.read("quarantine").filter(pl.col("kind") == "events")
    return dict(zip(rows["row_number"], rows["reason"], strict=True))


def test_wrong_field_count_is_quarantined_with_the_whole_row(tmp_path):
    report, lake, path = run(
        tmp_path,
        "user_id,item_id,timestamp,value\n"
        f"u1,a,{T0},1\n"
        f"u2,a,{T0},1,EXTRA\n"  # one field too many
        f"u3,b,{T0},2\n",
    )
    assert quarantined(lake) == {2: "wrong_field_count"}
    row = lake.read("quarantine").row(0, named=True)
    assert row["raw"] == f"u2,a,{T0},1,EXTRA"
    assert row["source_file"] == str(path) and "EXTRA" in row["detail"]
    assert report.events_added == 2 and report.quarantine_reasons == {"wrong_field_count": 1}


def test_a_short_row_loses_its_required_fields_and_is_quarantined(tmp_path):
    _, lake, _ = run(tmp_path, f"user_id,item_id,timestamp,value\nu1,a,{T0},1\nu2,b\n")
    assert quarantined(lake) == {2: "missing_timestamp"}
    assert lake.read("events")["user_id"].to_list() == ["u1"]


def test_unparseable_numbers_and_dates(tmp_path):
    _, lake, _ = run(
        tmp_path,
        "user_id,item_id,timestamp,value\n"
        f"u1,a,{T0},lots\n"
        "u2,a,yesterday,1\n"
        f"u3,a,{T0},NaN\n"
        f"u4,a,{T0}.5,2.5\n"  # decimal seconds are fine
        "u5,a,2023-11-14T22:13:20+02:00,\n",  # ISO with an offset; empty value -> 1.0
    )
    assert quarantined(lake) == {1: "bad_value", 2: "bad_timestamp", 3: "bad_value"}
    details = lake.read("quarantine").sort("row_number")["detail"].to_list()
    assert "'lots'" in details[0] and "'yesterday'" in details[1]
    kept = lake.read("events").sort("user_id")
    assert kept["value"].to_list() == [2.5, 1.0]
    assert kept["timestamp"].dt.epoch("ms").to_list() == [T0 * 1000 + 500, (T0 - 7200) * 1000]


def test_null_empty_and_blank_ids(tmp_path):
    _, lake, _ = run(
        tmp_path,
        "user_id,item_id,timestamp\n"
        f",a,{T0}\n"
        f"u2,,{T0}\n"
        f"   ,a,{T0}\n"
        f'"",a,{T0}\n'
        f" u5 , a ,{T0}\n",  # padded ids are trimmed and kept
    )
    assert quarantined(lake) == {
        1: "missing_user_id", 2: "missing_item_id", 3: "missing_user_id", 4: "missing_user_id",
    }  # fmt: skip
    assert lake.read("events").select("user_id", "item_id").row(0) == ("u5", "a")


def test_null_ids_in_jsonl(tmp_path):
    lines = (
        f'{{"user_id": null, "item_id": "a", "timestamp": {T0}}}\n'
        f'{{"user_id": "u2", "item_id": 7, "timestamp": {T0}}}\n'  # numbers become text ids
    )
    _, lake, _ = run(tmp_path, lines, name="events.jsonl")
    assert quarantined(lake) == {1: "missing_user_id"}
    assert lake.read("events")["item_id"].to_list() == ["7"]


def test_timestamps_before_1995_or_over_a_day_ahead(tmp_path):
    now = int(time.time())
    report, lake, _ = run(
        tmp_path,
        "user_id,item_id,timestamp\n"
        "u1,a,1994-12-31T23:59:59Z\n"
        "u2,a,1995-01-01T00:00:00Z\n"
        f"u3,a,{now + 2 * 86_400}\n"
        f"u4,a,{now + 3600}\n"  # a little ahead: clocks drift, accepted
        "u5,a,99999999999999999999\n",  # beyond any clock
    )
    assert quarantined(lake) == {
        1: "timestamp_too_old", 3: "timestamp_in_future", 5: "bad_timestamp",
    }  # fmt: skip
    assert sorted(lake.read("events")["user_id"]) == ["u2", "u4"]
    assert report.quarantine_reasons["timestamp_too_old"] == 1


def test_invalid_utf8_is_decoded_lossily_and_flagged(tmp_path):
    data = b"user_id,item_id,timestamp\nu\xff1,a,1700000000\nu2,a,1700000001\n"
    report, lake, _ = run(tmp_path, data)
    events = lake.read("events").sort("timestamp")
    assert events["user_id"].to_list() == ["u\ufffd1", "u2"]
    assert events["quality"].to_list() == ["lossy_utf8", None]
    assert report.flags == {"events.lossy_utf8": 1}


def test_invalid_utf8_in_item_text_is_flagged(tmp_path):
    items = "item_id,title\na,Caf\xe9\n".encode("latin-1")
    src = tmp_path / "items.csv"
    src.write_bytes(items)
    events = tmp_path / "events.csv"
    events.write_text(f"user_id,item_id,timestamp\nu1,a,{T0}\n")
    lake = Lake(tmp_path / "lake")
    report = ingest(RunContext.of(lake.root), SourceSpec(events=(str(events),), items=str(src)))
    item = lake.read("items").row(0, named=True)
    assert item["title"] == "Caf\ufffd" and item["quality"] == "lossy_utf8"
    assert report.flags == {"items.lossy_utf8": 1}


def test_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    data = f"\ufeffuser_id,item_id,timestamp\nu1,a,{T0}\n"
    report, lake, _ = run(tmp_path, data)
    assert report.quarantined == 0
    assert lake.read("events")["user_id"].to_list() == ["u1"]


def test_crlf_line_ends_leave_no_carriage_return(tmp_path):
    data = f"user_id,item_id,timestamp,event_type\r\nu1,a,{T0},view\r\nu2,b,{T0},buy\r\n"
    report, lake, _ = run(tmp_path, data)
    events = lake.read("events").sort("user_id")
    assert report.quarantined == 0
    assert events["event_type"].to_list() == ["view", "buy"]  # the last field, no trailing \r


def test_quoted_newlines_stay_inside_their_field(tmp_path):
    data = f'user_id,item_id,timestamp\n"u\n1",a,{T0}\nu2,"b,c",{T0}\n,x,{T0}\n'
    _, lake, _ = run(tmp_path, data)
    assert sorted(lake.read("events")["item_id"]) == ["a", "b,c"]
    assert quarantined(lake) == {3: "missing_user_id"}  # the third record, not line 4


def test_empty_and_header_only_files_add_nothing_and_are_reported(tmp_path):
    report, lake, path = run(tmp_path, b"")
    assert report.rows_read == 0 and report.empty_files == [str(path)]
    assert not lake.exists("events")
    header_only, _, _ = run(tmp_path / "h", "user_id,item_id,timestamp\n")
    assert header_only.rows_read == 0 and header_only.empty_files == []
    # both are remembered, so they are not read again
    spec = SourceSpec(events=(str(path),), items=str(path.parent / "items.csv"))
    assert ingest(RunContext.of(lake.root), spec).files_skipped == 2


def test_blank_lines_are_quarantined_as_empty_rows(tmp_path):
    _, lake, _ = run(tmp_path, f"user_id,item_id,timestamp\nu1,a,{T0}\n\nu2,a,{T0}\n")
    assert quarantined(lake) == {2: "empty_row"}


def test_malformed_jsonl_lines_are_quarantined(tmp_path):
    lines = f'{{"user_id": "u1", "item_id": "a", "timestamp": {T0}}}\n{{not json}}\n[1, 2]\n'
    _, lake, _ = run(tmp_path, lines, name="events.jsonl")
    assert quarantined(lake) == {2: "malformed_json", 3: "malformed_json"}
    assert lake.read("quarantine").sort("row_number")["raw"].to_list() == ["{not json}", "[1, 2]"]


def test_unknown_columns_are_kept_out_and_reported(tmp_path):
    data = f"user_id,session,item_id,timestamp,referrer\nu1,s9,a,{T0},x.com\n,s9,a,{T0},y.com\n"
    report, lake, path = run(tmp_path, data)
    assert report.unknown_columns == {str(path): ["session", "referrer"]}
    assert lake.read("events").columns == list(lake.read_or_empty("events").columns)
    assert "session" not in lake.read("events").columns
    # a quarantined row still shows every field it had, in file order
    assert lake.read("quarantine")["raw"].to_list() == [f",s9,a,{T0},y.com"]


def test_missing_required_column_names_file_and_column_and_writes_nothing(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text(f"user_id,item_id,timestamp\nu1,a,{T0}\n")
    bad = tmp_path / "bad.csv"
    bad.write_text(f"user_id,item,timestamp\nu1,a,{T0}\n")
    items = tmp_path / "items.csv"
    items.write_text(ITEMS)
    lake = Lake(tmp_path / "lake")
    with pytest.raises(InputError, match=r"bad\.csv: missing required column 'item_id'"):
        ingest(RunContext.of(lake.root), SourceSpec(events=(str(good), str(bad)), items=str(items)))
    assert not any(lake.exists(t) for t in ("events", "items", "quarantine", "ingest_manifest"))
    result = CliRunner().invoke(
        app, ["ingest", "--data-dir", str(lake.root), "--events", str(good), "--events",
              str(bad), "--items", str(items)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}: missing required column 'item_id' (found: user_id, item, timestamp)"
    ]


def test_events_for_items_absent_from_the_catalog_are_kept_and_counted(tmp_path):
    data = f"user_id,item_id,timestamp\nu1,a,{T0}\nu1,ghost,{T0}\nu2,ghost,{T0 + 1}\nu2,z,{T0}\n"
    report, _, _ = run(tmp_path, data)
    assert report.events_added == 4 and report.unknown_item_events == 3
    assert set(report.unknown_item_examples) == {"ghost", "z"}


def test_empty_and_very_long_item_text(tmp_path):
    long = "word " * 5000
    items = f'item_id,title,description\na,,\nb,Beta,"{long}"\nc,Gamma,short\n'
    report, lake, _ = run(
        tmp_path, f"user_id,item_id,timestamp\nu1,a,{T0}\n", items=items, max_item_text_chars=1000
    )
    stored = {r["item_id"]: r for r in lake.read("items").iter_rows(named=True)}
    assert stored["a"]["text"] == "" and stored["a"]["quality"] == "empty_text"
    assert len(stored["b"]["description"]) == 1000 and stored["b"]["quality"] == "text_truncated"
    assert stored["c"]["quality"] is None
    assert report.flags == {"items.empty_text": 1, "items.text_truncated": 1}


def test_duplicate_item_rows_latest_wins(tmp_path):
    items = "item_id,title\na,Old\nb,Beta\na,New\n,Nameless\n"
    report, lake, _ = run(tmp_path, f"user_id,item_id,timestamp\nu1,a,{T0}\n", items=items)
    titles = dict(lake.read("items").select("item_id", "title").iter_rows())
    assert titles == {"a": "New", "b": "Beta"}
    assert (report.item_rows_read, report.items_added, report.item_duplicates,
            report.items_quarantined) == (4, 2, 1, 1)  # fmt: skip
    assert lake.read("quarantine").filter(pl.col("kind") == "items")["reason"].to_list() == [
        "missing_item_id"
    ]


def test_bot_like_users_are_flagged_in_the_report_not_dropped(tmp_path):
    rows = [f"bot,a,{T0 + i}" for i in range(30)] + [f"u{i},a,{T0 + i}" for i in range(5)]
    data = "user_id,item_id,timestamp\n" + "\n".join(rows) + "\n"
    report, lake, _ = run(tmp_path, data, bot_events_per_day=20)
    assert report.bot_users == 1
    assert report.bot_user_days == [{"user_id": "bot", "date": "2023-11-14", "events": 30}]
    assert lake.read("events").height == 35


def test_bot_limit_counts_events_already_stored_that_day(tmp_path):
    first = "user_id,item_id,timestamp\n" + "".join(f"bot,a,{T0 + i}\n" for i in range(15))
    report, lake, _ = run(tmp_path, first, bot_events_per_day=20)
    assert report.bot_users == 0
    later = tmp_path / "later.csv"
    rows = "".join(f"bot,b,{T0 + i}\n" for i in range(10))
    later.write_text("user_id,item_id,timestamp\n" + rows)
    spec = SourceSpec(events=(str(later),), items=str(tmp_path / "src" / "items.csv"))
    again = ingest(RunContext.of(lake.root, bot_events_per_day=20), spec)
    assert again.bot_user_days == [{"user_id": "bot", "date": "2023-11-14", "events": 25}]


def test_cli_quarantine_lists_rows_by_reason(tmp_path):
    _, lake, path = run(tmp_path, f"user_id,item_id,timestamp\nu1,a,{T0}\n,a,{T0}\nu2,a,soon\n")
    result = CliRunner().invoke(app, ["quarantine", "--data-dir", str(lake.root), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["reasons"] == {"missing_user_id": 1, "bad_timestamp": 1}
    assert [(r["row_number"], r["raw"]) for r in payload["rows"]] == [
        (2, f",a,{T0}"), (3, "u2,a,soon"),
    ]  # fmt: skip
    text = CliRunner().invoke(app, ["quarantine", "--data-dir", str(lake.root), "--reason",
                                    "bad_timestamp"])  # fmt: skip
    assert f"{path}:3  bad_timestamp: timestamp 'soon'" in text.stdout
    empty = CliRunner().invoke(app, ["quarantine", "--data-dir", str(tmp_path / "none")])
    assert empty.exit_code == 0 and "no rows quarantined" in empty.stdout


def test_empty_strings_in_compact_jsonl_mean_absent(tmp_path):
    # no space or tab anywhere in the file: the fast path skips trimming, not these checks
    lines = (
        f'{{"user_id":"u1","item_id":"a","timestamp":{T0},"event_type":"","value":""}}\n'
        '{"user_id":"","item_id":"a","timestamp":""}\n'
    )
    _, lake, _ = run(tmp_path, lines, name="events.jsonl")
    assert quarantined(lake) == {2: "missing_user_id"}
    row = lake.read("events").row(0, named=True)
    assert (row["event_type"], row["value"]) == ("interaction", 1.0)


@pytest.mark.parametrize("trim", [True, False])
def test_a_blank_or_missing_event_type_becomes_the_default_so_no_rule_needs_to_refuse_it(trim):
    """Why the events schema has no non-empty rule on event_type: none could fail."""
    blanks = ["", None] + (["  ", "\t"] if trim else [])  # untrimmed files hold no blanks
    raw = pl.LazyFrame(
        {"user_id": "u", "item_id": "i", "timestamp": str(T0), "value": "1",
         "event_type": [*blanks, "view"]},
        schema_overrides={"event_type": pl.String},
    )  # fmt: skip
    prepared = validation.prepare_events(raw, trim=trim, check_utf8=False).collect()
    types = prepared["_event_type"].to_list()
    assert types == [validation.DEFAULT_EVENT_TYPE] * len(blanks) + ["view"]


def test_every_reason_code_is_documented():
    emitted = {*validation._EVENT_REASONS.values(), *validation._ITEM_REASONS.values(),
               "empty_row", "malformed_json"}  # fmt: skip
    assert emitted == set(validation.REASONS)
