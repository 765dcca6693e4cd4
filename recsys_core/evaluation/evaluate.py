"""Evaluate a fitted model on a split with full ranking."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from recsys_core.data.splits import Split
from recsys_core.evaluation.metrics import list_metrics, ranking_metrics
from recsys_core.models.base import Recommender
from recsys_core.ranking import top_k


def evaluate(
    model: Recommender,
    split: Split,
    ks: Sequence[int] = (10, 20),
    *,
    item_embeddings: torch.Tensor | None = None,
    memory_mb: int = 512,
) -> dict[str, float]:
    """Rank all items for every test user (training items excluded) and score the lists.

    Args:
        model: Fitted on `split.train`.
        split: The split whose test pairs are the relevant items.
        ks: Cut-offs.
        item_embeddings: (n_items, D) text vectors for intra-list diversity; None leaves
            diversity out.
        memory_mb: Score-matrix budget per chunk.

    Returns:
        Accuracy and beyond-accuracy metrics keyed like `ndcg@10`, plus `users`.
    """
    users = split.test_users
    histories = split.train.histories(users)
    blocked = None if split.candidates is None else ~split.candidates
    ranked = top_k(model, histories, max(ks), exclude_items=blocked, memory_mb=memory_mb).items
    row_of = np.full(split.train.n_users, -1, dtype=np.int64)
    row_of[users] = np.arange(len(users))
    relevant = sp.csr_matrix(
        (
            np.ones(split.test.height, dtype=np.float32),
            (row_of[split.test["user_index"].to_numpy()], split.test["item_index"].to_numpy()),
        ),
        shape=(len(users), split.train.n_items),
    )
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
    return metrics
