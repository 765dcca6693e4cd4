"""Sharded, incremental encoding: plan -> independent shards -> one commit."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.encoders import build_item_text
from recsys_core.errors import InputError
from recsys_core.pipeline import (
    MissingShards,
    commit_encode,
    encode_items,
    encode_shard,
    ingest,
    plan_encode,
)
from recsys_core.pipeline.encode import EncodeReport, encoder_id, report_of_run
from recsys_core.settings import Settings
from recsys_core.storage import Lake


@pytest.fixture
def lake_and_settings(tmp_path, small_source, tiny_encoder_dir):
    lake = Lake(tmp_path / "lake")
    events, items = small_source
    ingest(RunContext.of(lake.root), SourceSpec(events=(str(events),), items=str(items)))
    settings = Settings(data_dir=lake.root, encoder=str(tiny_encoder_dir), encoder_max_length=64)
    return lake, settings


def vectors(lake: Lake) -> dict[str, np.ndarray]:
    table = lake.read("item_embeddings")
    return dict(zip(table["item_id"], table["embedding"].to_numpy(), strict=True))


def test_plan_splits_the_work_into_disjoint_balanced_shards(lake_and_settings):
    lake, settings = lake_and_settings
    context = RunContext(settings)
    plan = plan_encode(context, shards=3)
    assert len(plan.shards) == 3 and plan.items_total == 40 and plan.reused == 0
    ids = [i for shard in plan.shards for i in shard.item_ids]
    assert sorted(ids) == sorted(lake.read("items")["item_id"].to_list())
    assert len(ids) == len(set(ids))
    sizes = [len(s.item_ids) for s in plan.shards]
    assert max(sizes) - min(sizes) <= 1
    # similar text volume per shard, not all long texts in one
    text = dict(lake.read("items", ["item_id", "text"]).iter_rows())
    volume = [sum(len(text[i]) for i in s.item_ids) for s in plan.shards]
    assert max(volume) / min(volume) < 1.3
    # a shard is a small value a remote worker can receive
    shard = plan.shards[0]
    assert pickle.loads(pickle.dumps(shard)) == shard
    assert len(pickle.dumps(shard)) < 4096


def test_more_shards_than_items_gives_one_item_per_shard(lake_and_settings):
    _, settings = lake_and_settings
    context = RunContext(settings)
    plan = plan_encode(context, shards=500)
    assert len(plan.shards) == 40 and all(len(s.item_ids) == 1 for s in plan.shards)


def test_shards_run_in_any_order_and_commit_once(lake_and_settings, tmp_path):
    lake, settings = lake_and_settings
    context = RunContext(settings)
    plan = plan_encode(context, shards=3)
    results = [encode_shard(context, shard) for shard in reversed(plan.shards)]
    assert not lake.exists("item_embeddings")  # shards only stage
    report = commit_encode(RunContext(settings, run_id="r1"), plan, results)
    assert report.encoded == 40 and report.shards == 3 and report.version == 0
    assert lake.history("item_embeddings")[0]["shards"] == "3"
    assert not Path(plan.staging_dir).exists()
    # the same vectors as one shard over the same catalog in another data directory
    other = Lake(tmp_path / "other")
    other.write("items", lake.read("items"), mode="overwrite")
    encode_items(context.with_settings(data_dir=other.root), shards=1)
    sharded, single = vectors(lake), vectors(other)
    for item in single:
        np.testing.assert_allclose(sharded[item], single[item], atol=1e-5)


def test_a_missing_or_wrong_shard_publishes_nothing(lake_and_settings):
    lake, settings = lake_and_settings
    context = RunContext(settings)
    encode_items(context)
    version = lake.version("item_embeddings")
    changed = build_item_text(
        lake.read("items").with_columns(description=pl.lit("every description changed"))
    )
    lake.upsert("items", changed, keys=["item_id"])
    plan = plan_encode(context, shards=3)
    done = [encode_shard(context, shard) for shard in plan.shards[:2]]
    with pytest.raises(MissingShards, match=r"shard\(s\) \[2\] returned no result"):
        commit_encode(context, plan, done)
    assert lake.version("item_embeddings") == version
    # a staged file that does not hold its shard's items is refused as well
    last = encode_shard(context, plan.shards[2])
    pl.read_parquet(last.staged).head(1).write_parquet(last.staged)
    with pytest.raises(InputError, match="not the shard's"):
        commit_encode(context, plan, [*done, last])
    assert lake.version("item_embeddings") == version


def test_changed_text_re_encodes_only_that_item(lake_and_settings):
    lake, settings = lake_and_settings
    context = RunContext(settings)
    assert encode_items(context, shards=2).encoded == 40
    again = plan_encode(context, shards=4)
    assert again.shards == () and again.reused == 40
    assert encode_items(context).encoded == 0
    before = vectors(lake)
    items = lake.read("items")
    edited = build_item_text(
        items.filter(pl.col("item_id") == "i3").with_columns(
            description=pl.lit("a haunted graveyard full of zombies")
        )
    )
    lake.upsert("items", edited, keys=["item_id"])
    report = encode_items(context, shards=4)
    assert report.encoded == 1 and report.reused == 39 and report.shards == 1
    after = vectors(lake)
    assert not np.allclose(after["i3"], before["i3"])
    assert all(np.array_equal(after[i], before[i]) for i in before if i != "i3")


def test_a_worker_with_another_model_refuses_its_shard(lake_and_settings, tiny_encoder_dir):
    _, settings = lake_and_settings
    context = RunContext(settings)
    plan = plan_encode(context.with_settings(encoder_max_length=32), shards=2)
    with pytest.raises(InputError, match="the plan expects"):
        encode_shard(context, plan.shards[0])  # this worker runs max_length 64


def test_stale_staging_of_failed_runs_is_removed(lake_and_settings):
    lake, settings = lake_and_settings
    context = RunContext(settings)
    old = lake.staging("encode").root / "20000101T000000-deadbeef"
    old.mkdir(parents=True)
    (old / "shard-00000.parquet").write_bytes(b"left over")
    week_ago = time.time() - 7 * 86400
    os.utime(old, (week_ago, week_ago))
    recent = lake.staging("encode").root / "recent"
    recent.mkdir()
    plan_encode(context)
    assert not old.exists() and recent.exists()


def test_encoder_id_is_what_the_table_records(lake_and_settings):
    lake, settings = lake_and_settings
    context = RunContext(settings)
    encode_items(context)
    assert lake.read("item_embeddings")["encoder"].unique().to_list() == [encoder_id(context)]


def test_unset_batch_size_lets_the_device_choose(lake_and_settings, monkeypatch):
    _, settings = lake_and_settings
    assert settings.encode.encoder_batch_size is None
    assert settings.updated(encoder_batch_size=8).encode.encoder_batch_size == 8
    monkeypatch.setenv("RECSYS_ENCODER_BATCH_SIZE", "16")
    assert Settings().encode.encoder_batch_size == 16


def test_a_run_elsewhere_reports_the_same_type_read_back_from_its_commit(lake_and_settings):
    # what the nightly gets from the encode deployment: the report of the run that committed
    lake, settings = lake_and_settings
    report = encode_items(RunContext(settings, run_id="remote-1"), shards=2)
    label = "(deployment encode/gpu, run calm-fox)"
    assert report_of_run(lake, "remote-1", label=label) == report
    # a run that found nothing to encode committed nothing: every item counts as reused
    nothing = report_of_run(lake, "remote-2", label=label)
    assert nothing == EncodeReport(encoder=label, items_total=40, reused=40, version=report.version)
