"""One flow per stage, for running a stage alone (CLI or a deployment's Run button).

A person who runs one stage wants it run: these flows bypass the stage caches that let the
nightly flow skip unchanged work.

Every flow body runs inside `stop_on_signals()`: a deployment's flow-run process, which a
cancel from the Prefect UI sends SIGTERM, then stops its task threads within a batch.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, unmapped

from flows.params import (
    EncodeOptions,
    EncoderOptions,
    FinetuneOptions,
    IngestOptions,
    RecommendOptions,
    Source,
    TrainOptions,
)
from flows.runners import ChosenTaskRunner, gpu_resources
from recsys_core.cancel import stop_on_signals
from recsys_core.context import RunContext
from recsys_core.pipeline import published_report
from recsys_core.settings import Settings
from tasks import (
    commit_encode_task,
    encode_shard_task,
    finetune_encoder_task,
    ingest_task,
    plan_encode_task,
    train_task,
)
from tasks.stages import plan_recommend_task, publish_task, rank_shard_task


@flow(name="ingest")
def ingest_flow(source: Source = Source(), options: IngestOptions = IngestOptions()) -> dict:
    """Validate and store new events and catalog rows."""
    with stop_on_signals():
        return ingest_task(source.spec(), options.settings())


def encode_step(settings: Settings) -> dict:
    """The encode stage inside a flow: plan, shards mapped over the runner, one commit.

    Only items whose text or encoder changed are planned, so a night with nothing new maps
    no shard. On a Dask cluster with GPU workers the shards go to those workers. A failed
    shard fails the step before the commit, so nothing is published.
    """
    plan = plan_encode_task(settings)
    with gpu_resources():
        shards = encode_shard_task.map(plan.shards, settings=unmapped(settings))
    shards.wait()  # let every shard finish before failing on one
    return commit_encode_task(settings, plan, shards.result())


@flow(name="encode", task_runner=ChosenTaskRunner())
def encode_flow(options: EncodeOptions = EncodeOptions()) -> dict:
    """Embed items whose text or encoder changed, in `encode_shards` shards."""
    with stop_on_signals():
        return encode_step(options.settings())


@flow(name="train")
def train_flow(options: TrainOptions = TrainOptions()) -> dict:
    """Train, evaluate, track and register candidates; move `champion` if one wins."""
    with stop_on_signals():
        return train_task.with_options(refresh_cache=True)(options.settings())


@flow(name="recommend", task_runner=ChosenTaskRunner())
def recommend_flow(options: RecommendOptions = RecommendOptions()) -> dict:
    """Publish top-K recommendations for every user from the champion.

    The users are ranked in shards mapped over the flow's task runner (threads by default,
    Dask workers with RECSYS_TASK_RUNNER=dask), then committed together in one commit.
    """
    with stop_on_signals():
        return rank_and_publish(options.settings(), refresh=True)


def rank_and_publish(settings: Settings, *, refresh: bool) -> dict:
    """The recommend stage inside a flow: plan, shards mapped over the runner, one commit.

    Unless `refresh`, a night whose inputs (events, champion, settings, unavailable items)
    were already published is not published again: the latest commit records the
    fingerprint of the inputs it came from (`recommend_inputs`).
    """
    if not refresh and (done := published_report(RunContext(settings))) is not None:
        get_run_logger().info(
            "recommendations from these inputs are already published (version %s)",
            done["version"],
        )
        return done
    plan = plan_recommend_task(settings)
    shards = rank_shard_task.map(unmapped(settings), unmapped(plan), plan.shards)
    return publish_task(settings, plan, shards)


@flow(name="finetune-encoder")
def finetune_encoder_flow(
    options: EncoderOptions = EncoderOptions(), finetune: FinetuneOptions = FinetuneOptions()
) -> dict:
    """Fine-tune the item text encoder on co-occurring items; register it as an encoder
    version (`models:/recsys-encoder/N`) that encode and nightly can use."""
    with stop_on_signals():
        settings = options.settings()
        return finetune_encoder_task(
            settings, finetune.config(settings), finetune.split, finetune.evaluate,
            finetune.output,
        )  # fmt: skip
