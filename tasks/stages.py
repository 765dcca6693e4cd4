"""One Prefect task per pipeline stage.

Tasks take the settings and a source description (small, serializable), call the stage in
`recsys_core.pipeline` with one run context (those settings and the flow run's id), log its
report and return it as a dict. Retries apply to I/O errors
only: bad input (InputError) fails at once with its message.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from recsys_core import pipeline
from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.encoders.finetune_config import FinetuneConfig
from recsys_core.errors import InputError
from recsys_core.pipeline.encode import EncodePlan, EncodeShard, EncodeShardResult
from recsys_core.pipeline.finetune import finetune_encoder
from recsys_core.pipeline.recommend import NightHeld, RecommendPlan, ShardResult
from recsys_core.ranking import Shard
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
def ingest_task(source: SourceSpec, settings: Settings) -> dict:
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
    return report.as_dict()


@task(name="plan-encode", cache_policy=NONE, **IO_RETRIES)
def plan_encode_task(settings: Settings) -> EncodePlan:
    plan = pipeline.plan_encode(_context(settings))
    get_run_logger().info(
        "%d of %d items to encode with %s in %d shard(s); %d more staged by an earlier run "
        "that did not commit",
        plan.items_total - plan.reused - plan.resumed, plan.items_total, plan.encoder,
        len(plan.shards), plan.resumed,
    )  # fmt: skip
    return plan


@task(
    name="encode-shard",
    task_run_name="encode-shard-{shard.index}",
    cache_policy=NONE,
    **IO_RETRIES,
)
def encode_shard_task(shard: EncodeShard, settings: Settings) -> EncodeShardResult:
    """Encode one shard and stage its rows; the table is written only by the commit."""
    result = pipeline.encode_shard(_context(settings), shard, progress=sys.stderr.isatty())
    get_run_logger().info(
        "shard %d: %d items on %s in %.1fs (%d truncated)",
        result.index, result.rows, result.device, result.seconds, result.truncated,
    )  # fmt: skip
    return result


@task(name="commit-encode", cache_policy=NONE, **IO_RETRIES)
def commit_encode_task(
    settings: Settings, plan: EncodePlan, results: list[EncodeShardResult]
) -> dict:
    report = pipeline.commit_encode(_context(settings), plan, results)
    get_run_logger().info(
        "encoded %d items with %s (%d reused, %d from an earlier run, %d truncated) at %.1f "
        "items/s per shard",
        report.encoded, report.encoder, report.reused, report.resumed, report.truncated,
        report.items_per_second,
    )  # fmt: skip
    return report.as_dict()


@task(name="train", **cached_on(pipeline.train_inputs))
def train_task(settings: Settings) -> dict:
    logger = get_run_logger()
    report = pipeline.train(
        _context(settings), progress=sys.stderr.isatty(), log=logger.info,
        map_chunks=dask_chunk_map() if settings.runtime.task_runner == "dask" else None,
    )  # fmt: skip
    logger.info("champion %s: %s", report.champion, report.decision)
    return report.as_dict()


@task(name="plan-recommend", cache_policy=NONE, **IO_RETRIES)
def plan_recommend_task(settings: Settings) -> RecommendPlan:
    plan = pipeline.plan_recommend(_context(settings))
    get_run_logger().info(
        "ranking %d users with %s in %d shards", plan.users, plan.model, len(plan.shards)
    )
    return plan


@task(name="rank-shard", cache_policy=NONE, **IO_RETRIES)
def rank_shard_task(settings: Settings, plan: RecommendPlan, shard: Shard) -> ShardResult:
    result = pipeline.rank_shard(_context(settings), plan, shard)
    get_run_logger().info(
        "shard %d: users %d..%d ranked, %d rows staged", shard.index, shard.start, shard.stop,
        result.file.rows,
    )  # fmt: skip
    return result


@task(name="publish", cache_policy=NONE, **IO_RETRIES)
def publish_task(settings: Settings, plan: RecommendPlan, results: list[ShardResult]) -> dict:
    logger = get_run_logger()
    try:
        report = pipeline.publish(_context(settings), plan, results)
    except NightHeld as held:
        logger.error("%s", held)
        guardrails_artifact(held.guardrails, settings)
        raise
    logger.info(
        "published %d recommendations for %d users from %s in one commit (table version %s); "
        "guardrails: %s",
        report.rows, report.users, report.model, report.version,
        report.guardrails.get("verdict"),
    )  # fmt: skip
    if report.guardrails.get("breaches"):
        logger.warning("published despite breached guardrails: %s", report.guardrails["breaches"])
    guardrails_artifact(report.guardrails, settings)
    return report.as_dict()


def guardrails_artifact(guardrails: dict, settings: Settings) -> None:
    """A table in the Prefect UI: tonight's figures against the published table, the
    thresholds, and the verdict (key `recommend-guardrails`)."""
    recommend = settings.recommend
    figures = [
        ("user coverage", guardrails.get("user_coverage"),
         f">= {recommend.guard_min_user_coverage}"),
        ("catalog ratio", guardrails.get("catalog_ratio"),
         f">= {recommend.guard_min_catalog_ratio}"),
        ("list overlap (mean)", guardrails.get("list_overlap_mean"),
         f">= {recommend.guard_min_list_overlap}"),
        ("list overlap (p10, median)",
         f"{guardrails.get('list_overlap_p10')}, {guardrails.get('list_overlap_median')}", ""),
        ("score median (published -> tonight)",
         f"{guardrails.get('published_score_median')} -> {guardrails.get('score_median')}", ""),
        ("score shift", guardrails.get("score_shift"),
         f"<= {recommend.guard_max_score_shift}"
         + ("" if guardrails.get("score_shift_checked") else " (not checked: new champion)")),
        ("bad scores", guardrails.get("bad_scores"), f"<= {recommend.guard_max_bad_scores}"),
    ]  # fmt: skip
    lines = [
        f"# Publishing guardrails: {guardrails.get('verdict')}",
        "",
        f"Compared with published version {guardrails.get('published_version')} "
        f"({guardrails.get('published_users')} users, top {guardrails.get('ranks')} ranks).",
        "",
        "| figure | tonight | allowed |",
        "|---|---|---|",
        *(f"| {name} | {value} | {limit} |" for name, value, limit in figures),
    ]
    if guardrails.get("breaches"):
        lines += ["", "Breached:", *(f"- {line}" for line in guardrails["breaches"])]
    if guardrails.get("verdict") == "held":
        lines += ["", "Nothing was committed; readers keep the published table. "
                  "`--force` publishes anyway."]  # fmt: skip
    create_markdown_artifact(
        key="recommend-guardrails", markdown="\n".join(lines),
        description="Tonight's recommendations against the published table",
    )  # fmt: skip


@task(name="finetune-encoder", cache_policy=NONE)
def finetune_encoder_task(
    settings: Settings,
    config: FinetuneConfig,
    split: str,
    evaluate: bool = False,
    output: str | None = None,
) -> dict:
    report = finetune_encoder(
        _context(settings), config, split=split, evaluate_content=evaluate,
        output=Path(output) if output else None, progress=sys.stderr.isatty(),
    )  # fmt: skip
    logger = get_run_logger()
    for epoch in report.epochs:
        logger.info("epoch %d: %s", int(epoch["epoch"]), epoch)
    logger.info("registered %s (%s) from %s", report.reference, report.encoder, report.base_encoder)
    return report.as_dict()
