"""An ingest that dies after its table commits but before its manifest is simply repeated;
one that fails there (an error, not a kill) undoes its commits."""

from __future__ import annotations

import polars as pl
import pytest

from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.pipeline import ingest
from recsys_core.pipeline.ingest import run as ingest_run
from recsys_core.storage import Lake

EVENTS = (
    "user_id,item_id,timestamp\n"
    "u1,a,1700000000\n"
    "u2,b,1700000100\n"
    ",a,1700000200\n"  # quarantined
    "u3,a,not-a-time\n"  # quarantined
)


def test_rerun_after_a_crash_before_the_manifest_doubles_nothing(tmp_path, monkeypatch):
    (tmp_path / "events.csv").write_text(EVENTS)
    (tmp_path / "items.csv").write_text("item_id,title\na,A\nb,B\n")
    spec = SourceSpec(events=(str(tmp_path / "events.csv"),), items=str(tmp_path / "items.csv"))
    lake = Lake(tmp_path / "lake")
    write = Lake.write

    def crash_on_manifest(self, table, *args, **kwargs):
        if table == "ingest_manifest":
            raise OSError("killed before the manifest")
        return write(self, table, *args, **kwargs)

    monkeypatch.setattr(Lake, "write", crash_on_manifest)
    # a process killed there never undoes the commits it made
    monkeypatch.setattr(ingest_run._Commits, "undo", lambda self: None)
    with pytest.raises(OSError):
        ingest(RunContext.of(lake.root), spec)
    assert lake.read("events").height == 2 and lake.read("quarantine").height == 2
    monkeypatch.setattr(Lake, "write", write)

    report = ingest(RunContext.of(lake.root), spec)
    assert report.files_read == 2  # the manifest never recorded them
    assert report.events_added == 0 and report.duplicates == 2 and report.quarantined == 2
    assert lake.read("events").height == 2
    assert lake.read("quarantine").height == 2
    again = ingest(RunContext.of(lake.root), spec)
    assert again.files_read == 0 and lake.read("quarantine").height == 2
    assert lake.read("events").select(pl.col("user_id").n_unique()).item() == 2
