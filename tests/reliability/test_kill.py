"""SIGKILL the nightly inside each stage; a rerun converges to what a clean run publishes.

A reduced campaign of recsys_core.testing.faults (one kill per stage); benchmarks/faults.py
runs longer ones. Each kill happens at a random moment inside the stage, while a reader keeps
reading the recommendations table.
"""

from __future__ import annotations

import pytest

from flows.server import free_port
from flows.stack import Stack
from recsys_core.testing.faults import STAGES, run_campaign

pytestmark = pytest.mark.slow


def test_killed_nights_converge_without_losing_rows_or_exposing_partial_tables(tmp_path):
    stack = Stack(tmp_path / "server", tmp_path / "run", prefect_port=free_port())
    try:
        stack.start_prefect()
        campaign = run_campaign(trials=1, workdir=tmp_path, api_url=stack.api_url, seed=7)
    finally:
        stack.stop("prefect")
    summary = campaign.summary()
    assert summary["errors"] == []
    assert {s: v["trials"] for s, v in summary["kill_trials"].items()} == dict.fromkeys(STAGES, 1)
    assert summary["converged"] == summary["trials"] == len(STAGES)
    assert summary["rows_lost"] == 0 and summary["rows_duplicated"] == 0
    assert summary["partial_tables_seen"] == 0 and summary["reads"] > 0
