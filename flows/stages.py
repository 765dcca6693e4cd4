"""One flow per stage, for running a stage alone (CLI or a deployment's Run button).

A person who runs one stage wants it run: these flows bypass the stage caches that let the
nightly flow skip unchanged work.
"""

from __future__ import annotations

from prefect import flow

from flows.params import RunOptions, Source
from tasks import encode_task, ingest_task, recommend_task, train_task


@flow(name="ingest")
def ingest_flow(source: Source = Source(), options: RunOptions = RunOptions()) -> dict:
    """Validate and store new events and catalog rows."""
    return ingest_task(source.spec(), options.settings())


@flow(name="encode")
def encode_flow(options: RunOptions = RunOptions()) -> dict:
    """Embed items whose text or encoder changed."""
    return encode_task.with_options(refresh_cache=True)(options.settings())


@flow(name="train")
def train_flow(options: RunOptions = RunOptions()) -> dict:
    """Train, evaluate, track and register candidates; move `champion` if one wins."""
    return train_task.with_options(refresh_cache=True)(options.settings())


@flow(name="recommend")
def recommend_flow(options: RunOptions = RunOptions()) -> dict:
    """Publish top-K recommendations for every user from the champion."""
    return recommend_task.with_options(refresh_cache=True)(options.settings())
