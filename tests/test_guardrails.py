"""Guardrails before publishing: tonight's table is compared with the one readers see, and a
breach holds the night (nothing committed, exit code 3, the reason in MLflow and Prefect)."""

from __future__ import annotations

import importlib

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys_core.errors import EXIT_HELD, exit_status
from recsys_core.pipeline import recommend
from recsys_core.pipeline.recommend import NightHeld
from recsys_core.registry.reader import RegistryReader

TABLE = "recommendations"


def published(lake) -> pl.DataFrame:
    return lake.read(TABLE).drop("generated_at").sort("user_id", "rank")


def keep_half_the_users(lake) -> None:
    """Plant the breach of a night whose events lost half the users (a bad source)."""
    events = lake.read("events")
    users = events["user_id"].unique().sort()
    lake.write("events", events.filter(pl.col("user_id").is_in(users[::2].implode())),
               mode="overwrite")  # fmt: skip


def champion_tags(context) -> dict[str, str]:
    from mlflow import MlflowClient

    lake, tracking = context.lake, context.settings.tracking
    version = RegistryReader(lake).alias_version(tracking.registered_model, "champion")
    client = MlflowClient(tracking_uri=lake.tracking_uri, registry_uri=lake.tracking_uri)
    found = client.get_model_version(tracking.registered_model, version)
    return {
        **client.get_run(found.run_id).data.tags,
        **{f"version:{k}": v for k, v in found.tags.items()},
    }


def test_the_first_night_publishes_and_a_normal_rerun_passes(trained_lake):
    context = trained_lake
    first = recommend(context)
    assert first.version == 0 and first.guardrails.verdict == "first night"
    again = recommend(context)  # same inputs, same champion: lists and scores unchanged
    assert again.version == 1 and again.guardrails.verdict == "passed"
    figures = again.guardrails
    assert figures.user_coverage == 1.0 and figures.catalog_ratio == 1.0
    assert figures.list_overlap_mean == 1.0 and figures.score_shift == 0.0
    assert figures.score_shift_checked and figures.bad_scores == 0
    # another k is compared on the ranks both have, and publishes
    fewer = recommend(context.with_settings(k=5))
    assert fewer.version == 2 and fewer.guardrails.verdict == "passed"
    assert fewer.guardrails.ranks == 5 and fewer.guardrails.list_overlap_mean == 1.0
    more = recommend(context.with_settings(k=40))
    assert more.version == 3 and more.guardrails.verdict == "passed"
    assert champion_tags(context)["version:publish_guardrails"] == "passed"
    assert lake_commit(context)["guardrails"] == "passed"


def lake_commit(context) -> dict:
    return context.lake.history(TABLE)[0]


def test_half_the_users_gone_holds_the_night_and_force_publishes(trained_lake):
    context = trained_lake
    lake = context.lake
    recommend(context)
    before, version = published(lake), lake.version(TABLE)
    files_before = sorted(p.name for p in lake.path(TABLE).glob("*.parquet"))
    keep_half_the_users(lake)
    with pytest.raises(NightHeld) as held:
        recommend(context)
    # readers keep last night: same version, same rows, no staged file left behind
    assert lake.version(TABLE) == version and published(lake).equals(before)
    assert sorted(p.name for p in lake.path(TABLE).glob("*.parquet")) == files_before
    code, line = exit_status(held.value)
    assert code == EXIT_HELD == 3 and "\n" not in line
    assert "user coverage 0.5" in line and f"readers keep version {version}" in line
    assert held.value.guardrails.verdict == "held"
    assert held.value.guardrails.mlflow_tags == "set"
    tags = champion_tags(context)
    assert tags["publish_guardrails"] == "held" and tags["version:publish_guardrails"] == "held"
    assert "user coverage 0.5 < 0.9" in tags["publish_guardrails_reason"]
    # --force publishes anyway, and says it was forced
    forced = recommend(context.with_settings(force=True))
    assert forced.version == version + 1 and forced.guardrails.verdict == "forced"
    assert forced.guardrails.breaches and published(lake)["user_id"].n_unique() == forced.users
    assert lake_commit(context)["guardrails"].startswith("forced: user coverage")
    assert champion_tags(context)["version:publish_guardrails"] == "forced"


def test_a_collapsed_catalog_is_held(trained_lake, tmp_path):
    context = trained_lake
    lake = context.lake
    recommend(context)
    before = published(lake)
    # every item but three is withdrawn: the lists collapse onto those three
    items = lake.read("items", ["item_id"])["item_id"].sort()
    withdrawn = tmp_path / "withdrawn.txt"
    withdrawn.write_text("\n".join(items[3:].to_list()) + "\n")
    with pytest.raises(NightHeld, match="catalog ratio"):
        recommend(context.with_settings(unavailable_items=withdrawn))
    assert published(lake).equals(before)


def test_nan_scores_are_held(trained_lake, monkeypatch):
    stage = importlib.import_module(
        "recsys_core.pipeline.recommend"
    )  # the module, not the function

    context = trained_lake
    recommend(context)
    real_top_k = stage.top_k

    def broken_top_k(*args, **kwargs):
        ranked = real_top_k(*args, **kwargs)
        ranked.scores[:, 0] = float("nan")  # a model that went numerically wrong
        return ranked

    monkeypatch.setattr(stage, "top_k", broken_top_k)
    stage._shard_context.cache_clear()
    with pytest.raises(NightHeld, match="bad scores"):
        recommend(context)


def test_thresholds_are_settings_everywhere():
    from flows.options import offered_options
    from flows.params import RecommendOptions, RunOptions
    from recsys_core.settings import Settings

    names = ("guard_min_user_coverage", "guard_min_catalog_ratio", "guard_min_list_overlap",
             "guard_max_score_shift", "guard_max_bad_scores", "force")  # fmt: skip
    for name in names:
        assert Settings.variable(name).startswith("RECSYS_GUARD_") or name == "force"
        assert name in offered_options("nightly") and name in offered_options("recommend")
        assert name in RunOptions.model_fields and name in RecommendOptions.model_fields
    assert Settings(guard_min_user_coverage=0.5).recommend.guard_min_user_coverage == 0.5


@pytest.mark.slow
def test_cli_holds_with_exit_3_and_force_publishes(harness, trained_lake):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.cli import app

    context = trained_lake
    lake = context.lake
    recommend(context)
    before, version = published(lake), lake.version(TABLE)
    keep_half_the_users(lake)
    result = CliRunner().invoke(app, ["recommend", "--data-dir", str(lake.root)])
    assert result.exit_code == 3, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: night held") and "user coverage 0.5 < 0.9" in last
    assert lake.version(TABLE) == version and published(lake).equals(before)

    async def latest_artifact() -> str:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["recommend-guardrails"]))
            )
        return sorted(found, key=lambda a: a.created)[-1].data

    import asyncio

    markdown = asyncio.run(latest_artifact())
    assert "held" in markdown and "user coverage" in markdown

    result = CliRunner().invoke(app, ["recommend", "--data-dir", str(lake.root), "--force"])
    assert result.exit_code == 0, result.output
    assert lake.version(TABLE) == version + 1
    assert "forced" in asyncio.run(latest_artifact())
