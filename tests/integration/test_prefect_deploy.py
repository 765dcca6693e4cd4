"""`prefect deploy --all` as Prefect users run it, on a fresh server, and a deployed flow runs.

A server on a free loopback port with an empty database; from the checkout root, with no
`RECSYS_*` variable set: create the cpu pool, `prefect deploy --all --prefect-file
deployments/prefect.yaml`, press Run on the ingest deployment through the REST API, let a
worker poll once, and wait for Completed. Every process is stopped by its PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.server import free_port
from flows.stack import Stack
from recsys_core.storage import Lake

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def user_env(api_url: str, home: Path) -> dict[str, str]:
    """A shell of a Prefect user: the server's address, and none of this project's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "PREFECT_"))}
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(home),
        # this checkout's code, wherever the shared environment was installed from
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


def prefect(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "prefect"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture
def server(tmp_path):
    stack = Stack(tmp_path / "server", tmp_path / "run", prefect_port=free_port())
    try:
        stack.start_prefect()
        yield stack
    finally:
        pid = stack.running("prefect")
        stack.stop("prefect")
        if pid is not None:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_deploy_all_on_a_fresh_server_and_a_deployed_flow_runs(server, tmp_path, small_source):
    env = user_env(server.api_url, tmp_path / "home")
    created = prefect(env, "work-pool", "create", "cpu", "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = prefect(env, "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]

    deployments = {d["name"]: d for d in server.request("/deployments/filter", {})}
    assert {"nightly", "ingest", "encode", "train", "recommend", "forget-user"} <= set(deployments)
    for deployment in deployments.values():  # runs start in this checkout, whoever deployed it
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ]
    schedule = deployments["nightly"]["schedules"][0]["schedule"]
    assert (schedule["cron"], schedule["timezone"]) == ("0 2 * * *", "UTC")

    data_dir = tmp_path / "lake"
    events, items = small_source
    run = server.request(
        f"/deployments/{deployments['ingest']['id']}/create_flow_run",
        {"parameters": {"source": {"events": [str(events)], "items": str(items)},
                        "options": {"data_dir": str(data_dir)}}},
    )  # fmt: skip
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "cpu", "--type", "process",
         "--run-once"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 400
        state = run["state"]["type"]
        while state not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            assert time.monotonic() < deadline, f"ingest run still {state}"
            time.sleep(2)
            state = server.request(f"/flow_runs/{run['id']}")["state"]["type"]
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGINT)  # a worker ignores SIGTERM
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
        log.close()
    assert state == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]
    assert Lake(data_dir).read("events", ["user_id"]).height > 0


def test_the_gpu_deployment_deploys_apart(server, tmp_path):
    env = user_env(server.api_url, tmp_path / "home")
    # a process pool stands in for a Kubernetes or Docker one: what is checked is the file
    assert prefect(env, "work-pool", "create", "gpu", "--type", "process").returncode == 0
    deployed = prefect(env, "deploy", "--all", "--prefect-file", "deployments/gpu.yaml")
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    (deployment,) = server.request("/deployments/filter", {})
    assert deployment["name"] == "encode-gpu" and deployment["work_pool_name"] == "gpu"
    assert deployment["job_variables"] == {"env": {"RECSYS_DEVICE": "cuda"}}
