"""One flow per stage, for running a stage alone (CLI or a deployment's Run button).

A person who runs one stage wants it run: these flows bypass the stage caches that let the
nightly flow skip unchanged work.

Every flow body runs inside `stop_on_signals()`: a deployment's flow-run process, which a
cancel from the Prefect UI sends SIGTERM, then stops its task threads within a batch.
"""

from __future__ import annotations

import contextlib

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
from flows.reporting import guardrails_artifact
from flows.runners import ChosenTaskRunner, gpu_resources
from recsys_core.cancel import stop_on_signals
from recsys_core.context import RunContext
from recsys_core.pipeline import (
    ENCODE,
    RECOMMEND,
    AlreadyPublished,
    EncodeReport,
    IngestReport,
    PublishReport,
    TrainReport,
    published_report,
)
from recsys_core.pipeline.finetune import FinetuneReport
from recsys_core.pipeline.recommend import NightHeld
from recsys_core.pipeline.sharded import PlanT, ReportT, ResultT, ShardedStage, ShardT
from recsys_core.settings import Settings
from tasks import commit_task, finetune_encoder_task, ingest_task, plan_task, shard_task, train_task


@flow(name="ingest")
def ingest_flow(
    source: Source = Source(), options: IngestOptions = IngestOptions()
) -> IngestReport:
    """Validate and store new events and catalog rows."""
    with stop_on_signals():
        return ingest_task(source.spec(), options.settings())


def run_sharded(
    stage: ShardedStage[PlanT, ShardT, ResultT, ReportT], settings: Settings
) -> ReportT:
    """Any sharded stage inside a flow: plan, shards mapped over the runner, one commit.

    On a Dask cluster with GPU workers the shards of a stage that wants a GPU go to those
    workers. A failed shard fails the stage before the commit, so nothing is published.

    Args:
        stage: E.g. `ENCODE` or `RECOMMEND` (`recsys_core.pipeline.sharded`).
        settings: The run's settings.
    """
    plan = plan_task.with_options(name=f"plan-{stage.name}")(stage, settings)
    run_shard = shard_task.with_options(name=stage.shard_name)
    with gpu_resources() if stage.wants_gpu else contextlib.nullcontext():
        shards = run_shard.map(unmapped(stage), unmapped(plan), plan.shards, unmapped(settings))
    shards.wait()  # let every shard finish before failing on one
    return commit_task.with_options(name=stage.commit_name)(stage, settings, plan, shards.result())


def encode_step(settings: Settings) -> EncodeReport:
    """The encode stage inside a flow. Only items whose text or encoder changed are
    planned, so a night with nothing new maps no shard."""
    return run_sharded(ENCODE, settings)


@flow(name="encode", task_runner=ChosenTaskRunner())
def encode_flow(options: EncodeOptions = EncodeOptions()) -> EncodeReport:
    """Embed items whose text or encoder changed, in `encode_shards` shards."""
    with stop_on_signals():
        return encode_step(options.settings())


@flow(name="train")
def train_flow(options: TrainOptions = TrainOptions()) -> TrainReport:
    """Train, evaluate, track and register candidates; move `champion` if one wins."""
    with stop_on_signals():
        return train_task.with_options(refresh_cache=True)(options.settings())


@flow(name="recommend", task_runner=ChosenTaskRunner())
def recommend_flow(
    options: RecommendOptions = RecommendOptions(),
) -> PublishReport | AlreadyPublished:
    """Publish top-K recommendations for every user from the champion.

    The users are ranked in shards mapped over the flow's task runner (threads by default,
    Dask workers with RECSYS_TASK_RUNNER=dask), then committed together in one commit.
    """
    with stop_on_signals():
        return rank_and_publish(options.settings(), refresh=True)


def rank_and_publish(settings: Settings, *, refresh: bool) -> PublishReport | AlreadyPublished:
    """The recommend stage inside a flow: plan, shards mapped over the runner, one commit.

    Unless `refresh`, a night whose inputs (events, champion, settings, unavailable items)
    were already published is not published again: the latest commit records the
    fingerprint of the inputs it came from (`recommend_inputs`).
    """
    if not refresh and (done := published_report(RunContext(settings))) is not None:
        get_run_logger().info(
            "recommendations from these inputs are already published (version %s)",
            done.version,
        )
        return done
    try:
        report = run_sharded(RECOMMEND, settings)
    except NightHeld as held:
        get_run_logger().error("%s", held)
        guardrails_artifact(held.guardrails, settings)
        raise
    if report.guardrails.breaches:
        get_run_logger().warning(
            "published despite breached guardrails: %s", report.guardrails.breaches
        )
    guardrails_artifact(report.guardrails, settings)
    return report


@flow(name="finetune-encoder")
def finetune_encoder_flow(
    options: EncoderOptions = EncoderOptions(), finetune: FinetuneOptions = FinetuneOptions()
) -> FinetuneReport:
    """Fine-tune the item text encoder on co-occurring items; register it as an encoder
    version (`models:/recsys-encoder/N`) that encode and nightly can use."""
    with stop_on_signals():
        settings = options.settings()
        return finetune_encoder_task(
            settings, finetune.config(settings), finetune.split, finetune.evaluate,
            finetune.output,
        )  # fmt: skip
