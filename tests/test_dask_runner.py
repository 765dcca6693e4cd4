"""Encode and top-K shards on a Dask cluster give the same tables as the default runner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import polars as pl
import pytest

from recsys_core.context import RunContext
from recsys_core.pipeline.encode import encoder_id
from recsys_core.storage import Lake

pytestmark = pytest.mark.slow


def test_dask_runner_gives_the_same_embeddings_and_recommendations(
    harness, trained_lake_template, tmp_path
):
    """The same encode and recommend runs on threads (in this process) and through the CLI
    with RECSYS_TASK_RUNNER=dask (a local cluster of worker processes)."""
    from prefect.settings import PREFECT_API_URL

    from flows.params import EncodeOptions, RecommendOptions
    from flows.stages import encode_flow, recommend_flow

    root, settings = trained_lake_template.lake.root, trained_lake_template.settings
    # a new max length is a new encoder id: every item is encoded again, in 3 shards
    encode_args = {"encoder_max_length": 48, "encode_shards": 3}
    lakes = {}
    for runner in ("thread", "dask"):
        data_dir = tmp_path / runner
        shutil.copytree(root, data_dir)
        lakes[runner] = Lake(data_dir)
    data_dir = str(lakes["thread"].root)
    encoding = EncodeOptions(data_dir=data_dir, encoder=settings.embedding.encoder, **encode_args)
    ranking = RecommendOptions(data_dir=data_dir, k=5, shard_users=16)
    # the flows' typed reports, as the CLI's JSON holds them
    reports = {
        "thread": (asdict(encode_flow(options=encoding)), asdict(recommend_flow(options=ranking)))
    }

    env = {
        **os.environ, "RECSYS_TASK_RUNNER": "dask", "RECSYS_DASK_WORKERS": "2",
        "PREFECT_API_URL": PREFECT_API_URL.value(),
    }  # fmt: skip
    recsys = [sys.executable, "-m", "flows.cli"]
    common = ["--data-dir", str(lakes["dask"].root)]
    outputs = []
    for args in (
        [
            "encode",
            *common,
            "--encoder",
            settings.embedding.encoder,
            "--max-length",
            "48",
            "--shards",
            "3",
        ],
        ["recommend", *common, "--k", "5", "--shard-users", "16"],
    ):
        done = subprocess.run(
            [*recsys, *args], env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "LocalCluster" in done.stderr, done.stderr[-3000:]  # prefect-dask made one
        outputs.append(json.loads(done.stdout[done.stdout.index("{") :]))
    reports["dask"] = tuple(outputs)
    for encoded, published in reports.values():
        assert encoded["encoded"] == 40 and encoded["shards"] == 3
        assert published["shards"] == 4  # 60 users, 16 per shard

    encoder = encoder_id(RunContext(settings.updated(encoder_max_length=48)))

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


def _evaluate_on_the_cluster(model, split):
    """Run inside a Dask task: the chunks go out from a worker (through `worker_client`)."""
    from recsys_core.evaluation import evaluate
    from tasks.cluster import dask_chunk_map

    return evaluate(model, split, map_chunks=dask_chunk_map(), chunk_users=5)


def test_evaluation_chunks_on_dask_give_the_same_metrics(planted):
    from distributed import Client

    from recsys_core.data.splits import make_split
    from recsys_core.evaluation import evaluate
    from recsys_core.models import FitOptions, TrainingData, create
    from tasks.cluster import dask_chunk_map

    data, _ = planted
    split = make_split(data, "user_random", 0.3, seed=0)
    model = create("itemknn")
    model.fit(TrainingData(split.train), FitOptions())
    here = evaluate(model, split)
    assert dask_chunk_map() is None  # no cluster: evaluation ranks in this process
    calls = []
    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        mapper = dask_chunk_map()

        def counting(fn, chunks, **shared):
            calls.append(len(chunks))
            return mapper(fn, chunks, **shared)

        from_client = evaluate(model, split, map_chunks=counting, chunk_users=5)
        from_worker = c.submit(_evaluate_on_the_cluster, model, split).result()
    assert calls == [-(-len(split.test_users) // 5)]  # every chunk went to the cluster
    assert from_client == here
    assert from_worker == here
