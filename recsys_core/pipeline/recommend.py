"""Recommend: champion model -> top-K for every user -> one atomic commit of `recommendations`.

The users (sorted by id) are cut into shards, contiguous ranges that can be ranked on
different workers. Each shard is ranked and written as a data file inside the table's folder,
sorted by user id with row groups that never split a user; readers do not see it yet. The
publish step then commits every shard's file at once: the previous night is replaced in one
commit whose metadata records the run, the model, the row count and the user coverage. Files
replaced longer ago than the retention period are vacuumed afterwards; until then any earlier
night can be restored (`Lake.rollback`).

The three steps are the sharded-stage contract (`pipeline.sharded`): `RECOMMEND.run_here`
runs them in one process (`recommend`); `flows.stages.recommend_flow` maps the shards over
the flow's task runner.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from recsys_core import schemas
from recsys_core.context import RunContext
from recsys_core.data.interactions import HistoryTable, UserHistories
from recsys_core.data.vocab import Vocabulary
from recsys_core.errors import EXIT_HELD, InputError
from recsys_core.pipeline.fingerprints import champion_state, file_digest, stage_fingerprint
from recsys_core.pipeline.sharded import ShardedStage, results_in_plan_order
from recsys_core.ranking import (
    QueryBlend,
    Shard,
    TopK,
    encode_queries,
    load_query_encoder,
    plan_shards,
    top_k,
)
from recsys_core.registry.artifacts import ModelBundle
from recsys_core.registry.reader import RegistryReader
from recsys_core.registry.tracking import CHAMPION, Tracker
from recsys_core.settings import RecommendSettings
from recsys_core.storage import Lake
from recsys_core.storage.lake import DataFile
from recsys_core.storage.owners import claim, owner_is_live

TABLE = "recommendations"
STAGE = "recommend"  # its staging area (`Lake.staging`) holds an owner file per unpublished run
SHARD_FILES = "run-*-shard-*.parquet"  # `rank_shard`'s files: run-<token>-shard-<n>-<uuid>
OTHER_HOST_SECONDS = 24 * 3600  # a run on another host not heard of for this long is gone
INPUT_TABLES = ("events",)  # besides the champion and the unavailable-items file
INPUT_SETTINGS = ("compute", "recommend", "tracking")  # the settings groups it reads


@dataclass(frozen=True)
class RecommendPlan:
    """What every shard of one run shares; small, so tasks can pass it around.

    Attributes:
        run_id: The pipeline run (recorded in the commit).
        token: Unique id of this run's staged files.
        model: Registered model label (`name/version`) of the champion.
        model_version: Its registered version, loaded by every shard.
        events_version: Version of the `events` table every shard reads its histories from.
        users: Users to rank.
        k: Recommendations per user.
        shards: User ranges.
        generated_at: Timestamp written into every row.
        unavailable_items: File of item ids never to recommend, or None.
        inputs: Fingerprint of what this run ranks from (`recommend_inputs`), kept in the
            commit so a repeated run can tell the night was already published.
    """

    run_id: str
    token: str
    model: str
    model_version: str
    events_version: int
    users: int
    k: int
    shards: list[Shard]
    generated_at: datetime
    unavailable_items: str | None = None
    inputs: str = ""

    @property
    def plan_id(self) -> str:
        return self.token


@dataclass(frozen=True)
class ShardResult:
    """One ranked shard: its staged file and counts for the run's report."""

    index: int  # the shard's
    file: DataFile
    users: int  # users with at least one recommendation
    users_with_k: int
    catalog_items: int  # items the model knows
    items: list[int] = field(default_factory=list)  # distinct recommended item indexes


class NightHeld(InputError):
    """A guardrail held the night: tonight's table was not committed, readers keep the
    published one. Exit code 3; `guardrails` holds the figures."""

    exit_code = EXIT_HELD
    guardrails: Guardrails


@dataclass
class Guardrails:
    """Tonight's table against the published one, and the verdict.

    Lists are compared on the top `ranks` ranks both tables have (the smaller k), so a night
    with another k is compared like for like.

    Attributes:
        verdict: `first night` (nothing published yet: nothing to compare), `passed`,
            `held` (a breach; nothing committed) or `forced` (a breach published by `force`).
        breaches: One line per guardrail breached, with its figures.
        published_version: The version readers saw when tonight was compared with it.
        ranks: The top ranks compared (the smaller of the two tables' k).
        published_users: Users of the published table.
        user_coverage: Share of those users tonight's table holds.
        catalog_ratio: Distinct items tonight / distinct items published (top `ranks`).
        list_overlap_mean: Mean over users in both of the share of the published list kept.
        list_overlap_p10: Its 10th percentile; `list_overlap_median` its median.
        score_median: Tonight's median score (top `ranks`); `published_score_median` the
            published one.
        score_shift: |median move| in widths of the published 10th-90th percentile range.
        score_shift_checked: Whether the shift counts (the same champion version made both).
        bad_scores: NaN or infinite scores tonight.
    """

    verdict: str = "first night"
    breaches: list[str] = field(default_factory=list)
    published_version: int | None = None
    ranks: int = 0
    published_users: int = 0
    user_coverage: float | None = None
    catalog_ratio: float | None = None
    list_overlap_mean: float | None = None
    list_overlap_p10: float | None = None
    list_overlap_median: float | None = None
    score_median: float | None = None
    published_score_median: float | None = None
    score_shift: float | None = None
    score_shift_checked: bool = False
    bad_scores: int = 0
    mlflow_tags: str = ""  # "set", or why the MLflow tags could not be set

    def reason(self) -> str:
        """One line: the verdict and, for a breach, which guardrails and their figures."""
        if not self.breaches:
            return self.verdict
        return f"{self.verdict}: " + "; ".join(self.breaches)


@dataclass
class PublishReport:
    """What one publish did (the JSON of `recsys recommend`, the nightly summary's
    `publish`): counts, coverage, the committed version and tonight's guardrails."""

    model: str
    users: int = 0
    rows: int = 0
    users_with_k: int = 0
    user_coverage: float = 0.0
    catalog_coverage: float = 0.0
    shards: int = 0
    unavailable_items: int = 0
    version: int | None = None
    vacuumed_files: int = 0
    seconds: float = 0.0
    example_user: str | None = None
    guardrails: Guardrails = field(default_factory=Guardrails)  # of this night


@dataclass(frozen=True)
class AlreadyPublished:
    """A nightly whose recommend inputs did not change: the published night is kept.

    Attributes:
        model: Registered model label of the published night.
        rows: Its rows.
        users: Its users.
        version: The published table version.
        reused: Always True: nothing was ranked.
    """

    model: str
    rows: int
    users: int
    version: int
    reused: bool = True

    @property
    def example_user(self) -> None:
        """No user is looked up when nothing was ranked (the report's shape is kept)."""
        return None


# -- inputs and the "already published?" check ---------------------------------------------
def recommend_inputs(context: RunContext, *, champion: str | None = None) -> str:
    """Fingerprint of what the recommend stage reads: events, champion version, its settings
    groups, and the contents of the unavailable-items file when there is one.

    Args:
        context: The data directory and run settings.
        champion: The champion version ranked from; default: the one `champion` names now.
    """
    key = stage_fingerprint(
        "recommend", context, INPUT_TABLES, INPUT_SETTINGS,
        champion=champion_state(context) if champion is None else champion,
    )  # fmt: skip
    unavailable = file_digest(context.settings.recommend.unavailable_items)
    return key if unavailable is None else f"{key}-{unavailable}"


def published_report(context: RunContext) -> AlreadyPublished | None:
    """The report of the latest publish when it came from exactly tonight's inputs, else None.

    A repeated nightly whose events, champion, settings and unavailable items did not change
    finds its recommendations already published and does not rank again.
    """
    lake = context.lake
    if not lake.exists(TABLE):
        return None
    latest = lake.history(TABLE)[0]
    if latest.get("inputs") != recommend_inputs(context):
        return None
    return AlreadyPublished(
        model=latest.get("model", ""),
        rows=int(latest.get("rows", 0)),
        users=int(latest.get("users", 0)),
        version=int(latest["version"]),
    )


# -- the three steps ------------------------------------------------------------------------
def plan_recommend(context: RunContext, *, shard_users: int | None = None) -> RecommendPlan:
    """Resolve the champion, the events snapshot and the shards; checks input up front.

    The plan carries the fingerprint of these inputs, which `publish` records in its commit.

    Args:
        context: The data directory, the run settings (k, unavailable items file, shard
            size) and the pipeline run, recorded in the commit.
        shard_users: Users per shard (default: the `shard_users` setting).

    Raises:
        InputError: No champion, no events, or a bad unavailable-items file.
    """
    lake, settings = context.lake, context.settings.recommend
    registered_model = context.settings.tracking.registered_model
    champion = RegistryReader(lake).version_by_alias(registered_model, CHAMPION)
    if champion is None:
        raise InputError(
            f"no {CHAMPION} version of model {registered_model!r} (run `recsys train` first)"
        )
    unavailable = settings.unavailable_items
    if unavailable is not None:
        read_item_ids(unavailable)  # fail now, before any shard runs
    events_version = lake.version("events")
    if events_version is None:
        raise InputError(f"table events not found under {lake.root} (run `recsys ingest` first)")
    users = lake.scan("events", version=events_version).select(
        pl.col("user_id").n_unique()
    ).collect().item()  # fmt: skip
    if not users:
        raise InputError(f"table events under {lake.root} is empty: no users to recommend for")
    token = uuid.uuid4().hex[:12]
    remove_orphaned_shards(lake)
    claim(lake.staging(STAGE).owner_file(token), plan=token)  # before any shard is written
    return RecommendPlan(
        run_id=context.run_id,
        token=token,
        model=champion.label,
        model_version=champion.version,
        events_version=events_version,
        users=users,
        k=settings.k,
        shards=plan_shards(users, shard_users or settings.shard_users),
        generated_at=datetime.now(UTC),
        unavailable_items=str(unavailable) if unavailable else None,
        inputs=recommend_inputs(context, champion=champion.version),
    )


def rank_shard(
    context: RunContext, plan: RecommendPlan, shard: Shard, *, progress: bool = False
) -> ShardResult:
    """Rank one shard's users and stage their rows as a data file (not yet visible).

    Args:
        context: The data directory and run settings (memory budget for scoring).
        plan: The run's plan.
        shard: Which users.
        progress: Show a progress bar.
    """
    lake, settings = context.lake, context.settings
    tracking = settings.tracking
    shared = _shard_context(
        str(lake.root), tracking.experiment, tracking.registered_model, plan.model_version,
        plan.events_version, plan.unavailable_items,
    )  # fmt: skip
    histories = shared.histories.slice(shard.start, shard.stop)
    ranked = top_k(
        shared.bundle.model, histories, plan.k, exclude_items=shared.unavailable,
        explain=True, memory_mb=settings.compute.score_memory_mb, progress=progress,
        what=f"recommend shard {shard.index + 1}/{len(plan.shards)}",
    )  # fmt: skip
    items = shared.bundle.items
    table, rows = recommendation_rows(
        ranked, items, lambda r: shared.users.ids.gather(pl.Series(r + shard.start)),
        model=plan.model, generated_at=plan.generated_at,
    )  # fmt: skip
    staged = lake.write_file(
        TABLE, table, name=f"run-{plan.token}-shard-{shard.index:05d}", group_by="user_id"
    )
    per_user = np.bincount(rows, minlength=len(histories))
    return ShardResult(
        index=shard.index,
        file=staged,
        users=int((per_user > 0).sum()),
        users_with_k=int((per_user == plan.k).sum()),
        catalog_items=len(items),
        items=np.unique(ranked.items[ranked.items >= 0]).tolist(),
    )


def publish(
    context: RunContext, plan: RecommendPlan, results: Sequence[ShardResult]
) -> PublishReport:
    """Commit every shard's file in one commit that replaces the table, then vacuum.

    Args:
        context: The data directory and run settings (retention period).
        plan: The run's plan.
        results: One result per shard of the plan, in any order.

    Raises:
        MissingShards: A shard of the plan returned no result; nothing is published then.
        NightHeld: A guardrail held the night; nothing is published.
    """
    lake, settings = context.lake, context.settings
    ordered = results_in_plan_order(STAGE, plan, results)
    n_items = ordered[0].catalog_items if ordered else 0
    report = PublishReport(model=plan.model, shards=len(ordered))
    report.users = sum(r.users for r in ordered)
    report.rows = sum(r.file.rows for r in ordered)
    report.users_with_k = sum(r.users_with_k for r in ordered)
    report.user_coverage = round(report.users / max(plan.users, 1), 4)
    distinct = set().union(*(r.items for r in ordered))
    report.catalog_coverage = round(len(distinct) / max(n_items, 1), 4)
    files = [r.file for r in ordered]
    guards = check_guardrails(context, plan, files)
    report.guardrails = guards
    if guards.verdict == "held":
        _record_verdict(context, plan, guards)
        for staged in files:  # never committed: nothing will read them
            (lake.path(TABLE) / staged.path).unlink(missing_ok=True)
        held = NightHeld(
            f"night held, recommendations not published: {'; '.join(guards.breaches)}; "
            f"readers keep version {guards.published_version}; rerun with --force to publish "
            "anyway"
        )
        held.guardrails = report.guardrails
        raise held
    report.version = lake.commit_files(
        TABLE,
        files,
        metadata={
            "run_id": plan.run_id, "stage": "recommend", "model": plan.model,
            "rows": report.rows, "users": report.users, "k": plan.k,
            "user_coverage": report.user_coverage, "shards": len(ordered),
            "generated_at": plan.generated_at.isoformat(),
            "guardrails": guards.reason(),
            **({"inputs": plan.inputs} if plan.inputs else {}),
        },
    )  # fmt: skip
    _record_verdict(context, plan, guards, version=report.version)
    report.vacuumed_files = len(
        lake.vacuum(TABLE, retention_days=settings.recommend.retention_days)
    )
    first = lake.scan(TABLE, version=report.version).select("user_id").head(1).collect()
    report.example_user = first["user_id"][0] if first.height else None
    if plan.unavailable_items:
        report.unavailable_items = len(read_item_ids(plan.unavailable_items))
    report.seconds = round((datetime.now(UTC) - plan.generated_at).total_seconds(), 3)
    return report


# -- guardrails: tonight against what readers see now -----------------------------------------
def check_guardrails(context: RunContext, plan: RecommendPlan, files: list[DataFile]) -> Guardrails:
    """Compare tonight's staged files with the published table; decide whether to publish.

    Thresholds are the `guard_*` settings of the recommend group; `force` turns a hold into
    `forced`. The first night (no published table) has nothing to compare and publishes.

    Args:
        context: The data directory and the recommend settings.
        plan: The run's plan (its champion version is compared with the published one's).
        files: Tonight's staged files, not yet committed.
    """
    lake, settings = context.lake, context.settings.recommend
    guards = Guardrails()
    if not lake.exists(TABLE):
        return guards
    guards.published_version = lake.version(TABLE)
    columns = ["user_id", "rank", "item_id", "score"]
    old = lake.scan(TABLE, version=guards.published_version).select(columns)
    folder = lake.path(TABLE)
    new = pl.scan_parquet([str(folder / f.path) for f in files], glob=False).select(columns)
    old_k = old.select(pl.col("rank").max()).collect().item() or 0
    guards.ranks = min(int(old_k), plan.k)
    old_top = old.filter(pl.col("rank") <= guards.ranks).collect()
    new_top = new.filter(pl.col("rank") <= guards.ranks).collect()
    guards.bad_scores = new.select((~pl.col("score").is_finite()).sum()).collect().item()
    old_users = old_top["user_id"].unique()
    guards.published_users = len(old_users)
    if guards.published_users == 0:  # an empty table: nothing readers would miss
        return _verdict(guards, settings)
    kept_users = old_users.is_in(new_top["user_id"].unique().implode()).sum()
    guards.user_coverage = round(kept_users / guards.published_users, 4)
    guards.catalog_ratio = round(
        new_top["item_id"].n_unique() / max(old_top["item_id"].n_unique(), 1), 4
    )
    # per user in both: items kept / the shorter list (a user may have fewer than k)
    lengths = (
        old_top.group_by("user_id")
        .len("old")
        .join(new_top.group_by("user_id").len("new"), on="user_id")
    )
    kept = old_top.join(new_top, on=["user_id", "item_id"]).group_by("user_id").len("kept")
    overlap = (
        lengths.join(kept, on="user_id", how="left")
        .select(pl.col("kept").fill_null(0) / pl.min_horizontal("old", "new"))
        .to_series()
    )
    if len(overlap):
        guards.list_overlap_mean = round(float(overlap.mean()), 4)
        guards.list_overlap_p10 = round(float(overlap.quantile(0.1)), 4)
        guards.list_overlap_median = round(float(overlap.median()), 4)
    old_scores = old_top["score"].filter(old_top["score"].is_finite())
    new_scores = new_top["score"].filter(new_top["score"].is_finite())
    if len(old_scores) and len(new_scores):
        guards.published_score_median = float(old_scores.median())
        guards.score_median = float(new_scores.median())
        spread = float(old_scores.quantile(0.9) - old_scores.quantile(0.1))
        scale = max(spread, abs(guards.published_score_median) * 1e-3, 1e-9)
        guards.score_shift = round(
            abs(guards.score_median - guards.published_score_median) / scale, 4
        )
        published_model = lake.history(TABLE)[0].get("model")
        guards.score_shift_checked = published_model == plan.model
    return _verdict(guards, settings)


def _verdict(guards: Guardrails, settings: RecommendSettings) -> Guardrails:
    """Set the breaches and the verdict from the figures and the thresholds."""
    checks = [
        ("user coverage", guards.user_coverage, settings.guard_min_user_coverage, "min",
         f"of the {guards.published_users} published users"),
        ("catalog ratio", guards.catalog_ratio, settings.guard_min_catalog_ratio, "min",
         "distinct items tonight / published"),
        ("list overlap", guards.list_overlap_mean, settings.guard_min_list_overlap, "min",
         f"mean share of each list kept, top {guards.ranks}"),
        ("score shift", guards.score_shift if guards.score_shift_checked else None,
         settings.guard_max_score_shift, "max",
         "median move in published 10th-90th percentile widths"),
        ("bad scores", guards.bad_scores, settings.guard_max_bad_scores, "max",
         "NaN or infinite scores"),
    ]  # fmt: skip
    for name, value, limit, bound, what in checks:
        if value is None:
            continue
        if (bound == "min" and value < limit) or (bound == "max" and value > limit):
            sign = "<" if bound == "min" else ">"
            guards.breaches.append(f"{name} {value:g} {sign} {limit:g} ({what})")
    if not guards.breaches:
        guards.verdict = "passed"
    else:
        guards.verdict = "forced" if settings.force else "held"
    return guards


def _record_verdict(
    context: RunContext, plan: RecommendPlan, guards: Guardrails, *, version: int | None = None
) -> None:
    """Tag the champion's registered version and its MLflow run with tonight's verdict, so
    the registry says why a night was held or forced.

    Best effort: the verdict is already in the commit or the error, so a failing MLflow
    store is noted in `guards.mlflow_tags` rather than failing a night that published.
    """
    tracking = context.settings.tracking
    tags = {
        "publish_guardrails": guards.verdict,
        "publish_guardrails_reason": guards.reason()[:5000],
        "publish_run_id": plan.run_id,
        "publish_table_version": "" if version is None else str(version),
    }
    try:
        tracker = Tracker(context.lake, tracking.experiment, tracking.registered_model)
        tracker.tag_version(plan.model_version, tags, and_its_run=True)
        guards.mlflow_tags = "set"
    except Exception as exc:  # a failing store must not fail a published night
        guards.mlflow_tags = f"not set: {type(exc).__name__}: {exc}"[:500]


def recommend(context: RunContext, *, progress: bool = False) -> PublishReport:
    """Score every user with the champion and replace the recommendations table in one commit.

    Args:
        context: The data directory, run settings and the pipeline run (recorded in the
            commit).
        progress: Show progress bars.
    """
    return RECOMMEND.run_here(context, progress=progress)


class RecommendStage(ShardedStage[RecommendPlan, Shard, ShardResult, PublishReport]):
    """The recommend stage in the sharded-stage contract (`plan_recommend`, `rank_shard`,
    `publish`)."""

    name, shard_name, commit_name = STAGE, "rank-shard", "publish"

    def plan(self, context: RunContext) -> RecommendPlan:
        return plan_recommend(context)

    def run(
        self, context: RunContext, plan: RecommendPlan, shard: Shard, *, progress: bool = False
    ) -> ShardResult:
        return rank_shard(context, plan, shard, progress=progress)

    def commit(
        self, context: RunContext, plan: RecommendPlan, results: Sequence[ShardResult]
    ) -> PublishReport:
        return publish(context, plan, results)

    def plan_line(self, plan: RecommendPlan) -> str:
        return f"ranking {plan.users} users with {plan.model} in {len(plan.shards)} shards"

    def result_line(self, result: ShardResult) -> str:
        return f"shard {result.index}: {result.users} users ranked, {result.file.rows} rows staged"

    def report_line(self, report: PublishReport) -> str:
        return (
            f"published {report.rows} recommendations for {report.users} users from "
            f"{report.model} in one commit (table version {report.version}); guardrails: "
            f"{report.guardrails.verdict}"
        )


RECOMMEND = RecommendStage()


def remove_orphaned_shards(lake: Lake) -> list[Path]:
    """Delete the shard files of runs that were killed or stopped before their commit.

    A shard file goes when no entry of the table's log names it and the run that wrote it is
    gone: its owner file (written before its first shard) is missing, or names a process that
    ended; a run of this process that is not planning now has ended too. Files of a live run,
    of any committed version and of versions still restorable are kept.

    Returns:
        The deleted files.
    """
    staging = lake.staging(STAGE)

    def live(token: str) -> bool:  # asked per file, so a run that started since counts
        return owner_is_live(
            staging.owner_file(token), other_host_seconds=OTHER_HOST_SECONDS, this_process=False
        )

    ended = [owner for owner in staging.owner_files() if not live(owner.stem)]
    removed = lake.remove_unlogged(TABLE, SHARD_FILES, keep=lambda f: live(f.name.split("-")[1]))
    for owner in ended:
        owner.unlink(missing_ok=True)
    return removed


# -- query-aware recommendations, computed live ------------------------------------------------
def recommend_for_query(
    context: RunContext,
    user_id: str,
    query: str,
    *,
    k: int = 20,
    weight: float | None = None,
) -> pl.DataFrame:
    """Top `k` for one user, ranked by a blend of `query` relevance and the champion's score.

    The query is encoded by the encoder that embedded the champion's items (recorded in its
    bundle, with the item vectors); the user's seen items (from the `events` table) are
    excluded. A user without events is ranked by the query and the model's scores for an
    empty history.

    Args:
        context: The data directory and run settings (query weight, unavailable items,
            device).
        user_id: External user id.
        query: Free text, e.g. "space adventure".
        k: How many items.
        weight: Share of query relevance in the blend (default: the `query_weight` setting).

    Returns:
        Rows in the `recommendations` schema, best first.
    """
    if not query.strip():
        raise InputError("the query is empty")
    lake, settings = context.lake, context.settings
    bundle, version = Tracker.of(context).load(CHAMPION)
    if bundle.item_embeddings is None:
        raise InputError(
            f"champion {version.label} carries no item embeddings, so it cannot rank by a "
            "query (run `recsys encode`, then `recsys train`)"
        )
    encoder = load_query_encoder(bundle.metadata, device=settings.compute.device)
    events = (
        lake.scan("events")
        .filter(pl.col("user_id") == user_id)
        .select("user_id", "item_id", "timestamp", "value")
        .collect()
    )
    histories = _histories_of(events, [user_id], bundle)
    blend = QueryBlend(
        encode_queries(encoder, [query]), bundle.item_embeddings,
        settings.query.query_weight if weight is None else weight,
    )  # fmt: skip
    unavailable = _unavailable_mask(settings.recommend.unavailable_items, bundle.items)
    ranked = top_k(
        bundle.model, histories, k, exclude_items=unavailable, explain=True, query=blend,
        memory_mb=settings.compute.score_memory_mb,
    )  # fmt: skip
    frame, _ = recommendation_rows(
        ranked, bundle.items, lambda rows: pl.Series([user_id] * len(rows), dtype=pl.String),
        model=version.label, generated_at=datetime.now(UTC),
    )  # fmt: skip
    return frame


def recommendation_rows(
    ranked: TopK,
    items: Vocabulary,
    user_ids: Callable[[np.ndarray], pl.Series],
    *,
    model: str,
    generated_at: datetime,
) -> tuple[pl.DataFrame, np.ndarray]:
    """Rows in the `recommendations` schema from a top-K, one per filled (user, rank) slot.

    Args:
        ranked: The top-K of B users (slots without an item hold -1, at the end of a row).
        items: The model's item vocabulary.
        user_ids: External user ids of the given rows of `ranked` (one per output row).
        model: Registered model label written into every row.
        generated_at: Timestamp written into every row.

    Returns:
        The rows, by user then rank, and each row's user row in `ranked`.
    """
    rows, ranks = np.nonzero(ranked.items >= 0)  # row-major: by user, then rank
    frame = pl.DataFrame(
        {
            "user_id": user_ids(rows),
            "rank": (ranks + 1).astype(np.int32),
            "item_id": items.lookup(ranked.items[rows, ranks]),
            "score": ranked.scores[rows, ranks].astype(np.float32),
            "reason_item_id": items.lookup(ranked.reasons[rows, ranks]),
        }
    ).with_columns(
        model=pl.lit(model),
        generated_at=pl.lit(generated_at).cast(schemas.UTC_TIME),
    )
    return frame, rows


# -- helpers ------------------------------------------------------------------------------------
def read_item_ids(path: str | Path) -> list[str]:
    """Item ids listed in a file: CSV, TSV, JSONL or Parquet with an `item_id` column, or a
    text file with one id per line.

    Args:
        path: The file.

    Raises:
        InputError: The file is missing, unreadable or has no `item_id` column.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    name = path.name.lower()
    try:
        if name.endswith(".txt"):
            lines = path.read_text(encoding="utf-8").splitlines()
            return sorted({line.strip() for line in lines if line.strip()})
        if name.endswith((".csv", ".tsv")):
            frame = pl.read_csv(
                path, separator="\t" if name.endswith(".tsv") else ",", infer_schema=False
            )
        elif name.endswith((".jsonl", ".ndjson")):
            frame = pl.read_ndjson(path)
        elif name.endswith(".parquet"):
            frame = pl.read_parquet(path)
        else:
            raise InputError(f"{path}: unsupported file type (use .txt, .csv, .tsv, .jsonl or "
                             ".parquet)")  # fmt: skip
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot be read: {first}") from None
    if "item_id" not in frame.columns:
        raise InputError(
            f"{path}: missing required column 'item_id' "
            f"(found: {', '.join(frame.columns) or 'no columns'})"
        )
    return frame["item_id"].cast(pl.String).drop_nulls().unique().sort().to_list()


@dataclass(frozen=True)
class _ShardContext:
    bundle: ModelBundle
    users: Vocabulary  # sorted user ids of the events snapshot: shard ranges index into it
    histories: UserHistories
    unavailable: np.ndarray | None


@lru_cache(maxsize=1)
def _shard_context(
    root: str,
    experiment: str,
    registered_model: str,
    model_version: str,
    events_version: int,
    unavailable_items: str | None,
) -> _ShardContext:
    """Model and histories shared by every shard of a run, loaded once per process."""
    lake = Lake(Path(root))
    bundle = Tracker(lake, experiment, registered_model).load_version(model_version)
    events = lake.read(
        "events", ["user_id", "item_id", "timestamp", "value"], version=events_version
    )
    users = Vocabulary.from_values(events["user_id"])
    return _ShardContext(
        bundle=bundle,
        users=users,
        histories=_histories_of(events, users.ids.to_list(), bundle, users=users),
        unavailable=_unavailable_mask(unavailable_items, bundle.items),
    )


def _histories_of(
    events: pl.DataFrame,
    user_ids: list[str],
    bundle: ModelBundle,
    users: Vocabulary | None = None,
) -> UserHistories:
    """Histories of `user_ids` (in order) in the model's item index space.

    Items the model never saw are dropped; `user_index` is the user's index in the model
    (-1 for users who arrived after training).
    """
    users = users or Vocabulary(pl.Series(user_ids, dtype=pl.String))
    histories = HistoryTable.of_events(events, users, bundle.items).rows(users.index(user_ids))
    return UserHistories(
        user_index=bundle.users.index(user_ids),
        indptr=histories.indptr,
        items=histories.items,
        timestamps=histories.timestamps,
        n_items=histories.n_items,
    )


def _unavailable_mask(path: str | Path | None, items: Vocabulary) -> np.ndarray | None:
    if path is None:
        return None
    index = items.index(read_item_ids(path))
    mask = np.zeros(len(items), dtype=bool)
    mask[index[index >= 0]] = True  # ids outside the catalog cannot be recommended anyway
    return mask
