"""forget-user removes a user's data from every table, old version and model artifact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.errors import InputError
from recsys_core.pipeline import encode_items, ingest, recommend, train
from recsys_core.pipeline.forget import forget_user
from recsys_core.registry.tracking import CHAMPION, Tracker

SECRET = "forget-me-7f3a9c"


def files_mentioning(root: Path, needle: str) -> list[Path]:
    """Files whose bytes contain `needle`, plus Parquet files holding it in any string cell."""
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if needle.encode() in path.read_bytes():
            found.append(path)
        elif path.suffix == ".parquet":
            table = pq.read_table(path)
            for column in table.column_names:
                values = table.column(column).to_pylist()
                if any(isinstance(v, str) and needle in v for v in values):
                    found.append(path)
                    break
    return found


@pytest.fixture
def lake_with_secret_user(tmp_path, small_source, tiny_encoder_dir):
    events, items = small_source
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(items, source / "items.csv")
    rows = pl.read_csv(events)
    extra = rows.head(12).with_columns(user_id=pl.lit(SECRET))
    pl.concat([rows, extra]).write_csv(source / "events.csv")
    # a broken row of the user lands in quarantine, with the id in its raw text
    with (source / "events.csv").open("a") as fh:
        fh.write(f"{SECRET},i1,not-a-time,view,1.0\n")
    context = RunContext.of(
        tmp_path / "lake", encoder=str(tiny_encoder_dir), models=("ease", "mf(epochs=2)"), k=5,
        experiment="forget", registered_model="forget-model",
    )  # fmt: skip
    ingest(
        context, SourceSpec(events=(str(source / "events.csv"),), items=str(source / "items.csv"))
    )
    encode_items(context)
    train(context)
    recommend(context)
    recommend(context)  # a second version: the first one still holds the user
    return context


def test_forget_user_leaves_no_trace_and_keeps_everyone_else(lake_with_secret_user):
    context = lake_with_secret_user
    lake, settings = context.lake, context.settings
    assert files_mentioning(lake.root, SECRET)  # the data really was there
    others_before = lake.read("recommendations").filter(pl.col("user_id") != SECRET)
    tracker = Tracker(lake, settings.tracking.experiment, settings.tracking.registered_model)
    bundle, _ = tracker.load(CHAMPION)
    some_users = [u for u in bundle.users.ids.to_list() if u != SECRET][:5]
    histories, _ = bundle.histories_for(some_users)
    scores_before = bundle.model.score(histories)

    report = forget_user(context, SECRET)
    assert report.rows_deleted["events"] == 12
    assert report.rows_deleted["recommendations"] == 5
    assert report.rows_deleted["quarantine"] == 1
    assert report.model_files_rewritten >= 2

    leftovers = files_mentioning(lake.root, SECRET)
    assert leftovers == []
    # per-user weights (the mf candidate's user vectors) lose the user's row, and only it
    blanked = 0
    for weights_file in lake.mlflow_dir.rglob("weights.safetensors"):
        vectors = load_file(str(weights_file)).get("user_vectors")
        if vectors is None:
            continue
        users = pl.read_parquet(weights_file.parent / "users.parquet")
        row = users.filter(pl.col("id").str.starts_with("forgotten-"))["index"]
        assert row.len() == 1
        assert not vectors[row[0]].any() and vectors.abs().sum(1).gt(0).sum() == len(vectors) - 1
        blanked += 1
    assert blanked >= 1
    others_after = lake.read("recommendations").filter(pl.col("user_id") != SECRET)
    assert others_after.sort(["user_id", "rank"]).equals(others_before.sort(["user_id", "rank"]))
    bundle_after, _ = tracker.load(CHAMPION)
    assert SECRET not in bundle_after.users.ids.to_list()
    histories, _ = bundle_after.histories_for(some_users)
    torch.testing.assert_close(bundle_after.model.score(histories), scores_before)
    # the tables still work: the next night publishes as usual
    recommend(context)
    assert lake.read("recommendations").filter(pl.col("user_id") == SECRET).is_empty()


def test_forgetting_an_unknown_user_is_an_input_error(lake_with_secret_user):
    context = lake_with_secret_user
    with pytest.raises(InputError, match="no data of user"):
        forget_user(context, "nobody-at-all")
    with pytest.raises(InputError, match="empty"):
        forget_user(context, " ")


# -- through the CLI and Prefect: the id must not stay in Prefect's records either ------------
ROOT = Path(__file__).resolve().parents[2]


def test_cli_forget_user_leaves_no_trace_under_the_data_dir(lake_with_secret_user):
    from flows.server import stop_server

    root = lake_with_secret_user.lake.root
    # as a user runs it: Prefect's home (its database, the server's log) in the data dir
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "PREFECT_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "flows.cli", "forget-user", SECRET, "--data-dir", str(root),
               "--yes"]  # fmt: skip
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout)["rows_deleted"]["events"] == 12
        assert (root / "prefect" / "prefect.db").exists()  # Prefect's records are in there
        assert files_mentioning(root, SECRET) == []  # while its server still runs
    finally:
        stop_server(root / "prefect")
    assert files_mentioning(root, SECRET) == []


def test_an_id_given_to_prefect_in_clear_is_masked_and_compacted_away(lake_with_secret_user):
    """A deployment run gets the id in clear from its form: once done, no file holds it."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.params import DataOptions
    from flows.privacy import MASK, forget_user_flow
    from flows.server import shared_server, stop_server

    root = lake_with_secret_user.lake.root
    home = root / "prefect"
    parameters = {"user_id": SECRET, "options": DataOptions(data_dir=str(root))}
    try:
        with shared_server(home) as server, temporary_settings({PREFECT_API_URL: server.url}):
            with get_client(sync_client=True) as client:  # as a deployment's run is created
                created = client.create_flow_run(forget_user_flow, parameters=parameters)
                assert client.read_flow_run(created.id).parameters["user_id"] == SECRET
            report = run_flow(forget_user_flow, flow_run=created, parameters=parameters)
            assert report["rows_deleted"]["events"] == 12
            with get_client(sync_client=True) as client:
                assert client.read_flow_run(created.id).parameters["user_id"] == MASK
            APILogWorker.drain_all(timeout=30)  # its last lines reach the server before it stops
            assert files_mentioning(root, SECRET) == []
    finally:
        stop_server(home)


def test_forget_user_without_a_terminal_or_yes_exits_2_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["forget-user", "someone", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: forget-user: no terminal to confirm on; pass --yes"
    ]
