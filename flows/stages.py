"""One flow per stage, for running a stage alone (CLI or a deployment's Run button)."""

from __future__ import annotations

from prefect import flow, unmapped

from flows.params import RunOptions, Source
from tasks import encode_task, ingest_task, train_task
from tasks.stages import plan_recommend_task, publish_task, rank_shard_task


@flow(name="ingest")
def ingest_flow(source: Source = Source(), options: RunOptions = RunOptions()) -> dict:
    """Validate and store new events and catalog rows."""
    return ingest_task(source.spec(), options.settings())


@flow(name="encode")
def encode_flow(options: RunOptions = RunOptions()) -> dict:
    """Embed items whose text or encoder changed."""
    return encode_task(options.settings())


@flow(name="train")
def train_flow(options: RunOptions = RunOptions()) -> dict:
    """Train, evaluate, track and register candidates; move `champion` if one wins."""
    return train_task(options.settings())


@flow(name="recommend")
def recommend_flow(options: RunOptions = RunOptions()) -> dict:
    """Publish top-K recommendations for every user from the champion.

    The users are ranked in shards mapped over the flow's task runner (threads by default;
    e.g. `recommend_flow.with_options(task_runner=DaskTaskRunner(...))` spreads them over
    workers that share the data directory), then committed together in one commit.
    """
    settings = options.settings()
    plan = plan_recommend_task(settings)
    shards = rank_shard_task.map(unmapped(settings), unmapped(plan), plan.shards)
    return publish_task(settings, plan, shards)
