"""Ingest on an operator's path: re-runs without a source, files cut short, timestamps in
other units, files nothing of which can be kept, and failures between commits. An ingest is
one unit: a run that fails commits nothing to any table."""

from __future__ import annotations

import gzip
import importlib
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.cli import app
from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.data.validation import epoch_unit, parse_timestamps
from recsys_core.errors import InputError
from recsys_core.pipeline import ingest
from recsys_core.storage import Lake

T0 = 1_700_000_000  # 2023-11-14
ITEMS = "item_id,title\na,Alpha\nb,Beta\n"
NEW_ITEMS = "item_id,title\na,Alpha renamed\nb,Beta\nc,Gamma\n"
TABLES = ("items", "events", "quarantine", "ingest_manifest")


def events_csv(rows: int = 200, start: int = T0, scale: int = 1) -> str:
    lines = [f"u{i % 7},{'ab'[i % 2]},{(start + i * 60) * scale}" for i in range(rows)]
    return "user_id,item_id,timestamp\n" + "\n".join(lines) + "\n"


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def first_day(tmp_path: Path) -> Lake:
    """A data directory holding one ingested day."""
    lake = Lake(tmp_path / "lake")
    events = write(tmp_path / "day1", "events.csv", events_csv(20))
    items = write(tmp_path / "day1", "items.csv", ITEMS)
    ingest(RunContext.of(lake.root), SourceSpec(events=(str(events),), items=str(items)))
    return lake


def snapshot(lake: Lake) -> dict:
    """Every table's version and sorted content."""
    out = {}
    for table in TABLES:
        if not lake.exists(table):
            out[table] = None
            continue
        frame = lake.read(table)
        out[table] = (lake.version(table), frame.sort(frame.columns[:3]).to_dicts())
    return out


def cut(path: Path, fraction: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def compressed(folder: Path, name: str, text: str, codec: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if codec == "gzip":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        with pa.output_stream(str(path), compression=codec) as out:
            out.write(text.encode())
    return path


# -- a file cut short ------------------------------------------------------------------------
@pytest.mark.parametrize("codec,suffix", [("gzip", ".csv.gz"), ("zstd", ".csv.zst")])
def test_a_compressed_file_cut_short_is_refused_by_name_and_commits_nothing(
    tmp_path, codec, suffix
):
    lake = first_day(tmp_path)
    before = snapshot(lake)
    events = cut(compressed(tmp_path / "day2", "events" + suffix, events_csv(5000), codec))
    items = write(tmp_path / "day2", "items.csv", NEW_ITEMS)  # a changed catalog
    with pytest.raises(InputError, match=rf"events{suffix}: cannot be read: "):
        ingest(RunContext.of(lake.root), SourceSpec(events=(str(events),), items=str(items)))
    assert snapshot(lake) == before  # the catalog was not merged either


def test_a_parquet_file_cut_short_is_refused_by_name_and_commits_nothing(tmp_path):
    lake = first_day(tmp_path)
    before = snapshot(lake)
    events = tmp_path / "day2" / "events.parquet"
    events.parent.mkdir()
    frame = pl.read_csv(events_csv(5000).encode())
    pq.write_table(frame.to_arrow(), events)
    cut(events)
    items = write(tmp_path / "day2", "items.csv", NEW_ITEMS)
    with pytest.raises(InputError, match=r"events\.parquet: not a readable Parquet file"):
        ingest(RunContext.of(lake.root), SourceSpec(events=(str(events),), items=str(items)))
    assert snapshot(lake) == before


def test_cli_a_gzip_cut_short_exits_2_with_one_line_and_writes_nothing(tmp_path):
    events = cut(compressed(tmp_path / "src", "events.csv.gz", events_csv(5000), "gzip"))
    items = write(tmp_path / "src", "items.csv", ITEMS)
    data_dir = tmp_path / "lake"
    result = CliRunner().invoke(
        app, ["ingest", "--data-dir", str(data_dir), "--events", str(events), "--items",
              str(items)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {events}: cannot be read")
    assert not any(Lake(data_dir).exists(table) for table in TABLES)


def test_a_whole_compressed_file_is_decompressed_once_until_it_changes(tmp_path, monkeypatch):
    from recsys_core.data.sources import integrity

    opened = []
    real = integrity.pa.input_stream
    monkeypatch.setattr(
        integrity.pa, "input_stream", lambda *a, **k: opened.append(a[0]) or real(*a, **k)
    )
    path = compressed(tmp_path, "events.csv.gz", events_csv(300), "gzip")
    integrity.check_complete(path)  # the CLI's preflight
    integrity.check_complete(path)  # the ingest run, same process
    assert len(opened) == 1
    cut(path)  # the same name, other bytes: read again, and refused
    with pytest.raises(InputError, match="cut short"):
        integrity.check_complete(path)
    assert len(opened) == 2


def test_the_python_reader_names_a_gzip_cut_short(tmp_path):
    """polars gives up on a quote never closed and Python's csv reader takes over: a stream
    cut short there is bad input naming the file too, not an internal EOFError."""
    from recsys_core.data.sources import inspect, plan_source, read_event_batches

    text = 'user_id,item_id,timestamp\nu1,a,"1700000000\n' + events_csv(5000).split("\n", 1)[1]
    events = compressed(tmp_path, "events.csv.gz", text, "gzip")
    items = write(tmp_path, "items.csv", ITEMS)
    plan = plan_source(SourceSpec(events=(str(events),), items=str(items)))
    file = plan.events[0]
    header = inspect(file)  # read while whole; the stream is what finds the cut
    cut(events)
    with pytest.raises(InputError, match=r"events\.csv\.gz: cannot be read"):
        list(read_event_batches(file, header, batch_rows=100))


# -- one unit --------------------------------------------------------------------------------
def test_a_failure_while_reading_events_leaves_the_catalog_unmerged(tmp_path, monkeypatch):
    lake = first_day(tmp_path)
    before = snapshot(lake)
    events = write(tmp_path / "day2", "events.csv", events_csv(100, start=T0 + 86_400))
    items = write(tmp_path / "day2", "items.csv", NEW_ITEMS)
    stage = importlib.import_module("recsys_core.pipeline.ingest.events")
    check_events, calls = stage.check_events, []

    def failing_check(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return check_events(*args, **kwargs)

    monkeypatch.setattr(stage, "check_events", failing_check)
    spec = SourceSpec(events=(str(events),), items=str(items))
    with pytest.raises(RuntimeError, match="disk on fire"):
        ingest(RunContext.of(lake.root, ingest_batch_rows=10, ingest_flush_rows=10), spec)
    assert snapshot(lake) == before
    monkeypatch.undo()
    report = ingest(RunContext.of(lake.root), spec)
    assert (report.events_added, report.items_added, report.items_updated) == (100, 1, 1)


def test_a_failed_last_commit_undoes_the_commits_before_it(tmp_path, monkeypatch):
    lake = first_day(tmp_path)
    before = snapshot(lake)
    events = write(tmp_path / "day2", "events.csv", events_csv(50, start=T0 + 86_400) + ",a,1\n")
    items = write(tmp_path / "day2", "items.csv", NEW_ITEMS)
    write_table = Lake.write

    def failing_write(self, table, *args, **kwargs):
        if table == "ingest_manifest":
            raise OSError("the manifest cannot be written")
        return write_table(self, table, *args, **kwargs)

    monkeypatch.setattr(Lake, "write", failing_write)
    spec = SourceSpec(events=(str(events),), items=str(items))
    with pytest.raises(OSError, match="manifest"):
        ingest(RunContext.of(lake.root), spec)
    after = snapshot(lake)
    for table in TABLES:  # content as before (undone in a new commit, or never made)
        assert after[table] == before[table] or (
            table in ("items", "events") and after[table][1] == before[table][1]
        ), table
    assert not lake.exists("quarantine")  # created by the failed run, so removed again
    monkeypatch.undo()
    report = ingest(RunContext.of(lake.root), spec)
    assert (report.events_added, report.quarantined, report.items_updated) == (50, 1, 1)
    assert lake.read("events").height == 70


# -- timestamps in other units ---------------------------------------------------------------
@pytest.mark.parametrize("unit,scale", [("ms", 10**3), ("us", 10**6), ("ns", 10**9)])
def test_epoch_timestamps_in_smaller_units_are_detected_per_file(tmp_path, unit, scale):
    seconds = write(tmp_path / "src", "seconds.csv", events_csv(30))
    other = write(tmp_path / "src", f"{unit}.csv", events_csv(30, start=T0 + 86_400, scale=scale))
    items = write(tmp_path / "src", "items.csv", ITEMS)
    lake = Lake(tmp_path / "lake")
    report = ingest(
        RunContext.of(lake.root), SourceSpec(events=(str(seconds), str(other)), items=str(items))
    )
    assert (report.events_added, report.quarantined) == (60, 0)
    assert report.timestamp_units == {str(other): unit}
    assert any(str(other) in note and "since the epoch" in note for note in report.notes)
    stored = lake.read("events").filter(pl.col("source") == str(other)).sort("timestamp")
    expected = parse_timestamps(pl.Series([str(T0 + 86_400 + i * 60) for i in range(30)]))
    assert stored["timestamp"].to_list() == expected.to_list()


def test_milliseconds_in_jsonl_and_decimal_text_are_read_too(tmp_path):
    lines = [json.dumps({"user_id": "u1", "item_id": "a", "timestamp": (T0 + i) * 1000})
             for i in range(3)]  # fmt: skip
    lines.append('{"user_id": "u2", "item_id": "b", "timestamp": "1700000000500.0"}')
    events = write(tmp_path, "events.jsonl", "\n".join(lines) + "\n")
    items = write(tmp_path, "items.csv", ITEMS)
    lake = Lake(tmp_path / "lake")
    report = ingest(RunContext.of(lake.root), SourceSpec(events=(str(events),), items=str(items)))
    assert (report.events_added, report.timestamp_units) == (4, {str(events): "ms"})
    latest = lake.read("events").filter(pl.col("user_id") == "u2")["timestamp"][0]
    assert latest.timestamp() == T0 + 0.5


def test_epoch_unit_by_magnitude():
    assert epoch_unit(pl.Series([str(T0), "2023-11-14", None])) == "s"
    assert epoch_unit(pl.Series([str(T0 * 1000), "1", str(T0 * 1000 + 1)])) == "ms"
    assert epoch_unit(pl.Series([str(T0 * 10**6)])) == "us"
    assert epoch_unit(pl.Series([str(T0 * 10**9)])) == "ns"
    assert epoch_unit(pl.Series(["2023-11-14T10:00:00Z", None])) is None
    # a stray value in another unit is out of range there, not read as a date
    mixed = parse_timestamps(pl.Series([str(T0 * 1000), str(T0)]), "ms")
    assert mixed[0].timestamp() == T0 and mixed[1].year == 1970


# -- a file nothing of which can be kept ------------------------------------------------------
def test_a_file_whose_rows_are_all_quarantined_fails_the_run_and_stays_unrecorded(tmp_path):
    lake = first_day(tmp_path)
    before = snapshot(lake)
    good = write(tmp_path / "day2", "good.csv", events_csv(10, start=T0 + 86_400))
    bad = write(tmp_path / "day2", "bad.csv", "user_id,item_id,timestamp\nu1,a,tomorrow\nu2,b,\n")
    items = write(tmp_path / "day2", "items.csv", NEW_ITEMS)
    spec = SourceSpec(events=(str(good), str(bad)), items=str(items))
    with pytest.raises(InputError) as failed:
        ingest(RunContext.of(lake.root), spec)
    message = str(failed.value)
    assert message.startswith(f"{bad}: all 2 rows were quarantined")
    assert "bad_timestamp 1" in message and "missing_timestamp 1" in message
    assert "\n" not in message
    assert snapshot(lake) == before  # nothing of the run, and no hash of the bad file
    bad.write_text(events_csv(5, start=T0 + 2 * 86_400))  # fixed: ingested as any new file
    report = ingest(RunContext.of(lake.root), spec)
    assert report.events_added == 15


def test_an_item_file_whose_rows_are_all_quarantined_fails_the_run(tmp_path):
    events = write(tmp_path, "events.csv", events_csv(10))
    items = write(tmp_path, "items.csv", "item_id,title\n,Alpha\n ,Beta\n")
    lake = Lake(tmp_path / "lake")
    with pytest.raises(InputError, match=r"items\.csv: all 2 rows were quarantined"):
        ingest(RunContext.of(lake.root), SourceSpec(events=(str(events),), items=str(items)))
    assert not any(lake.exists(table) for table in TABLES)


# -- no source, or the sample by name ---------------------------------------------------------
@pytest.fixture
def tiny_sample(tmp_path, monkeypatch) -> Path:
    """The bundled sample replaced by three events in its layout (RecBole atomic files)."""
    folder = tmp_path / "sample"
    write(folder, "ml-100k.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
          f"1\t10\t4\t{T0}\n2\t10\t3\t{T0 + 1}\n2\t11\t5\t{T0 + 2}\n")  # fmt: skip
    write(folder, "ml-100k.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
          "class:token_seq\n10\tHeat\t1995\tAction\n11\tBabe\t1995\tComedy\n")  # fmt: skip
    recbole = importlib.import_module("recsys_core.data.sources.recbole")
    monkeypatch.setattr(recbole, "bundled_ml100k_dir", lambda: folder)
    return folder


def test_no_source_on_a_data_dir_holding_events_ingests_nothing(tmp_path):
    lake = first_day(tmp_path)
    before = snapshot(lake)
    report = ingest(RunContext.of(lake.root), SourceSpec())
    assert (report.files_read, report.events_added, report.items_added) == (0, 0, 0)
    assert report.events_total == 20 and report.items_total == 2
    assert report.notes and "nothing ingested" in report.notes[0]
    assert snapshot(lake) == before


def test_no_source_on_an_empty_data_dir_ingests_the_sample(tmp_path, tiny_sample):
    lake = Lake(tmp_path / "lake")
    report = ingest(RunContext.of(lake.root), SourceSpec())
    assert (report.events_added, report.items_added) == (3, 2)
    assert "movielens-100k" in report.notes[0]
    assert ingest(RunContext.of(lake.root), SourceSpec()).events_added == 0


def test_the_sample_by_name_is_added_to_a_data_dir_holding_events(tmp_path, tiny_sample):
    lake = first_day(tmp_path)
    report = ingest(RunContext.of(lake.root), SourceSpec(sample="movielens-100k"))
    assert (report.events_added, report.items_added, report.events_total) == (3, 2, 23)
    with pytest.raises(InputError, match="unknown sample 'ml-1m'"):
        SourceSpec(sample="ml-1m")
    with pytest.raises(InputError, match="give one source"):
        SourceSpec(sample="movielens-100k", events=("e.csv",), items="i.csv")


@pytest.mark.slow
def test_cli_ingest_without_a_source_says_it_keeps_the_data(harness, tmp_path):
    lake = first_day(tmp_path)
    before = snapshot(lake)
    result = CliRunner().invoke(app, ["ingest", "--data-dir", str(lake.root)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["events_added"] == 0 and report["events_total"] == 20
    assert "nothing ingested" in report["notes"][0]
    assert snapshot(lake) == before


@pytest.mark.slow
def test_cli_ingest_with_milliseconds_prints_the_unit(harness, tmp_path):
    events = write(tmp_path, "events.csv", events_csv(10, scale=1000))
    items = write(tmp_path, "items.csv", ITEMS)
    result = CliRunner().invoke(
        app, ["ingest", "--data-dir", str(tmp_path / "lake"), "--events", str(events),
              "--items", str(items)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["events_added"] == 10 and report["timestamp_units"] == {str(events): "ms"}
    assert "milliseconds" in report["notes"][0]


def test_ingest_task_retries_io_errors_never_bad_input():
    from tasks.stages import _retry_on_io

    class State:
        def __init__(self, error: BaseException):
            self.error = error

        def result(self, raise_on_failure: bool = True) -> BaseException:
            return self.error

    assert _retry_on_io(None, None, State(OSError("disk busy")))
    assert not _retry_on_io(None, None, State(InputError("events.csv: cut short")))
    assert not _retry_on_io(None, None, State(EOFError("stream ended")))


def test_the_nightly_summary_shows_the_ingest_notes():
    from flows.cli.render import render_summary
    from flows.reporting import NightlySummary, summary_markdown
    from recsys_core.pipeline import AlreadyPublished, EncodeReport, IngestReport, TrainReport

    note = "no source given: nothing ingested; lake keeps the data it holds"
    ingest_report = IngestReport(
        source="lake", events_total=20, users_total=7, items_total=2, notes=[note]
    )
    train = TrainReport(
        metric="ndcg@10", protocol="user_temporal", champion="recsys/1", champion_model="ease",
        decision="kept",
    )  # fmt: skip
    publish = AlreadyPublished(rows=10, users=2, model="recsys/1", version=0)
    summary = NightlySummary(
        data_dir="lake", ingest=ingest_report, encode=EncodeReport(encoder="tiny"), train=train,
        publish=publish,
    )  # fmt: skip
    assert f"- {note}" in summary_markdown(summary, {}).splitlines()
    assert f"  note       {note}" in render_summary(summary).splitlines()
