"""Deployments against a real Prefect server: deploy, start a worker, press Run, wait.

Starts a server on a free loopback port, creates the cpu process pool, deploys from
deployments/prefect.yaml, starts a worker, triggers the nightly deployment through the REST
API the way the UI's Run button does, waits for Completed, checks the published table and
the run's artifacts, and stops every process by its PID.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from flows.server import free_port
from flows.stack import Stack
from recsys_core.settings import DEFAULT_MODELS
from recsys_core.storage import Lake

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(tmp_path):
    stack = Stack(tmp_path / "lake", tmp_path / "run", prefect_port=free_port())
    try:
        stack.start_prefect()
        stack.deploy()
        stack.start_worker()
        yield stack
    finally:
        pids = [stack.running(name) for name in ("worker", "prefect")]
        stack.stop("worker")
        stack.stop("prefect")
        for pid in filter(None, pids):
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def listening_addresses(pid: int) -> set[str]:
    import psutil

    parent = psutil.Process(pid)
    tree = [parent, *parent.children(recursive=True)]
    return {
        conn.laddr.ip
        for proc in tree
        for conn in proc.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }


def test_nightly_deployment_runs_from_the_api(stack, small_source, tiny_encoder_dir):
    assert listening_addresses(stack.running("prefect")) == {"127.0.0.1"}
    deployments = {d["name"]: d for d in stack.request("/deployments/filter", {})}
    assert set(deployments) >= {"nightly", "ingest", "encode", "train", "recommend"}
    nightly = deployments["nightly"]
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
    assert nightly["global_concurrency_limit"]["limit"] == 1
    form = nightly["parameter_openapi_schema"]
    assert set(form["properties"]) == {"source", "options"}
    assert form["definitions"]["RunOptions"]["properties"]["k"]["description"]
    # a stage's form offers the options of that stage
    train_form = deployments["train"]["parameter_openapi_schema"]["definitions"]["TrainOptions"]
    assert {"models", "protocol", "encoder"} <= set(train_form["properties"])
    assert "k" not in train_form["properties"]

    events, items = small_source
    parameters = {
        "source": {"events": [str(events)], "items": str(items)},
        "options": {"data_dir": str(stack.data_dir), "k": 4, "encoder": str(tiny_encoder_dir)},
    }
    run = stack.request(f"/deployments/{nightly['id']}/create_flow_run", {"parameters": parameters})
    deadline = time.monotonic() + 600
    state = run["state"]["type"]
    while state not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
        assert time.monotonic() < deadline, f"nightly still {state}; see {stack.run_dir}"
        time.sleep(2)
        state = stack.request(f"/flow_runs/{run['id']}")["state"]["type"]
    assert state == "COMPLETED", (stack.run_dir / "worker.log").read_text()[-3000:]

    recs = Lake(stack.data_dir).read("recommendations")
    users = Lake(stack.data_dir).read("events", ["user_id"])["user_id"].n_unique()
    assert recs.height == 4 * users

    artifacts = stack.request(
        "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}
    )
    by_key = {a["key"]: a for a in artifacts}
    assert {"nightly-summary", "nightly-candidates", "nightly-ingest"} <= set(by_key)
    assert "champion" in by_key["nightly-summary"]["data"]
    candidates = json.loads(by_key["nightly-candidates"]["data"])
    # the small source has text and short ordered histories: the sequential model joins
    assert {row["model"] for row in candidates} == {*DEFAULT_MODELS, "sasrec"}
