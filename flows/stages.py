"""One flow per stage, for running a stage alone (CLI or a deployment's Run button)."""

from __future__ import annotations

from prefect import flow, unmapped

from flows.params import FinetuneOptions, RunOptions, Source
from recsys_core.settings import Settings
from tasks import (
    commit_encode_task,
    encode_shard_task,
    finetune_encoder_task,
    ingest_task,
    plan_encode_task,
    recommend_task,
    train_task,
)


@flow(name="ingest")
def ingest_flow(source: Source = Source(), options: RunOptions = RunOptions()) -> dict:
    """Validate and store new events and catalog rows."""
    return ingest_task(source.spec(), options.settings())


def encode_step(settings: Settings) -> dict:
    """Plan the shards, encode them on the flow's task runner (in parallel where it allows),
    then commit all staged rows at once. A failed shard fails the step before the commit, so
    nothing is published."""
    plan = plan_encode_task(settings)
    shards = encode_shard_task.map(plan.shards, settings=unmapped(settings))
    shards.wait()  # let every shard finish before failing on one
    return commit_encode_task(plan, shards.result())


@flow(name="encode")
def encode_flow(options: RunOptions = RunOptions()) -> dict:
    """Embed items whose text or encoder changed, in `encode_shards` shards."""
    return encode_step(options.settings())


@flow(name="train")
def train_flow(options: RunOptions = RunOptions()) -> dict:
    """Train, evaluate, track and register candidates; move `champion` if one wins."""
    return train_task(options.settings())


@flow(name="recommend")
def recommend_flow(options: RunOptions = RunOptions()) -> dict:
    """Publish top-K recommendations for every user from the champion."""
    return recommend_task(options.settings())


@flow(name="finetune-encoder")
def finetune_encoder_flow(
    options: RunOptions = RunOptions(), finetune: FinetuneOptions = FinetuneOptions()
) -> dict:
    """Fine-tune the item text encoder on co-occurring items; register it as an encoder
    version (`models:/recsys-encoder/N`) that encode and nightly can use."""
    return finetune_encoder_task(
        options.settings(), finetune.config(), finetune.split, finetune.evaluate, finetune.output
    )
