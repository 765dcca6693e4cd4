"""Stages over a real data directory, without Prefect: encode incrementally, train, publish."""

from __future__ import annotations

import polars as pl
import pytest

from recsys_core.data.sources import SourceSpec
from recsys_core.pipeline import encode_items, ingest, recommend, train
from recsys_core.registry.tracking import CHALLENGER, CHAMPION, Tracker
from recsys_core.settings import Settings
from recsys_core.storage import Lake


@pytest.fixture
def lake_with_data(tmp_path, small_source, tiny_encoder_dir):
    lake = Lake(tmp_path / "lake")
    events, items = small_source
    ingest(SourceSpec(events=(str(events),), items=str(items)), lake)
    settings = Settings(
        data_dir=lake.root, encoder=str(tiny_encoder_dir), encoder_max_length=64,
        experiment="test", registered_model="test-model",
    )  # fmt: skip
    return lake, settings


def test_encode_is_incremental(lake_with_data):
    lake, settings = lake_with_data
    first = encode_items(lake, settings)
    assert first.encoded == 40 and first.reused == 0
    second = encode_items(lake, settings)
    assert second.encoded == 0 and second.reused == 40
    version = lake.version("item_embeddings")
    # change one description: only that item is encoded again
    items = lake.read("items")
    changed = items.filter(pl.col("item_id") == "i7").with_columns(
        description=pl.lit("a brand new description"), text=pl.lit("Title: new"),
        text_hash=pl.lit("changed"),
    )  # fmt: skip
    lake.upsert("items", changed, keys=["item_id"])
    third = encode_items(lake, settings)
    assert third.encoded == 1 and third.reused == 39
    assert lake.version("item_embeddings") == version + 1
    stored = lake.read("item_embeddings")
    assert stored.height == 40  # replaced, not appended
    assert stored.filter(pl.col("item_id") == "i7")["text_hash"][0] == "changed"


def test_a_worse_candidate_never_becomes_champion(lake_with_data):
    lake, settings = lake_with_data
    encode_items(lake, settings)
    first = train(lake, settings.model_copy(update={"models": ("ease",)}))
    tracker = Tracker(lake, settings.experiment, settings.registered_model)
    champion = tracker.get(CHAMPION)
    assert champion.model == "ease" and first.champion == champion.label
    # popularity alone is worse than EASE on this data: it must become challenger
    second = train(lake, settings.model_copy(update={"models": ("popularity",)}))
    pop = next(c for c in second.candidates if c.model == "popularity")
    ease = next(c for c in second.candidates if c.model == "ease")
    assert pop.metrics["ndcg@10"] < ease.metrics["ndcg@10"]
    assert tracker.get(CHAMPION).model == "ease"
    assert tracker.get(CHALLENGER).model == "popularity"
    assert "challenger" in second.decision


def test_publish_writes_k_unseen_items_per_user(lake_with_data):
    lake, settings = lake_with_data
    encode_items(lake, settings)
    train(lake, settings)
    report = recommend(lake, settings.model_copy(update={"k": 5}))
    table = lake.read("recommendations")
    events = lake.read("events", ["user_id", "item_id"]).unique()
    assert report.users == events["user_id"].n_unique() == table["user_id"].n_unique()
    assert table.group_by("user_id").len()["len"].max() == 5
    assert table.join(events, on=["user_id", "item_id"], how="inner").is_empty()
    ranks = table.group_by("user_id").agg(pl.col("rank").sort())["rank"].to_list()
    assert all(r == list(range(1, len(r) + 1)) for r in ranks)
    assert table["model"].unique().to_list() == [report.model]
    assert lake.history("recommendations")[0]["model"] == report.model
