"""One run at a time over a data directory: a second nightly is refused with exit code 2 and
a line naming the holder, and the lock of a dead holder is taken over."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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
