"""Interaction data in index space: what every model trains on and every scorer reads."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from recsys_core.data.vocab import Vocabulary


@dataclass(frozen=True)
class UserHistories:
    """Each user's distinct items in chronological order (CSR layout).

    `user_index` is the row's index in the model's user vocabulary, or -1 for a user the
    model has not seen; item-based scorers still rank such users from their history.
    """

    user_index: np.ndarray  # (B,) int64
    indptr: np.ndarray  # (B + 1,) int64
    items: np.ndarray  # (nnz,) int64, oldest first within a row
    timestamps: np.ndarray  # (nnz,) int64 unix seconds
    n_items: int

    def __len__(self) -> int:
        return len(self.user_index)

    def slice(self, start: int, stop: int) -> UserHistories:
        lo, hi = self.indptr[start], self.indptr[stop]
        return UserHistories(
            user_index=self.user_index[start:stop],
            indptr=self.indptr[start : stop + 1] - lo,
            items=self.items[lo:hi],
            timestamps=self.timestamps[lo:hi],
            n_items=self.n_items,
        )

    def row(self, i: int) -> np.ndarray:
        return self.items[self.indptr[i] : self.indptr[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def csr(self, values: np.ndarray | None = None) -> sp.csr_matrix:
        """(B, n_items) sparse matrix: ones, or `values` aligned with `items`."""
        data = np.ones(len(self.items), dtype=np.float32) if values is None else values
        return sp.csr_matrix(
            (data.astype(np.float32), self.items, self.indptr), shape=(len(self), self.n_items)
        )

    def dense(self, values: np.ndarray | None = None) -> torch.Tensor:
        """(B, n_items) float32 dense tensor; fine for a chunk of users."""
        out = torch.zeros(len(self), self.n_items)
        rows = torch.from_numpy(np.repeat(np.arange(len(self)), self.lengths()))
        data = torch.ones(len(self.items)) if values is None else torch.from_numpy(values).float()
        out[rows, torch.from_numpy(self.items)] = data
        return out

    def recency_rank(self) -> np.ndarray:
        """For each history entry, how many later items the user has (0 = most recent)."""
        lengths = self.lengths()
        ends = np.repeat(self.indptr[1:], lengths)
        return ends - np.arange(len(self.items)) - 1


@dataclass(frozen=True)
class Interactions:
    """Events mapped to indexes.

    Args:
        users: User vocabulary.
        items: Item vocabulary (the whole catalog, so items with no events are candidates).
        frame: One row per event: `user_index`, `item_index` (int64), `timestamp` (int64
            unix seconds), `value` (float32), sorted by timestamp.
    """

    users: Vocabulary
    items: Vocabulary
    frame: pl.DataFrame

    @classmethod
    def from_events(
        cls,
        events: pl.DataFrame,
        catalog_item_ids: pl.Series | None = None,
        users: Vocabulary | None = None,
        items: Vocabulary | None = None,
    ) -> Interactions:
        """Build from rows with `user_id`, `item_id`, `timestamp` (datetime) and `value`.

        Args:
            events: Event rows (the `events` table or a slice of it).
            catalog_item_ids: Every catalog item, so items without events still get an index.
            users: Reuse this user vocabulary (events of other users are dropped).
            items: Reuse this item vocabulary (events of other items are dropped).
        """
        if items is None:
            all_items = events["item_id"]
            if catalog_item_ids is not None:
                all_items = pl.concat([all_items, catalog_item_ids.cast(pl.String)])
            items = Vocabulary.from_values(all_items)
        if users is None:
            users = Vocabulary.from_values(events["user_id"])
        ts = events["timestamp"]
        seconds = ts.dt.epoch("s") if ts.dtype.is_temporal() else ts.cast(pl.Int64)
        frame = (
            pl.DataFrame(
                {
                    "user_index": users.index(events["user_id"]),
                    "item_index": items.index(events["item_id"]),
                    "timestamp": seconds,
                    "value": events["value"].cast(pl.Float32).fill_null(1.0),
                }
            )
            .filter((pl.col("user_index") >= 0) & (pl.col("item_index") >= 0))
            .sort(["timestamp", "user_index", "item_index"])
        )
        return cls(users=users, items=items, frame=frame)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def __len__(self) -> int:
        return self.frame.height

    def with_frame(self, frame: pl.DataFrame) -> Interactions:
        return Interactions(users=self.users, items=self.items, frame=frame)

    def matrix(self) -> sp.csr_matrix:
        """Binary (n_users, n_items) matrix of who interacted with what (a copy of one built
        once per object: a night's fits on a part each ask for it)."""
        return self._matrix.copy()

    @functools.cached_property
    def _matrix(self) -> sp.csr_matrix:
        pairs = self.frame.select("user_index", "item_index").unique()
        return sp.csr_matrix(
            (
                np.ones(pairs.height, dtype=np.float32),
                (pairs["user_index"].to_numpy(), pairs["item_index"].to_numpy()),
            ),
            shape=(self.n_users, self.n_items),
        )

    def item_counts(self) -> np.ndarray:
        counts = self.frame.group_by("item_index").agg(pl.col("user_index").n_unique().alias("n"))
        out = np.zeros(self.n_items, dtype=np.float64)
        out[counts["item_index"].to_numpy()] = counts["n"].to_numpy()
        return out

    def histories(self, user_indexes: np.ndarray | None = None) -> UserHistories:
        """Distinct items per user, oldest first (a repeated item counts at its latest time).

        Args:
            user_indexes: Users to include, in this order; default all users. An index
                outside the vocabulary (-1 for an unknown user) gets an empty history.
        """
        if user_indexes is None:
            user_indexes = np.arange(self.n_users, dtype=np.int64)
        user_indexes = np.asarray(user_indexes, dtype=np.int64)
        starts, items, timestamps = self._histories
        known = (user_indexes >= 0) & (user_indexes < self.n_users)  # others: no history
        row = np.where(known, user_indexes, 0)
        begin, lengths = starts[row], np.where(known, starts[row + 1] - starts[row], 0)
        indptr = np.zeros(len(user_indexes) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # each row's entries: its start in the table below plus 0, 1, ... (a copy per call)
        at = np.repeat(begin - indptr[:-1], lengths) + np.arange(indptr[-1])
        return UserHistories(
            user_index=user_indexes,
            indptr=indptr,
            items=items[at].astype(np.int64),
            timestamps=timestamps[at],
            n_items=self.n_items,
        )

    @functools.cached_property
    def _histories(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every user's distinct items, oldest first, built once per object (a night asks for
        the histories of the same part's users many times): row starts (n_users + 1,) int64,
        items (int32) and timestamps (int64)."""
        latest = (
            self.frame.group_by("user_index", "item_index")
            .agg(pl.col("timestamp").max())
            .sort(["user_index", "timestamp", "item_index"])
        )
        users = latest["user_index"].to_numpy()
        starts = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=self.n_users), out=starts[1:])
        return (
            starts,
            latest["item_index"].to_numpy().astype(np.int32),
            latest["timestamp"].to_numpy().astype(np.int64),
        )

    def fingerprint(self) -> str:
        """Short content hash, used to tell whether two evaluations saw the same data."""
        digest = hashlib.blake2b(digest_size=8)
        digest.update(self.frame.hash_rows(seed=0).sort().to_numpy().tobytes())
        digest.update(f"{self.n_users}x{self.n_items}".encode())
        return digest.hexdigest()
