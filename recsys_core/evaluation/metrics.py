"""Top-K accuracy metrics from a ranked list and a set of relevant items per user.

Conventions (binary relevance):
- recall@K = hits / |relevant|; precision@K = hits / K; hr@K = 1 if any hit.
- ndcg@K: DCG with 1/log2(rank + 1) gains over the ideal DCG of min(|relevant|, K) hits.
- map@K: sum of precision at each hit rank / min(|relevant|, K).
- mrr@K: 1 / rank of the first hit, 0 if none.
Users without relevant items are not evaluated (the splits never produce them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

METRICS = ("ndcg", "recall", "precision", "map", "hr", "mrr")


def hit_matrix(ranked: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """(U, K) bool: whether the item at each rank is relevant. -1 slots are misses."""
    rows = np.repeat(np.arange(ranked.shape[0]), ranked.shape[1])
    cols = ranked.ravel()
    valid = cols >= 0
    hits = np.zeros(ranked.size, dtype=bool)
    hits[valid] = np.asarray(relevant[rows[valid], cols[valid]]).ravel() > 0
    return hits.reshape(ranked.shape)


def per_user_metrics(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Each metric at `k` for every user. hits: (U, >=K) bool; n_relevant: (U,) > 0."""
    h = hits[:, :k].astype(np.float64)  # (U, K)
    n_rel = n_relevant.astype(np.float64)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    discounts = 1.0 / np.log2(ranks + 1.0)
    ideal_hits = np.minimum(n_rel, k)
    ideal = np.cumsum(discounts)[ideal_hits.astype(int) - 1]
    n_hits = h.sum(1)
    precision_at = np.cumsum(h, axis=1) / ranks
    first = np.where(h.any(1), h.argmax(1) + 1, 0)
    return {
        "ndcg": (h * discounts).sum(1) / ideal,
        "recall": n_hits / n_rel,
        "precision": n_hits / k,
        "map": (precision_at * h).sum(1) / ideal_hits,
        "hr": (n_hits > 0).astype(np.float64),
        "mrr": np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0),
    }


def ranking_metrics(
    ranked: np.ndarray, relevant: sp.csr_matrix, ks: Sequence[int] = (10, 20)
) -> dict[str, float]:
    """Mean of every metric at every K, keyed like `ndcg@10`.

    Args:
        ranked: (U, K_max) item indexes per evaluated user, best first, -1 for empty slots.
        relevant: (U, n_items) relevance matrix, row-aligned with `ranked`.
        ks: Cut-offs, each <= K_max.
    """
    n_relevant = np.diff(relevant.indptr)
    if ranked.shape[0] == 0 or (n_relevant == 0).any():
        raise ValueError("every evaluated user needs at least one relevant item")
    if max(ks) > ranked.shape[1]:
        raise ValueError(f"ranked lists hold {ranked.shape[1]} items, fewer than k={max(ks)}")
    hits = hit_matrix(ranked, relevant)
    out: dict[str, float] = {}
    for k in ks:
        for name, values in per_user_metrics(hits, n_relevant, k).items():
            out[f"{name}@{k}"] = float(values.mean())
    return out
