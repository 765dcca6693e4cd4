"""One Prefect task per pipeline stage, and three for any sharded stage.

Tasks take the settings and a source description (small, serializable), call the stage in
`recsys_core.pipeline` with one run context (those settings and the flow run's id), log its
report and return it, typed (`IngestReport`, `EncodeReport`, `TrainReport`, ...). A sharded
stage (`recsys_core.pipeline.sharded.ShardedStage`: encode, recommend) runs as `plan_task`,
`shard_task` per shard and `commit_task`, whatever the stage. Retries apply to I/O errors
only: bad input (InputError) fails at once with its message.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from recsys_core import pipeline
from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.encoders.finetune_config import FinetuneConfig
from recsys_core.errors import InputError
from recsys_core.pipeline.finetune import FinetuneReport, finetune_encoder
from recsys_core.pipeline.ingest import IngestReport
from recsys_core.pipeline.sharded import PlanT, ReportT, ResultT, ShardedStage, ShardT
from recsys_core.pipeline.train import TrainReport
from recsys_core.settings import Settings
from tasks.cache import cache_key_on
from tasks.cluster import dask_chunk_map


def _retry_on_io(task, task_run, state) -> bool:
    """Retry transient I/O failures (disk, network mounts), never bad input or bugs."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, OSError) and not isinstance(error, InputError)


IO_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": _retry_on_io}


def cached_on(fingerprint: Callable[[RunContext], str]) -> dict:
    """Task options: cache the stage's report on the fingerprint of what it reads."""
    return {
        "cache_key_fn": cache_key_on(fingerprint),
        "cache_expiration": timedelta(days=7),
        "persist_result": True,
        "result_serializer": "json",
    }


def _run_id() -> str:
    return str(flow_run.id or "")


def _context(settings: Settings) -> RunContext:
    """The context a task's stage runs in: its settings and the flow run's id."""
    return RunContext(settings, run_id=_run_id())


@task(name="ingest", cache_policy=NONE, **IO_RETRIES)
def ingest_task(source: SourceSpec, settings: Settings) -> IngestReport:
    report = pipeline.ingest(_context(settings), source)
    get_run_logger().info(
        "ingested %s: %d events added, %d duplicates, %d quarantined; %d events, %d users, "
        "%d items in total",
        report.source, report.events_added, report.duplicates, report.quarantined,
        report.events_total, report.users_total, report.items_total,
    )  # fmt: skip
    for note in report.notes:
        get_run_logger().info(note)
    if report.quarantined or report.items_quarantined or report.bot_users:
        get_run_logger().warning(
            "ingest set aside %d rows (%s; see the quarantine table); %d bot-like users over "
            "%d events per day; %d events for items not in the catalog",
            report.quarantined + report.items_quarantined, report.quarantine_reasons,
            report.bot_users, report.bot_events_per_day, report.unknown_item_events,
        )  # fmt: skip
    return report


@task(name="plan", cache_policy=NONE, **IO_RETRIES)
def plan_task(stage: ShardedStage[PlanT, ShardT, ResultT, ReportT], settings: Settings) -> PlanT:
    """Plan a sharded stage: what each shard will do (nothing readers see changes)."""
    plan = stage.plan(_context(settings))
    get_run_logger().info("%s", stage.plan_line(plan))
    return plan


@task(
    name="shard", task_run_name="{stage.shard_name}-{shard.index}", cache_policy=NONE, **IO_RETRIES
)
def shard_task(
    stage: ShardedStage[PlanT, ShardT, ResultT, ReportT],
    plan: PlanT,
    shard: ShardT,
    settings: Settings,
) -> ResultT:
    """Run one shard and stage its work; only the commit publishes it."""
    result = stage.run(_context(settings), plan, shard, progress=sys.stderr.isatty())
    get_run_logger().info("%s", stage.result_line(result))
    return result


@task(name="commit", cache_policy=NONE, **IO_RETRIES)
def commit_task(
    stage: ShardedStage[PlanT, ShardT, ResultT, ReportT],
    settings: Settings,
    plan: PlanT,
    results: list[ResultT],
) -> ReportT:
    """Publish every shard's work in one commit (none when a shard is missing)."""
    report = stage.commit(_context(settings), plan, results)
    get_run_logger().info("%s", stage.report_line(report))
    return report


@task(name="train", **cached_on(pipeline.train_inputs))
def train_task(settings: Settings) -> TrainReport:
    logger = get_run_logger()
    report = pipeline.train(
        _context(settings), progress=sys.stderr.isatty(), log=logger.info,
        map_chunks=dask_chunk_map() if settings.runtime.task_runner == "dask" else None,
    )  # fmt: skip
    logger.info("champion %s: %s", report.champion, report.decision)
    return report


@task(name="finetune-encoder", cache_policy=NONE)
def finetune_encoder_task(
    settings: Settings,
    config: FinetuneConfig,
    split: str,
    evaluate: bool = False,
    output: str | None = None,
) -> FinetuneReport:
    report = finetune_encoder(
        _context(settings), config, split=split, evaluate_content=evaluate,
        output=Path(output) if output else None, progress=sys.stderr.isatty(),
    )  # fmt: skip
    logger = get_run_logger()
    for epoch in report.epochs:
        logger.info("epoch %d: %s", int(epoch["epoch"]), epoch)
    logger.info("registered %s (%s) from %s", report.reference, report.encoder, report.base_encoder)
    return report
