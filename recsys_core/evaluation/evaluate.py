"""Evaluate a fitted model on a split with full ranking."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from recsys_core.data.interactions import UserHistories
from recsys_core.data.splits import Split
from recsys_core.evaluation.metrics import list_metrics, ranking_metrics
from recsys_core.models.base import Recommender, history_rows
from recsys_core.ranking.topk import top_k, topk_deterministic

# map_chunks(fn, chunks, **shared) -> [fn(chunk, **shared) for chunk in chunks], in order:
# how the chunks of test users are ranked (here, or on a cluster's workers)
ChunkMap = Callable[..., Sequence[np.ndarray]]


def rank_chunk(
    histories: UserHistories,
    *,
    model: Recommender,
    k: int,
    exclude_items: np.ndarray | None,
    memory_mb: int,
) -> np.ndarray:
    """(B, k) top items of one chunk of users: the unit of work a `ChunkMap` ships."""
    return top_k(model, histories, k, exclude_items=exclude_items, memory_mb=memory_mb).items


def evaluate(
    model: Recommender,
    split: Split,
    ks: Sequence[int] = (10, 20),
    *,
    item_embeddings: torch.Tensor | None = None,
    memory_mb: int = 512,
    max_users: int | None = None,
    seed: int = 0,
    progress: bool = False,
    map_chunks: ChunkMap | None = None,
    chunk_users: int = 4096,
) -> dict[str, float]:
    """Rank all items for every test user (training items excluded) and score the lists.

    With more test users than `max_users`, a seeded sample of that many is evaluated (still
    against the whole catalog): the metrics' standard error is then about 1/sqrt(max_users)
    of their spread over users, while the cost stays bounded at any number of users.

    Args:
        model: Fitted on `split.train`.
        split: The split whose test pairs are the relevant items.
        ks: Cut-offs.
        item_embeddings: (n_items, D) text vectors for intra-list diversity; None leaves
            diversity out.
        memory_mb: Score-matrix budget per chunk.
        max_users: Evaluate a sample of at most this many test users; None = all.
        seed: Seed of that sample.
        progress: Show a progress bar over the ranked users (when ranked here).
        map_chunks: Rank chunks of `chunk_users` test users through this mapper (e.g. on
            Dask workers, see `tasks.cluster.dask_chunk_map`); None ranks them here. Either
            way gives the same lists: top-K does not depend on how users are chunked.
        chunk_users: Users per chunk sent to `map_chunks`.

    Returns:
        Accuracy and beyond-accuracy metrics keyed like `ndcg@10`, plus `users` (evaluated)
        and `test_users` (in the split).
    """
    users = split.test_users
    test_users = len(users)
    if max_users is not None and len(users) > max_users:
        rng = np.random.default_rng(seed)
        users = np.sort(rng.choice(users, size=max_users, replace=False))
    histories = split.train.histories(users)
    blocked = None if split.candidates is None else ~split.candidates
    if map_chunks is None:
        ranked = top_k(
            model, histories, max(ks), exclude_items=blocked, memory_mb=memory_mb,
            progress=progress,
        ).items  # fmt: skip
    else:
        shared: dict[str, Any] = {
            "model": model, "k": max(ks), "exclude_items": blocked, "memory_mb": memory_mb,
        }  # fmt: skip
        chunks = [
            histories.slice(start, min(start + chunk_users, len(users)))
            for start in range(0, len(users), chunk_users)
        ]
        ranked = np.concatenate(list(map_chunks(rank_chunk, chunks, **shared)))
    relevant = relevance_matrix(split.test, users, split.train.n_users, split.train.n_items)
    metrics = ranking_metrics(ranked, relevant, ks)
    n_candidates = split.train.n_items if split.candidates is None else int(split.candidates.sum())
    metrics.update(
        list_metrics(
            ranked, ks,
            item_users=split.train.item_counts(),
            n_users=int(split.train.frame["user_index"].n_unique()),
            n_candidates=n_candidates,
            embeddings=item_embeddings,
        )
    )  # fmt: skip
    metrics["users"] = float(len(users))
    metrics["test_users"] = float(test_users)
    return metrics


def relevance_matrix(
    test: pl.DataFrame, users: np.ndarray, n_users: int, n_items: int
) -> sp.csr_matrix:
    """(len(users), n_items) held-out items of `users` (row r is users[r]), from test pairs.

    Args:
        test: Held-out pairs with `user_index` and `item_index`.
        users: User indexes, one row each.
        n_users: Size of the user index space.
        n_items: Columns.
    """
    row_of = np.full(n_users, -1, dtype=np.int64)
    row_of[users] = np.arange(len(users))
    test_rows = row_of[test["user_index"].to_numpy()]
    sampled = test_rows >= 0
    return sp.csr_matrix(
        (
            np.ones(int(sampled.sum()), dtype=np.float32),
            (test_rows[sampled], test["item_index"].to_numpy()[sampled]),
        ),
        shape=(len(users), n_items),
    )


class ScoreMatrixEvaluator:
    """Ranking metrics of score matrices for one fixed set of users.

    What stays fixed (each user's seen items, never ranked, and their held-out items) is
    prepared once, so many candidate score matrices (a blend's weight trials) are judged
    cheaply, with the same top-K and metrics as `evaluate`.

    Args:
        histories: The users' training histories.
        relevant: (B, I) their held-out items.
        ks: Cut-offs (clipped to the number of items).
    """

    def __init__(self, histories: UserHistories, relevant: sp.csr_matrix, ks: Sequence[int]):
        n_items = relevant.shape[1]
        self.seen = torch.zeros(len(histories), n_items, dtype=torch.bool)
        if len(histories.items):
            self.seen[history_rows(histories), torch.from_numpy(histories.items)] = True
        self.relevant = relevant
        self.ks = tuple(min(k, n_items) for k in ks)

    def __call__(self, scores: torch.Tensor, *, in_place: bool = False) -> dict[str, float]:
        """Metrics keyed like `ndcg@10` of the (B, I) `scores`; with `in_place`, the seen
        items of `scores` itself are set to -inf (no copy)."""
        if in_place:
            masked = scores.masked_fill_(self.seen, -torch.inf)
        else:
            masked = scores.masked_fill(self.seen, -torch.inf)
        _, top = topk_deterministic(masked, max(self.ks))
        return ranking_metrics(top.numpy(), self.relevant, self.ks)
