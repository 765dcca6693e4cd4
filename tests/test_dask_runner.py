"""Encode and top-K shards on a Dask cluster give the same tables as the default runner."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest

from recsys_core.pipeline.encode import encoder_id
from recsys_core.settings import Settings
from recsys_core.storage import Lake

pytestmark = pytest.mark.slow


def test_dask_runner_gives_the_same_embeddings_and_recommendations(
    harness, trained_lake_template, tmp_path
):
    from flows.params import RunOptions
    from flows.runners import build_task_runner
    from flows.stages import encode_flow, recommend_flow

    root, settings = trained_lake_template
    dask = build_task_runner(Settings(task_runner="dask", dask_workers=2))
    lakes = {}
    for runner in ("thread", "dask"):
        data_dir = tmp_path / runner
        shutil.copytree(root, data_dir)
        options = RunOptions(
            data_dir=str(data_dir), encoder=settings.encoder, k=5,
            # a new max length is a new encoder id: every item is encoded again, in 3 shards
            encoder_max_length=48, encode_shards=3, shard_users=16,
        )  # fmt: skip
        flows = (encode_flow, recommend_flow)
        if runner == "dask":
            flows = tuple(f.with_options(task_runner=dask) for f in flows)
        encoded = flows[0](options=options)
        assert encoded["encoded"] == 40 and encoded["shards"] == 3
        published = flows[1](options=options)
        assert published["shards"] == 4  # 60 users, 16 per shard
        lakes[runner] = Lake(data_dir)

    encoder = encoder_id(settings.model_copy(update={"encoder_max_length": 48}))

    def embeddings(lake: Lake) -> pl.DataFrame:
        return lake.read("item_embeddings").filter(pl.col("encoder") == encoder).sort("item_id")

    thread, dask_rows = embeddings(lakes["thread"]), embeddings(lakes["dask"])
    assert thread.height == dask_rows.height == 40
    assert thread["item_id"].equals(dask_rows["item_id"])
    np.testing.assert_allclose(
        np.array(thread["embedding"].to_list()), np.array(dask_rows["embedding"].to_list()),
        atol=1e-5,
    )  # fmt: skip

    columns = ["user_id", "rank", "item_id"]
    recs = {
        name: lake.read("recommendations").sort(["user_id", "rank"]) for name, lake in lakes.items()
    }
    assert recs["thread"].height == 60 * 5
    assert recs["thread"].select(columns).equals(recs["dask"].select(columns))
    np.testing.assert_allclose(recs["thread"]["score"], recs["dask"]["score"], rtol=1e-5)
