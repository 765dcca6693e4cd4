"""The recommend flow maps shards over Prefect's task runner and publishes them in one commit."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from recsys_core.pipeline import recommend

pytestmark = pytest.mark.slow


def test_mapped_shards_publish_what_one_process_publishes(harness, trained_lake, tmp_path):
    from flows.params import RecommendOptions
    from flows.stages import recommend_flow

    context = trained_lake
    lake, settings = context.lake, context.settings
    recommend(context)
    unfiltered = lake.read("recommendations")
    # the item most often recommended without exclusions: in the catalog and in many top-Ks
    excluded = (
        unfiltered.group_by("item_id").len().sort("len", "item_id", descending=True)["item_id"][0]
    )
    unavailable = tmp_path / "unavailable.txt"
    unavailable.write_text(f"{excluded}\n")
    recommend(context.with_settings(unavailable_items=unavailable))
    expected = lake.read("recommendations").drop("generated_at").sort("user_id", "rank")
    report = recommend_flow(
        options=RecommendOptions(
            data_dir=str(lake.root), shard_users=9, unavailable_items=str(unavailable)
        )
    )
    assert report.version == 2 and report.shards == -(-expected["user_id"].n_unique() // 9)
    assert report.unavailable_items == 1
    published = lake.read("recommendations").drop("generated_at").sort("user_id", "rank")
    assert published.equals(expected)
    assert excluded not in published["item_id"].to_list()
    per_user = published.group_by("user_id").len()
    assert per_user["len"].to_list() == [settings.recommend.k] * unfiltered["user_id"].n_unique()
    assert len(lake.history("recommendations")) == 3  # one commit per run, however many shards


def test_cli_recommend_runs_the_sharded_flow(harness, trained_lake):
    lake = trained_lake.lake
    result = CliRunner().invoke(
        app, ["recommend", "--data-dir", str(lake.root), "--shard-users", "25", "--k", "3",
              "--retention-days", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["shards"] > 1 and report["rows"] == 3 * report["users"]
    table = lake.read("recommendations")
    ranks = table.group_by("user_id").agg(pl.col("rank").sort())
    assert ranks["rank"].to_list() == [[1, 2, 3]] * report["users"]
    assert set(ranks["user_id"]) == set(lake.read("events")["user_id"])
