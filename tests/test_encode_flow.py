"""The encode flow maps shards over Prefect's task runner and commits once; the CLI's
`encode` options and `finetune-encoder` command run through the flows."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flows.cli import app
from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.pipeline import ingest
from recsys_core.storage import Lake

pytestmark = pytest.mark.slow


@pytest.fixture
def ingested(tmp_path, small_source):
    lake = Lake(tmp_path / "lake")
    events, items = small_source
    ingest(RunContext.of(lake.root), SourceSpec(events=(str(events),), items=str(items)))
    return lake


def test_encode_flow_runs_one_task_per_shard_and_one_commit(harness, ingested, tiny_encoder_dir):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.params import EncodeOptions
    from flows.stages import encode_flow

    options = EncodeOptions(
        data_dir=str(ingested.root), encoder=str(tiny_encoder_dir), encode_shards=3
    )
    state = encode_flow(options=options, return_state=True)
    report = state.result()
    assert report.encoded == 40 and report.shards == 3
    assert len(ingested.history("item_embeddings")) == 1
    assert ingested.read("item_embeddings").height == 40
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    names = sorted(r.name for r in runs)
    assert [n for n in names if n.startswith("encode-shard-")] == [
        "encode-shard-0", "encode-shard-1", "encode-shard-2",
    ]  # fmt: skip
    assert {"plan-encode", "commit-encode"} <= {n.rsplit("-", 1)[0] for n in names}
    # nothing changed: the next run plans no shards and writes no commit
    again = encode_flow(options=options)
    assert again.encoded == 0 and again.reused == 40 and again.shards == 0
    assert len(ingested.history("item_embeddings")) == 1


def test_a_failed_shard_fails_the_flow_and_publishes_nothing(
    harness, ingested, tiny_encoder_dir, monkeypatch
):
    from flows.params import EncodeOptions
    from flows.stages import encode_flow
    from recsys_core.pipeline import encode

    real = encode.encode_shard

    def flaky(context, shard, **kwargs):
        if shard.index == 1:
            raise RuntimeError("worker lost")
        return real(context, shard, **kwargs)

    monkeypatch.setattr(encode, "encode_shard", flaky)
    options = EncodeOptions(
        data_dir=str(ingested.root), encoder=str(tiny_encoder_dir), encode_shards=3
    )
    with pytest.raises(RuntimeError, match="worker lost"):
        encode_flow(options=options)
    assert not ingested.exists("item_embeddings")
    staged = list((ingested.root / "_staging").rglob("*.parquet"))
    assert len(staged) == 2  # the healthy shards staged their rows; no commit read them
    monkeypatch.setattr(encode, "encode_shard", real)
    report = encode_flow(options=options)
    assert report.encoded == 40
    assert ingested.read("item_embeddings").height == 40


def test_cli_finetune_then_encode_with_the_registered_version(harness, ingested, tiny_encoder_dir):
    data_dir = str(ingested.root)
    missing = CliRunner().invoke(
        app, ["encode", "--data-dir", data_dir, "--encoder", "models:/recsys-encoder/1"]
    )
    assert missing.exit_code == 2 and "no MLflow store" in missing.stderr
    args = [
        "finetune-encoder", "--data-dir", data_dir, "--encoder", str(tiny_encoder_dir),
        "--split", "cold_items", "--pairs", "48", "--batch-size", "8", "--max-length", "32",
        "--learning-rate", "1e-3", "--device", "cpu",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["reference"] == "models:/recsys-encoder/1" and report["split"] == "cold_items"
    assert report["steps"] == 48 // 8 and report["epochs"][0]["val_loss"] > 0
    assert "recsys encode --data-dir" in result.stderr

    args = [
        "encode", "--data-dir", data_dir, "--encoder", "models:/recsys-encoder/1",
        "--shards", "2", "--device", "cpu", "--batch-size", "4", "--max-length", "64",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    encoded = json.loads(result.stdout)
    assert encoded["encoded"] == 40 and encoded["shards"] == 2
    assert encoded["encoder"].startswith("recsys-encoder/1:mean:64:")

    unknown = CliRunner().invoke(
        app, ["encode", "--data-dir", data_dir, "--encoder", "models:/recsys-encoder/7"]
    )
    # Prefect's own log lines may share stderr; the error itself is one line
    errors = [line for line in unknown.stderr.splitlines() if line.startswith("error:")]
    assert unknown.exit_code == 2 and len(errors) == 1
    assert "'models:/recsys-encoder/7' is not a registered version" in errors[0]


def test_cli_finetune_usage_errors_exit_2_before_anything_runs(tmp_path):
    data_dir = tmp_path / "lake"
    for extra, message in [
        (["--split", "random"], "unknown split 'random'"),
        (["--learning-rate", "0"], "invalid learning_rate=0.0"),
    ]:
        result = CliRunner().invoke(app, ["finetune-encoder", "--data-dir", str(data_dir), *extra])
        assert result.exit_code == 2 and message in result.stderr
    assert not data_dir.exists()
    result = CliRunner().invoke(app, ["encode", "--data-dir", str(data_dir), "--shards", "0"])
    assert result.exit_code == 2  # typer's own range check


def test_the_nightly_reports_an_encode_deployment_run_as_a_local_encode(
    harness, ingested, tiny_encoder_dir, monkeypatch
):
    from types import SimpleNamespace
    from uuid import uuid4

    from prefect import flow
    from prefect.states import Completed

    import flows.nightly
    from flows.params import RunOptions
    from recsys_core.pipeline import encode_items

    settings = RunOptions(data_dir=str(ingested.root), encoder=str(tiny_encoder_dir)).settings()
    settings = settings.updated(encode_deployment="encode/encode-gpu")
    done = {}

    def run_deployment(name, parameters, timeout):  # the deployment's run, done here
        run = SimpleNamespace(id=uuid4(), name="calm-fox", state=Completed())
        done["report"] = encode_items(RunContext(settings, run_id=str(run.id)))
        return run

    monkeypatch.setattr(flows.nightly, "run_deployment", run_deployment)

    options = RunOptions(data_dir=str(ingested.root), encoder=str(tiny_encoder_dir))

    @flow
    def remote():  # the nightly's encode step, with the deployment's run done here
        return flows.nightly.encode_remotely(settings, options)

    assert remote() == done["report"] and done["report"].encoded == 40
    # a run with nothing left to encode commits nothing: every item counts as reused
    again = remote()
    assert again.encoded == 0 and again.reused == again.items_total == 40
    assert again.encoder == "(deployment encode/encode-gpu, run calm-fox)"
