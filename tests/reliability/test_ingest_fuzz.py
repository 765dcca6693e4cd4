"""Fuzzed logs: ingestion never crashes, and every row read is stored, a duplicate or
quarantined with a reason (hypothesis over the bad-input classes of ingestion). A log none
of whose rows can be kept is refused whole: bad input naming the file, nothing stored."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.data.validation import REASONS
from recsys_core.errors import InputError
from recsys_core.pipeline import ingest
from recsys_core.storage import Lake

ids = st.one_of(
    st.sampled_from(["u1", "u2", "i1", "i2", "", " ", "NULL"]),
    st.text(min_size=1, max_size=12),
    st.text(min_size=300, max_size=400),
)
timestamps = st.one_of(
    st.integers(800_000_000, 1_900_000_000).map(str),  # before 1995 .. far future
    st.sampled_from(["2023-11-14T22:13:20Z", "2023-11-14 22:13:20+02:00", "2023-11-14"]),
    st.sampled_from(["", "yesterday", "1e12", "-5", "NaN", "17000000000000"]),
    st.text(max_size=10),
)
values = st.one_of(st.floats(allow_nan=True).map(repr), st.sampled_from(["", "1", "x", "1,5"]))
rows = st.lists(
    st.tuples(ids, ids, timestamps, st.sampled_from(["view", "click", ""]), values).map(list)
    | st.lists(st.text(max_size=6), min_size=1, max_size=8),  # wrong field counts
    min_size=0,
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows, bom=st.booleans(), crlf=st.booleans(), repeat=st.booleans())
def test_fuzzed_logs_are_fully_accounted_for(rows, bom, crlf, repeat):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(["user_id", "item_id", "timestamp", "event_type", "value"])
    records = rows + (rows[:5] if repeat else [])  # exact repeats are duplicates
    writer.writerows(records)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        events = folder / "events.csv"
        events.write_bytes(("\ufeff" if bom else "").encode() + buffer.getvalue().encode())
        (folder / "items.csv").write_text("item_id,title\ni1,One\ni2,Two\n")
        lake = Lake(folder / "lake")
        spec = SourceSpec(events=(str(events),), items=str(folder / "items.csv"))
        report = ingest_or_refused(lake, spec, events)
        if report is None:
            return
        assert report.rows_read == len(records)  # csv.writer writes no blank lines
        assert report.accounted
        assert report.rows_read == report.events_added + report.duplicates + report.quarantined
        stored = lake.read("events").height if lake.exists("events") else 0
        assert stored == report.events_added
        if report.quarantined:
            quarantine = lake.read("quarantine")
            assert quarantine.height == report.quarantined
            assert set(quarantine["reason"]) <= set(REASONS)
            assert quarantine["detail"].null_count() == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.binary(min_size=0, max_size=60), max_size=30))
def test_arbitrary_bytes_never_crash_ingestion(lines):
    """Invalid UTF-8, stray quotes and separators: quarantined or stored, never a crash."""
    body = b"user_id,item_id,timestamp\n" + b"\n".join(line.replace(b"\n", b" ") for line in lines)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "events.csv").write_bytes(body)
        (folder / "items.csv").write_text("item_id,title\ni1,One\n")
        lake = Lake(folder / "lake")
        spec = SourceSpec(events=(str(folder / "events.csv"),), items=str(folder / "items.csv"))
        report = ingest_or_refused(lake, spec, folder / "events.csv")
        if report is None:
            return
        assert report.accounted
        assert report.rows_read == report.events_added + report.duplicates + report.quarantined
        again = ingest(RunContext.of(lake.root), spec)
        assert again.files_read == 0 and again.events_added == 0


def ingest_or_refused(lake: Lake, spec: SourceSpec, events: Path):
    """The run's report; None when every row of `events` was quarantined, which refuses the
    file: one line naming it, and no table written."""
    try:
        report = ingest(RunContext.of(lake.root), spec)
    except InputError as refused:
        assert str(refused).startswith(f"{events}: all ") and "\n" not in str(refused)
        assert not any(lake.exists(t) for t in ("events", "items", "quarantine"))
        return None
    assert report.rows_read == 0 or report.quarantined < report.rows_read
    return report


def _ingest_text(text: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "events.csv").write_bytes(text)
        (folder / "items.csv").write_text("item_id,title\ni1,One\n")
        spec = SourceSpec(events=(str(folder / "events.csv"),), items=str(folder / "items.csv"))
        lake = Lake(folder / "lake")
        report = ingest(RunContext.of(lake.root), spec)
        reasons = lake.read("quarantine")["reason"].to_list() if report.quarantined else []
        return report, reasons


def test_extra_fields_on_the_first_row_are_quarantined_not_fatal():
    report, reasons = _ingest_text(
        b"user_id,item_id,timestamp\nu1,i1,1700000000,x,y,z\nu2,i1,1700000001\n"
    )
    assert (report.events_added, report.quarantined) == (1, 1)
    assert reasons == ["wrong_field_count"]


def test_a_quote_never_closed_quarantines_its_row_and_keeps_the_others():
    report, reasons = _ingest_text(
        b'user_id,item_id,timestamp\nu1,i1,1700000000\nu2,i1,1700000001\n"u3,i1,17\n'
    )
    assert report.events_added == 2 and report.quarantined == 1
    assert report.accounted and len(reasons) == 1
