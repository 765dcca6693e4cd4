"""What stopped or killed runs leave behind is removed by the next run, and only that: never a
live run's files, nor the files of a version that can still be read or restored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.pipeline import ingest, plan_encode, recommend
from recsys_core.pipeline.recommend import SHARD_FILES
from recsys_core.storage.staging import OWNER_FILE

ROOT = Path(__file__).resolve().parents[1]


def _child(code: str) -> subprocess.Popen:
    """A Python process running `code` with this checkout's library; it prints `ready` once
    it has done its part."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
           os.environ.get("PYTHONPATH")])), "OMP_NUM_THREADS": "1"}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip


def _wait_ready(child: subprocess.Popen) -> None:
    line = child.stdout.readline()
    assert line.strip() == "ready", child.stderr.read()[-3000:]


def _stop(child: subprocess.Popen) -> None:
    child.kill()
    child.wait(timeout=60)


# -- encode staging ----------------------------------------------------------------------------
@pytest.fixture
def ingested_context(tmp_path, small_source, tiny_encoder_dir) -> RunContext:
    context = RunContext.of(tmp_path / "lake", encoder=str(tiny_encoder_dir),
                            encoder_max_length=64)  # fmt: skip
    events, items = small_source
    ingest(context, SourceSpec(events=(str(events),), items=str(items)))
    return context


def _plan_in_child(context: RunContext, *, then: str) -> subprocess.Popen:
    """Plan an encode in another process (its staging folder then holds only its owner
    file, as after a stop before the first part), then `then`: `exit` or `wait`."""
    root, encoder = str(context.lake.root), context.settings.embedding.encoder
    code = f"""
import sys, time
from recsys_core.context import RunContext
from recsys_core.pipeline import plan_encode
plan_encode(RunContext.of({root!r}, encoder={encoder!r}, encoder_max_length=64))
print("ready", flush=True)
if {then!r} == "wait":
    time.sleep(600)
"""
    return _child(code)


def _plan_folders(context: RunContext) -> set[str]:
    root = context.lake.staging("encode").root
    return {f.name for f in root.iterdir()} if root.is_dir() else set()


def test_the_empty_staging_of_a_stopped_encode_is_removed_by_the_next_run(ingested_context):
    context = ingested_context
    stopped = _plan_in_child(context, then="exit")
    _wait_ready(stopped)
    stopped.wait(timeout=60)
    (ended,) = _plan_folders(context)
    assert [f.name for f in (context.lake.staging("encode").root / ended).iterdir()] == [OWNER_FILE]
    live = _plan_in_child(context, then="wait")  # the next run, in another process
    try:
        _wait_ready(live)
        (running,) = _plan_folders(context)  # the stopped run's folder is gone
        assert running != ended
        plan = plan_encode(context)  # one more run: the live run's folder is kept
        assert _plan_folders(context) == {running, plan.plan_id}
    finally:
        _stop(live)
    # the killed run's folder goes, and so does the plan of this process that is not running
    again = plan_encode(context)
    assert _plan_folders(context) == {again.plan_id}


# -- recommendation shards ---------------------------------------------------------------------
def _rank_in_child(context: RunContext, *, then: str) -> subprocess.Popen:
    """Plan a recommend and rank its first shard in another process, then `kill` itself
    (SIGKILL, as a killed run) or `wait` (a run still ranking)."""
    code = f"""
import os, signal, time
from recsys_core.context import RunContext
from recsys_core.pipeline import plan_recommend, rank_shard
context = RunContext.of({str(context.lake.root)!r})
plan = plan_recommend(context, shard_users=20)
rank_shard(context, plan, plan.shards[0])
print("ready", flush=True)
if {then!r} == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(600)
"""
    return _child(code)


def _shard_files(context: RunContext) -> set[str]:
    return {f.name for f in context.lake.path("recommendations").glob(SHARD_FILES)}


def _committed(context: RunContext) -> set[str]:
    return set(context.lake.logged_files("recommendations"))


def _token_of(context: RunContext, pid: int) -> str:
    """The plan token of the recommend run of process `pid`, from its owner file."""
    for owner in (context.lake.staging("recommend").root).glob("*.json"):
        if json.loads(owner.read_text())["pid"] == pid:
            return owner.stem
    raise AssertionError(f"no owner file of process {pid}")


def _owners(context: RunContext) -> set[str]:
    return {f.stem for f in (context.lake.staging("recommend").root).glob("*.json")}


@pytest.mark.slow
def test_shards_of_a_killed_recommend_are_removed_and_a_live_run_s_are_kept(trained_lake):
    context = trained_lake
    lake = context.lake
    recommend(context)  # last night: version 0
    first = _shard_files(context)
    assert first and first <= _committed(context)

    killed = _rank_in_child(context, then="kill")
    _wait_ready(killed)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    (killed_shard,) = _shard_files(context) - first  # staged, committed by no version
    assert killed_shard not in _committed(context)
    running = _rank_in_child(context, then="wait")  # the next run, in another process
    try:
        _wait_ready(running)
        (running_shard,) = _shard_files(context) - first - {killed_shard}
        assert killed_shard not in _shard_files(context)  # the killed run's shard is gone
        running_token = _token_of(context, running.pid)
        assert running_token in running_shard
        assert killed_shard.split("-")[1] not in _owners(context)  # and its owner file

        report = recommend(context)  # one more run, while the other still ranks
        assert report.version == 1
        left = _shard_files(context)
        assert running_shard in left and running_token in _owners(context)
        assert first <= left  # last night's files stay: it can still be restored
        assert lake.rollback("recommendations", 0) == 2
    finally:
        _stop(running)
    last = recommend(context)  # the run that was ranking has ended now: its shard goes too
    assert _shard_files(context) <= _committed(context)
    assert _owners(context) == {_token_of(context, os.getpid())}  # only this last run's
    assert last.version == 3


def test_only_files_no_log_entry_names_are_removed(tmp_path):
    from recsys_core.storage import Lake
    from tests.test_storage import recs_of

    lake = Lake(tmp_path / "lake")
    lake.publish("recommendations", recs_of({"a": 2}, "m/1"))
    lake.publish("recommendations", recs_of({"b": 2}, "m/2"))
    lake.purge_history("recommendations")  # the log starts from a checkpoint now
    night_two = lake.version("recommendations")
    lake.publish("recommendations", recs_of({"c": 2}, "m/3"))
    stray = lake.write_file("recommendations", recs_of({"d": 2}, "m/4"), name="run-x-shard-0")
    kept = lake.write_file("recommendations", recs_of({"e": 2}, "m/5"), name="run-y-shard-0")
    removed = lake.remove_unlogged("recommendations", "*.parquet",
                                   keep=lambda f: f.name == kept.path)  # fmt: skip
    assert [f.name for f in removed] == [stray.path]
    assert (lake.path("recommendations") / kept.path).is_file()
    assert lake.read("recommendations")["model"].unique().to_list() == ["m/3"]
    lake.rollback("recommendations", night_two)  # its file is named by the checkpoint only
    assert lake.read("recommendations")["model"].unique().to_list() == ["m/2"]
