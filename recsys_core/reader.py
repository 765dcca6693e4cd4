"""Read published recommendations: what services and the `recs` command call.

A `RecommendationReader` keeps the Delta table open and moves it to the newest version before
every read (a listing of the transaction log, well under a millisecond), so a new night is
visible as soon as it is committed and each read sees exactly one version, never a mix. The
table is sorted by user id in row groups that never split a user, and every file carries
min/max statistics, so polars opens one file and decodes one row group per user looked up.

Use one reader per thread for parallel reads (a reader serializes its own reads).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from recsys_core.errors import InputError
from recsys_core.storage import Lake
from recsys_core.storage.live import LiveTable

TABLE = "recommendations"


class RecommendationReader:
    """Warm reads of one data directory's `recommendations` table (and item titles).

    Args:
        data_dir: The data directory.
    """

    def __init__(self, data_dir: Path | str):
        self.lake = Lake(Path(data_dir))
        self._tables: dict[str, LiveTable] = {}
        self._titles: tuple[int, pl.DataFrame] | None = None  # (items version, id -> title)
        self._lock = threading.Lock()

    def version(self) -> int:
        """The newest committed version of the recommendations table."""
        with self._lock:
            return self._newest(TABLE).version

    def recommendations(self, user_ids: Sequence[str], *, k: int | None = None) -> pl.DataFrame:
        """Published rows of `user_ids` (ranks 1..k), sorted by user and rank.

        Args:
            user_ids: External user ids; unknown ids give no rows.
            k: Keep ranks 1..k; None keeps all.

        Raises:
            InputError: The table does not exist yet.
        """
        ids = [str(u) for u in user_ids]
        match = pl.col("user_id") == ids[0] if len(ids) == 1 else pl.col("user_id").is_in(ids)
        if k is not None:
            match = match & (pl.col("rank") <= k)
        with self._lock:
            table = self._newest(TABLE)
            try:
                return table.scan().filter(match).sort("user_id", "rank").collect()
            except (OSError, pl.exceptions.ComputeError):
                # files of the version we held were vacuumed meanwhile: load the newest afresh
                table.reopen()
                return table.scan().filter(match).sort("user_id", "rank").collect()

    def titles(self) -> pl.DataFrame:
        """`item_id`, `title` of the catalog, cached until the items table changes."""
        with self._lock:
            if not self.lake.exists("items"):
                return pl.DataFrame(schema={"item_id": pl.String, "title": pl.String})
            items = self._newest("items")
            if self._titles is None or self._titles[0] != items.version:
                frame = items.scan().select("item_id", "title").collect()
                self._titles = (items.version, frame)
            return self._titles[1]

    def _newest(self, table: str) -> LiveTable:
        """`table` held open, moved to its newest version (opened on first use)."""
        opened = self._tables.get(table)
        if opened is None:
            opened = self._tables[table] = self.lake.live(table)
        else:
            opened.latest()
        return opened


_READERS: dict[Path, RecommendationReader] = {}
_READERS_LOCK = threading.Lock()


def reader_for(data_dir: Path | str) -> RecommendationReader:
    """The process-wide reader of `data_dir` (created on first use, then kept warm)."""
    root = Path(data_dir).expanduser().resolve()
    with _READERS_LOCK:
        if root not in _READERS:
            _READERS[root] = RecommendationReader(root)
        return _READERS[root]


def read_recommendations(
    data_dir: Path | str, user_ids: Sequence[str], *, k: int | None = None
) -> pl.DataFrame:
    """Published rows of `user_ids` (ranks 1..k), sorted by user and rank.

    Args:
        data_dir: The data directory.
        user_ids: External user ids; unknown ids give no rows.
        k: Keep ranks 1..k; None keeps all.
    """
    return reader_for(data_dir).recommendations(user_ids, k=k)


def read_user_recommendations(data_dir: Path | str, user_id: str, *, k: int = 20) -> pl.DataFrame:
    """One user's recommendations with item and reason titles (what `recsys recs` shows).

    Args:
        data_dir: The data directory.
        user_id: External user id.
        k: How many.

    Raises:
        InputError: No table yet, or no recommendations for this user.
    """
    reader = reader_for(data_dir)
    rows = reader.recommendations([user_id], k=k)
    if rows.is_empty():
        raise InputError(
            f"user {user_id!r} has no recommendations in {reader.lake.path(TABLE)} "
            f"(version {reader.version()})"
        )
    return add_titles(data_dir, rows)


def add_titles(data_dir: Path | str, rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` with `title` and `reason_title` (null where the catalog has none).

    Args:
        data_dir: The data directory.
        rows: Frame with `item_id` and `reason_item_id`.
    """
    titles = reader_for(data_dir).titles()
    reason_titles = titles.rename({"item_id": "reason_item_id", "title": "reason_title"})
    return rows.join(titles, on="item_id", how="left", maintain_order="left").join(
        reason_titles, on="reason_item_id", how="left", maintain_order="left"
    )
