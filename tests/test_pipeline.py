"""Stages over a real data directory, without Prefect: encode incrementally, train, publish."""

from __future__ import annotations

import polars as pl
import pytest

from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.pipeline import encode_items, ingest, recommend, train
from recsys_core.registry.tracking import CHALLENGER, CHAMPION, Tracker
from recsys_core.settings import Settings
from recsys_core.storage import Lake


@pytest.fixture
def lake_with_data(tmp_path, small_source, tiny_encoder_dir):
    lake = Lake(tmp_path / "lake")
    events, items = small_source
    ingest(RunContext.of(lake.root), SourceSpec(events=(str(events),), items=str(items)))
    settings = Settings(
        data_dir=lake.root, encoder=str(tiny_encoder_dir), encoder_max_length=64,
        experiment="test", registered_model="test-model",
    )  # fmt: skip
    return lake, settings


def test_encode_is_incremental(lake_with_data):
    lake, settings = lake_with_data
    context = RunContext(settings)
    first = encode_items(context)
    assert first.encoded == 40 and first.reused == 0
    second = encode_items(context)
    assert second.encoded == 0 and second.reused == 40
    version = lake.version("item_embeddings")
    # change one description: only that item is encoded again
    items = lake.read("items")
    changed = items.filter(pl.col("item_id") == "i7").with_columns(
        description=pl.lit("a brand new description"), text=pl.lit("Title: new"),
        text_hash=pl.lit("changed"),
    )  # fmt: skip
    lake.upsert("items", changed, keys=["item_id"])
    third = encode_items(context)
    assert third.encoded == 1 and third.reused == 39
    assert lake.version("item_embeddings") == version + 1
    stored = lake.read("item_embeddings")
    assert stored.height == 40  # replaced, not appended
    assert stored.filter(pl.col("item_id") == "i7")["text_hash"][0] == "changed"


def test_training_and_publishing_leave_mlflow_s_process_wide_state_as_it_was(
    lake_with_data, monkeypatch, tmp_path
):
    """A run logs, registers and loads through its own client: the tracking and registry
    URIs, their variables and the active run of the process are the same after it, and no
    store of the process-wide URI is touched."""
    import os

    import mlflow

    lake, settings = lake_with_data
    monkeypatch.chdir(tmp_path)  # where a store of the process-wide URIs would be made
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")  # a user's own store
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    context = RunContext(settings.updated(models=("popularity",)))
    train(context)
    recommend(context)
    assert Tracker(lake, "test", "test-model").get(CHAMPION).model == "popularity"
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == before
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///elsewhere.db"
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    assert mlflow.active_run() is None
    made = {p.name for p in tmp_path.iterdir()}
    assert not made & {"elsewhere.db", "mlflow.db", "mlruns"}


def test_a_worse_candidate_never_becomes_champion(lake_with_data):
    lake, settings = lake_with_data
    context = RunContext(settings)
    encode_items(context)
    first = train(RunContext(settings.updated(models=("ease",))))
    tracker = Tracker(lake, settings.tracking.experiment, settings.tracking.registered_model)
    champion = tracker.get(CHAMPION)
    assert champion.model == "ease" and first.champion == champion.label
    # popularity alone is worse than EASE on this data: it must become challenger
    second = train(RunContext(settings.updated(models=("popularity",))))
    pop = next(c for c in second.candidates if c.model == "popularity")
    ease = next(c for c in second.candidates if c.model == "ease")
    assert pop.metrics["ndcg@10"] < ease.metrics["ndcg@10"]
    assert tracker.get(CHAMPION).model == "ease"
    assert tracker.get(CHALLENGER).model == "popularity"
    assert "challenger" in second.decision


def test_a_champion_registered_before_an_option_existed_matches_its_config(
    lake_with_data, monkeypatch
):
    """A release that adds a model option adds it to the model's full config; the champion
    registered before it lacks the option but is the same config as tonight's candidate,
    so it is measured once, as that candidate, and refreshed."""
    import dataclasses

    lake, settings = lake_with_data
    encode_items(RunContext(settings))
    train(RunContext(settings.updated(models=("ease",))))
    tracker = Tracker(lake, settings.tracking.experiment, settings.tracking.registered_model)
    registered = tracker.get(CHAMPION)
    assert "cold_neighbor_share" in registered.params  # the full config was registered
    older = dataclasses.replace(
        registered,
        params={k: v for k, v in registered.params.items() if not k.startswith("cold_neighbor")},
    )
    real_get = Tracker.get
    monkeypatch.setattr(
        Tracker, "get", lambda self, alias: older if alias == CHAMPION else real_get(self, alias)
    )
    report = train(RunContext(settings.updated(models=("ease",))))
    assert [c.model for c in report.candidates] == ["ease"]
    assert "refreshed" in report.decision
    assert report.candidates[0].params == registered.params


def test_publish_writes_k_unseen_items_per_user(lake_with_data):
    lake, settings = lake_with_data
    context = RunContext(settings)
    encode_items(context)
    train(context)
    report = recommend(context.with_settings(k=5))
    table = lake.read("recommendations")
    events = lake.read("events", ["user_id", "item_id"]).unique()
    assert report.users == events["user_id"].n_unique() == table["user_id"].n_unique()
    assert table.group_by("user_id").len()["len"].max() == 5
    assert table.join(events, on=["user_id", "item_id"], how="inner").is_empty()
    ranks = table.group_by("user_id").agg(pl.col("rank").sort())["rank"].to_list()
    assert all(r == list(range(1, len(r) + 1)) for r in ranks)
    assert table["model"].unique().to_list() == [report.model]
    assert lake.history("recommendations")[0]["model"] == report.model


def test_a_better_candidate_replaces_the_champion(lake_with_data):
    lake, settings = lake_with_data
    context = RunContext(settings)
    encode_items(context)
    train(RunContext(settings.updated(models=("popularity",))))
    report = train(RunContext(settings.updated(models=("ease",))))
    tracker = Tracker(lake, settings.tracking.experiment, settings.tracking.registered_model)
    assert tracker.get(CHAMPION).model == "ease"
    assert tracker.get(CHALLENGER) is None
    assert "replaces it" in report.decision
    roles = {c.model: c.role for c in report.candidates}
    assert roles == {"ease": "champion", "popularity": ""}


def test_min_improvement_keeps_the_champion(lake_with_data):
    lake, settings = lake_with_data
    context = RunContext(settings)
    encode_items(context)
    train(RunContext(settings.updated(models=("popularity",))))
    strict = settings.updated(models=("ease",), min_improvement=1.0)
    report = train(RunContext(strict))
    tracker = Tracker(lake, settings.tracking.experiment, settings.tracking.registered_model)
    assert tracker.get(CHAMPION).model == "popularity"
    assert tracker.get(CHALLENGER).model == "ease"
    assert report.challenger_model == "ease"


def test_candidate_runs_hold_files_epochs_and_a_comparison_png(lake_with_data, tmp_path):
    from mlflow import MlflowClient

    lake, settings = lake_with_data
    context = RunContext(settings)
    encode_items(context)
    report = train(RunContext(settings.updated(models=("ease", "mf(epochs=3, dim=8)"))))
    client = MlflowClient(tracking_uri=lake.tracking_uri)
    mf = next(c for c in report.candidates if c.model == "mf")
    files = {a.path for a in client.list_artifacts(mf.run_id, "model_files")}
    assert {
        "model_files/config.json",
        "model_files/weights.safetensors",
        "model_files/items.parquet",
        "model_files/users.parquet",
    } <= files
    assert len(client.get_metric_history(mf.run_id, "loss")) == 3  # one point per epoch
    assert client.get_run(mf.run_id).data.metrics["ndcg_at_10"] == mf.metrics["ndcg@10"]
    parent = client.get_run(mf.run_id).data.tags["mlflow.parentRunId"]
    png = client.download_artifacts(parent, "candidates.png", str(tmp_path))
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_metrics(lake_with_data):
    from recsys_core.pipeline.train import evaluate_models

    _, settings = lake_with_data
    context = RunContext(settings)
    encode_items(context)
    models = ("ease", "content", "mf(epochs=2, dim=8)")
    run = settings.updated(models=models)
    first = evaluate_models(RunContext(run), protocol="user_random")
    second = evaluate_models(RunContext(run), protocol="user_random")
    assert [c.metrics for c in first.candidates] == [c.metrics for c in second.candidates]
    other = evaluate_models(RunContext(run.updated(seed=7)), protocol="user_random")
    assert [c.metrics for c in other.candidates] != [c.metrics for c in first.candidates]


def test_evaluate_registers_nothing_and_prints_the_table(lake_with_data):
    from typer.testing import CliRunner

    from flows.cli import app

    lake, settings = lake_with_data
    context = RunContext(settings)
    encode_items(context)
    args = [
        "evaluate", "--data-dir", str(lake.root), "--protocol", "cold_items",
        "--models", "popularity,content(half_life=5, reg=1.0)",
        "--encoder", settings.embedding.encoder,
    ]  # fmt: skip
    env = {"RECSYS_EXPERIMENT": "test", "RECSYS_REGISTERED_MODEL": "test-model",
           "RECSYS_ENCODER_MAX_LENGTH": "64"}  # fmt: skip
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["model", "ndcg@10", "recall@10"]
    assert lines[1].startswith("popularity") and lines[2].startswith("content(")
    assert "protocol cold_items" in result.stdout and "nothing registered" in result.stdout
    assert Tracker(lake, "test", "test-model").get(CHAMPION) is None

    bad = CliRunner().invoke(app, [a if a != "cold_items" else "nope" for a in args], env=env)
    assert bad.exit_code == 2 and "unknown evaluation protocol 'nope'" in bad.stderr


def test_cold_items_cannot_pick_a_champion(lake_with_data):
    from recsys_core.errors import InputError

    _, settings = lake_with_data
    with pytest.raises(InputError, match="cannot pick a champion"):
        train(RunContext(settings.updated(protocol="cold_items")))


def test_cli_refuses_unknown_models_and_protocols_before_running(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    cases = [
        (["train", "--models", "ease,nope"], "unknown model 'nope'"),
        (["train", "--models", "ease(reg=300, lam=2)"], "unexpected keyword argument 'lam'"),
        (["train", "--protocol", "xx"], "unknown evaluation protocol 'xx'"),
        (["evaluate", "--models", "sasrec(augment=shuffle)"], "unknown augmentation"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, [*args, "--data-dir", str(tmp_path / "lake")])
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert not (tmp_path / "lake" / "mlflow").exists()  # nothing started


def test_a_candidates_weights_over_the_limit_are_never_written(tmp_path, planted, monkeypatch):
    from recsys_core.models import FitOptions, TrainingData, create
    from recsys_core.registry import artifacts
    from recsys_core.registry.artifacts import ModelBundle

    data, _ = planted
    model = create("ease(reg=10)")
    model.fit(TrainingData(data), FitOptions())
    bundle = ModelBundle.from_fit(model, data)
    written: list[str] = []
    save = artifacts.save_file
    monkeypatch.setattr(artifacts, "save_file", lambda t, f: written.append(f) or save(t, f))
    tracker = Tracker(Lake(tmp_path / "lake"), "test", "test-model")
    logged = {}
    for limit in (0, 512):  # MB: the weights (a few hundred KB) over, then under the limit
        written.clear()
        with tracker.run(f"limit {limit}") as run:
            tracker.log_bundle(bundle, max_weights_mb=limit)
        files = {a.path for a in tracker.client.list_artifacts(run.info.run_id, "model_files")}
        tag = tracker.client.get_run(run.info.run_id).data.tags["weights_logged"]
        logged[limit] = ("model_files/weights.safetensors" in files, tag)
        assert any(f.endswith("history.safetensors") for f in written)
        assert any(f.endswith("weights.safetensors") for f in written) == (limit > 0)
    assert logged == {0: (False, "false"), 512: (True, "true")}
