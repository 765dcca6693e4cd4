"""Commands that run flows share one Prefect server per data directory: a slow start does not
kill them, later commands reuse the server, and a killed command leaves no server behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flows.server import alive, answers, read_record, stop_server

ROOT = Path(__file__).resolve().parents[1]

# Makes every Prefect API server process (Prefect's temporary one and the shared one both run
# with PREFECT__SERVER_EPHEMERAL set) take 40 s longer to start: a machine busy enough to pass
# Prefect's own 20 s limit (which counts only its polling sleeps, so a busy client waits longer).
SLOW_SERVER = """
import os, time
if os.environ.get("PREFECT__SERVER_EPHEMERAL"):
    time.sleep(40)
"""


def _env(prefect_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "PREFECT_API"))}
    env.update(
        PREFECT_HOME=str(prefect_home),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **extra,
    )
    return env


def _recsys(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


@pytest.mark.slow
def test_a_slow_server_start_is_waited_for_and_the_next_command_reuses_it(small_source, tmp_path):
    events, items = small_source
    home = tmp_path / "prefect"
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_SERVER)
    env = _env(home)
    env["PYTHONPATH"] = os.pathsep.join([str(slow), env["PYTHONPATH"]])
    ingest = _recsys("ingest", "--data-dir", str(tmp_path / "lake"), "--events", str(events),
                     "--items", str(items))  # fmt: skip
    try:
        first = subprocess.run(
            ingest, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400
        )
        assert first.returncode == 0, first.stderr[-2000:]
        server = read_record(home)
        assert server is not None and answers(server.url)
        second = subprocess.run(
            ingest, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400
        )
        assert second.returncode == 0, second.stderr[-2000:]
        assert read_record(home) == server  # the same server, not a new one
    finally:
        stop_server(home)
    assert not alive(server.pid)
    assert read_record(home) is None


@pytest.mark.slow
def test_a_killed_command_leaves_no_server_running(trained_lake, tmp_path):
    home = tmp_path / "prefect"
    env = _env(home, RECSYS_SERVER_IDLE_MINUTES="0.05")  # stop 3 s after the last command
    command = _recsys("train", "--data-dir", str(trained_lake.lake.root), "--models", "ease")
    proc = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    spawned: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 300
        for line in proc.stderr:  # the flow run has begun: its server is up
            assert time.monotonic() < deadline, "no flow run began within 300 s"
            if "Beginning flow run" in line:
                break
        spawned = psutil.Process(proc.pid).children(recursive=True)
        assert spawned, "the command started no server"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _, left = psutil.wait_procs(spawned, timeout=90)
        assert not left, f"left running after the command was killed: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stop_server(home)
        for child in spawned:  # on failure, leave nothing behind either
            if child.is_running():
                child.kill()
    assert read_record(home) is None


def test_the_server_of_make_ui_is_used_when_recorded(tmp_path):
    """A command over a data directory whose `make ui` server runs sends its runs there."""
    from flows.server import ServerRecord, shared_server, write_record

    home = tmp_path / "prefect"
    try:
        with shared_server(home) as started:  # stands in for the server of `make ui`
            ui = ServerRecord(started.pid, started.port, started.url, started.host, "make ui")
            write_record(home, ui)
            with shared_server(home) as used:
                assert used == ui
    finally:
        write_record(home, started)  # hand it back to `recsys`, to stop it
        stop_server(home)
    assert not alive(started.pid)
