"""Query-aware and explained recommendations: library, registered pyfunc and CLI."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from recsys_core.errors import InputError
from recsys_core.pipeline import recommend
from recsys_core.pipeline.recommend import recommend_for_query


def user_and_items(lake) -> tuple[str, list[str], list[str], dict[str, str]]:
    """A user, items they saw, items they did not, and every item's encoded text."""
    events = lake.read("events", ["user_id", "item_id"])
    user = events["user_id"].sort()[0]
    seen = events.filter(pl.col("user_id") == user)["item_id"].unique().sort().to_list()
    texts = dict(lake.read("items", ["item_id", "text"]).iter_rows())
    unseen = sorted(set(texts) - set(seen))
    return user, seen, unseen, texts


def test_a_query_with_an_items_own_text_ranks_that_item_first(trained_lake):
    context = trained_lake
    lake = context.lake
    user, seen, unseen, texts = user_and_items(lake)
    target = unseen[len(unseen) // 2]
    rows = recommend_for_query(context, user, texts[target], k=5, weight=1.0)
    assert rows["item_id"][0] == target
    assert rows["rank"].to_list() == [1, 2, 3, 4, 5]
    # a seen item is never returned, however well it matches
    rows = recommend_for_query(context, user, texts[seen[0]], k=40, weight=1.0)
    assert not set(rows["item_id"]) & set(seen)


def test_query_weight_zero_gives_the_models_own_ranking(trained_lake):
    context = trained_lake
    lake, settings = context.lake, context.settings
    recommend(context)
    user, _, _, _ = user_and_items(lake)
    published = lake.read("recommendations").filter(pl.col("user_id") == user).sort("rank")
    rows = recommend_for_query(context, user, "anything at all", k=settings.recommend.k, weight=0.0)
    assert rows["item_id"].to_list() == published["item_id"].to_list()
    assert rows["reason_item_id"].to_list() == published["reason_item_id"].to_list()


def test_an_empty_query_is_an_input_error(trained_lake):
    context = trained_lake
    with pytest.raises(InputError, match="empty"):
        recommend_for_query(context, "u1", "   ")


def test_the_registered_pyfunc_ranks_by_an_optional_query(trained_lake):
    context = trained_lake
    lake, settings = context.lake, context.settings
    user, seen, unseen, texts = user_and_items(lake)
    target = unseen[-1]
    mlflow.set_tracking_uri(lake.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{settings.tracking.registered_model}@champion")
    frame = pd.DataFrame({"user_id": [user, user], "query": [texts[target], None]})
    out = model.predict(frame, params={"k": 4, "query_weight": 1.0})
    with_query = out.iloc[:4]
    assert with_query["item_id"].iloc[0] == target
    assert not set(out["item_id"]) & set(seen)
    # the row without a query, and a frame without the column, give the plain ranking
    plain = model.predict(pd.DataFrame({"user_id": [user]}), params={"k": 4})
    assert out.iloc[4:]["item_id"].tolist() == plain["item_id"].tolist()


def test_cli_recs_with_a_query_and_explanations(trained_lake):
    context = trained_lake
    lake = context.lake
    recommend(context)
    user, seen, unseen, texts = user_and_items(lake)
    runner = CliRunner()
    result = runner.invoke(
        app, ["recs", user, "--data-dir", str(lake.root), "--query", texts[unseen[0]],
              "--query-weight", "1", "--k", "3", "--json", "--explain"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["query"] == texts[unseen[0]]
    assert payload["recommendations"][0]["item_id"] == unseen[0]
    assert all(r["because"] for r in payload["recommendations"])
    result = runner.invoke(app, ["recs", user, "--data-dir", str(lake.root), "--explain"])
    assert result.exit_code == 0, result.output
    reasons = lake.read("recommendations").filter(pl.col("user_id") == user)["reason_item_id"]
    titles = dict(lake.read("items", ["item_id", "title"]).iter_rows())
    for reason in reasons.drop_nulls():
        assert reason in seen  # explanations point into the user's own history
        assert f"because you watched {titles[reason]}" in result.stdout


def test_cli_rollback_lists_and_restores_versions(trained_lake, tmp_path):
    context = trained_lake
    lake = context.lake
    recommend(context.with_settings(k=2))
    first = lake.read("recommendations").drop("generated_at").sort("user_id", "rank")
    recommend(context.with_settings(k=3))
    runner = CliRunner()
    listed = runner.invoke(app, ["rollback", "--list", "--data-dir", str(lake.root)])
    assert listed.exit_code == 0 and listed.stdout.count("recsys/1") == 2
    restored = runner.invoke(app, ["rollback", "--to", "0", "--data-dir", str(lake.root)])
    assert restored.exit_code == 0, restored.output
    assert "restored as version 2" in restored.stdout
    now = lake.read("recommendations").drop("generated_at").sort("user_id", "rank")
    assert now.equals(first)
    missing = runner.invoke(app, ["rollback", "--to", "7", "--data-dir", str(lake.root)])
    assert missing.exit_code == 2 and "versions 0 to 2" in missing.stderr
    bad_file = runner.invoke(
        app, ["recommend", "--data-dir", str(lake.root), "--unavailable", str(tmp_path / "x.csv")]
    )
    assert bad_file.exit_code == 2 and "x.csv: file not found" in bad_file.stderr
    assert lake.version("recommendations") == 2
