"""One run at a time over a data directory: a second nightly is refused with exit code 2 and
a line naming the holder, and the lock of a dead holder is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from flows.locks import DataDirBusy, exclusive_run
from flows.server import stop_server
from recsys_core.storage import Lake

ROOT = Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from flows.locks import exclusive_run
with exclusive_run(sys.argv[1], "nightly"):
    print("held", flush=True)
    time.sleep(600)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "PREFECT_API"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def test_a_held_data_dir_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
    data_dir = tmp_path / "lake"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data_dir)], cwd=ROOT, env=_env(),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirBusy) as refused, exclusive_run(data_dir, "nightly"):
            pass
        message = str(refused.value)
        assert f"nightly (pid {holder.pid} on host {socket.gethostname()}" in message
        assert "\n" not in message
        holder.send_signal(signal.SIGKILL)  # dies holding it
        holder.wait()
        with exclusive_run(data_dir, "nightly"):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.slow
def test_two_nightlies_at_once_register_one_champion(small_source, tiny_encoder_dir, tmp_path):
    events, items = small_source
    data_dir = tmp_path / "lake"
    home = tmp_path / "prefect"
    command = [
        sys.executable, "-m", "flows.cli", "nightly", "--data-dir", str(data_dir),
        "--events", str(events), "--items", str(items), "--encoder", str(tiny_encoder_dir),
        "--models", "ease", "--k", "5",
    ]  # fmt: skip
    env = _env(PREFECT_HOME=str(home))
    runs = []
    try:
        for _ in range(2):
            runs.append(
                subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        results = [(run, *run.communicate(timeout=800)) for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
        stop_server(home)
    codes = sorted(run.returncode for run, _, _ in results)
    assert codes == [0, 2], [err[-1500:] for _, _, err in results]
    winner = next(run for run, _, _ in results if run.returncode == 0)
    refused = next(err for run, _, err in results if run.returncode == 2)
    assert f"nightly (pid {winner.pid} on host {socket.gethostname()}" in refused
    from mlflow import MlflowClient

    uri = Lake(data_dir).tracking_uri
    versions = MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(
        "name='recsys'"
    )
    assert len(versions) == 1


def test_a_run_refused_before_the_holder_wrote_its_details_waits_for_them(tmp_path, monkeypatch):
    """The holder takes the lock, then writes who it is: a run refused in between names it
    all the same, and details a dead holder left behind are not taken for the holder's."""
    from filelock import FileLock

    import flows.locks as locks

    folder = (tmp_path / "lake").resolve() / locks.LOCKS
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = {"what": "forget-user", "pid": int(dead.stdout), "host": socket.gethostname(),
             "since": "2026-01-01 00:00:00 UTC"}  # fmt: skip
    (folder / "runs.json").write_text(json.dumps(stale))
    held = {"what": "nightly", "pid": os.getpid(), "host": socket.gethostname(),
            "since": "2026-01-02 00:00:00 UTC"}  # fmt: skip
    lock = FileLock(str(folder / "runs.lock"), timeout=0)
    with lock:
        writer = threading.Timer(0.4, lambda: (folder / "runs.json").write_text(json.dumps(held)))
        writer.start()
        try:
            with pytest.raises(DataDirBusy) as refused, exclusive_run(tmp_path / "lake", "nightly"):
                pass
        finally:
            writer.join()
        assert f"nightly (pid {os.getpid()} on host" in str(refused.value)
        assert "forget-user" not in str(refused.value)
        (folder / "runs.json").unlink()
        monkeypatch.setattr(locks, "HOLDER_WAIT_S", 0.2)
        busy = pytest.raises(DataDirBusy, match="details are not written yet")
        with busy, exclusive_run(tmp_path / "lake", "nightly"):
            pass
