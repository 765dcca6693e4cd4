"""What the `recsys` commands that are not flows ask of a data directory, as plain functions.

Evaluating candidates without registering them, reading a user's recommendations (published,
or live for a text query), listing and restoring versions of the recommendations table, and
reading the quarantine. Each takes the data directory and the command's arguments and returns
data; the CLI renders it. Unset settings come from the `RECSYS_*` environment, as in a run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from recsys_core.context import RunContext
from recsys_core.storage import Lake

if TYPE_CHECKING:
    from recsys_core.pipeline.train import TrainReport

RECOMMENDATIONS = "recommendations"
QUARANTINE = "quarantine"


def evaluate_candidates(
    data_dir: Path,
    *,
    options: Mapping[str, Any] | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> TrainReport:
    """Fit and evaluate candidate models on one protocol; registers nothing.

    Args:
        data_dir: The data directory.
        options: Run options by flat name, e.g. `models`, `encoder`, `protocol` (which may
            be `cold_items` here); the rest from `RECSYS_*`.
        progress: Show progress bars.
        log: Called with a line as each candidate starts and ends.

    Returns:
        The report of `recsys_core.pipeline.train.evaluate_models`.
    """
    from recsys_core.pipeline.train import evaluate_models

    return evaluate_models(RunContext.of(data_dir, **(options or {})), progress=progress, log=log)


def user_recommendations(
    data_dir: Path,
    user_id: str,
    *,
    k: int = 20,
    query: str | None = None,
    query_weight: float | None = None,
) -> pl.DataFrame:
    """A user's top `k` with item and reason titles: the published rows, or for a `query`
    live ones ranked by a blend of the text's relevance and the champion's score.

    Args:
        data_dir: The data directory.
        user_id: External user id.
        k: How many.
        query: Free text to rank by; None reads the published recommendations.
        query_weight: Share of the query in the blend (default: the configured one).

    Raises:
        InputError: No table yet, no recommendations for this user, or an empty query.
    """
    from recsys_core.reader import add_titles, read_user_recommendations

    if query is None:
        return read_user_recommendations(data_dir, user_id, k=k)
    from recsys_core.pipeline.recommend import recommend_for_query

    frame = recommend_for_query(RunContext.of(data_dir), user_id, query, k=k, weight=query_weight)
    return add_titles(data_dir, frame)


def recommendation_versions(data_dir: Path) -> list[dict]:
    """The commits of the recommendations table, newest first (Delta Lake history entries)."""
    return Lake(data_dir).history(RECOMMENDATIONS)


@dataclass(frozen=True)
class Restored:
    """What a rollback of the recommendations table made current again."""

    version: int  # the version that was restored
    new_version: int  # the commit that restored it
    rows: int
    users: int
    models: list[str]  # registered name/version of every model in the restored rows, sorted


def restore_recommendations(data_dir: Path, version: int) -> Restored:
    """Make an earlier version of the recommendations table current, in one new commit.

    Raises:
        InputError: No such version (the message names the ones that exist).
    """
    lake = Lake(data_dir)
    new_version = lake.rollback(RECOMMENDATIONS, version, metadata={"run_id": "cli"})
    restored = lake.scan(RECOMMENDATIONS, version=new_version).collect()
    return Restored(
        version=version,
        new_version=new_version,
        rows=restored.height,
        users=restored["user_id"].n_unique(),
        models=sorted(restored["model"].unique().to_list()),
    )


@dataclass(frozen=True)
class Quarantined:
    """Rows ingestion set aside: how many per reason, and the newest of them."""

    reasons: dict[str, int] = field(default_factory=dict)  # most frequent first
    rows: list[dict] = field(default_factory=list)


def quarantined_rows(data_dir: Path, *, reason: str | None = None, limit: int = 20) -> Quarantined:
    """Counts per reason and the newest `limit` quarantined rows (of one `reason` if given).

    Rows are ordered newest ingestion first, then by source file and row number. A data
    directory without a quarantine table has nothing set aside.
    """
    lake = Lake(data_dir)
    if not lake.exists(QUARANTINE):
        return Quarantined()
    table = lake.scan(QUARANTINE)
    counts = table.group_by("reason").len().sort("len", descending=True).collect()
    if reason:
        table = table.filter(pl.col("reason") == reason)
    order = ["ingested_at", "source_file", "row_number"]
    rows = table.sort(order, descending=[True, False, False]).head(limit).collect()
    return Quarantined(dict(counts.iter_rows()), rows.to_dicts())
