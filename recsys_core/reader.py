"""Read published recommendations: what services and the `recs` command call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from recsys_core.errors import InputError
from recsys_core.storage import Lake


def read_recommendations(
    data_dir: Path | str, user_ids: Sequence[str], *, k: int | None = None
) -> pl.DataFrame:
    """Published rows of `user_ids` (ranks 1..k), sorted by user and rank."""
    lake = Lake(Path(data_dir))
    frame = lake.scan("recommendations").filter(pl.col("user_id").is_in(list(user_ids)))
    if k is not None:
        frame = frame.filter(pl.col("rank") <= k)
    return frame.sort(["user_id", "rank"]).collect()


def read_user_recommendations(data_dir: Path | str, user_id: str, *, k: int = 20) -> pl.DataFrame:
    """One user's recommendations with item and reason titles.

    Raises:
        InputError: No table yet, or no recommendations for this user.
    """
    lake = Lake(Path(data_dir))
    rows = read_recommendations(data_dir, [user_id], k=k)
    if rows.is_empty():
        raise InputError(
            f"user {user_id!r} has no recommendations in {lake.path('recommendations')}"
        )
    titles = (
        lake.scan("items")
        .filter(pl.col("item_id").is_in([*rows["item_id"], *rows["reason_item_id"].drop_nulls()]))
        .select("item_id", "title")
        .collect()
    )
    return (
        rows.join(titles, on="item_id", how="left")
        .join(
            titles.rename({"item_id": "reason_item_id", "title": "reason_title"}),
            on="reason_item_id",
            how="left",
        )
        .sort("rank")
    )
