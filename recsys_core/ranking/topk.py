"""Rank items for many users with any model.

Users are scored in chunks whose (users x items) score matrix fits a memory budget; each
chunk drops the user's seen items and any excluded items, then keeps the top K. Ties are
broken by the lower item index, so the same scores always give the same ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from recsys_core.data.interactions import UserHistories
from recsys_core.models.base import Recommender, padded_history


@dataclass(frozen=True)
class TopK:
    """Top-K per user; slots past the number of rankable items hold -1 and -inf.

    Attributes:
        rows: (B,) position of each user in the input histories.
        items: (B, K) item indexes, best first.
        scores: (B, K) float32 model scores.
        reasons: (B, K) history item that most supports each item, or -1.
    """

    rows: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    reasons: np.ndarray


def chunk_size(n_items: int, memory_mb: int) -> int:
    """Users per chunk so that a few (users x items) float32 matrices fit `memory_mb`."""
    per_user = max(n_items, 1) * 4 * 3  # scores, a mask and the model's own intermediate
    return max(1, (memory_mb << 20) // per_user)


def top_k(
    model: Recommender,
    histories: UserHistories,
    k: int,
    *,
    exclude_seen: bool = True,
    exclude_items: np.ndarray | None = None,
    explain: bool = False,
    memory_mb: int = 512,
    progress: bool = False,
) -> TopK:
    """Top `k` items per user.

    Args:
        model: A fitted model.
        histories: The users to rank for, with the histories the model scores from.
        k: Items per user.
        exclude_seen: Never return an item in the user's history.
        exclude_items: (n_items,) bool mask of items never to return (e.g. unavailable).
        explain: Also find the history item that supports each recommendation most.
        memory_mb: Budget for one chunk's score matrix.
        progress: Show a progress bar over users.
    """
    n_items = histories.n_items
    k_eff = min(k, n_items)
    step = chunk_size(n_items, memory_mb)
    blocked = torch.from_numpy(exclude_items) if exclude_items is not None else None
    items = np.full((len(histories), k), -1, dtype=np.int64)
    scores = np.full((len(histories), k), -np.inf, dtype=np.float32)
    reasons = np.full((len(histories), k), -1, dtype=np.int64)
    bar = tqdm(total=len(histories), unit="users", desc="rank", disable=not progress)
    with bar, torch.inference_mode():
        for start in range(0, len(histories), step):
            chunk = histories.slice(start, min(start + step, len(histories)))
            raw = model.score(chunk).float()  # (B, I)
            ranked = raw.clone()
            if exclude_seen and len(chunk.items):
                rows = torch.from_numpy(np.repeat(np.arange(len(chunk)), chunk.lengths()))
                ranked[rows, torch.from_numpy(chunk.items)] = -torch.inf
            if blocked is not None:
                ranked[:, blocked] = -torch.inf
            ranked[torch.isnan(ranked)] = -torch.inf
            top_scores, top_items = topk_deterministic(ranked, k_eff)  # (B, K)
            valid = torch.isfinite(top_scores)
            top_items = torch.where(valid, top_items, -1)
            stop = start + len(chunk)
            items[start:stop, :k_eff] = top_items.numpy()
            gathered = raw.gather(1, top_items.clamp_min(0))
            scores[start:stop, :k_eff] = torch.where(valid, gathered, -torch.inf).numpy()
            if explain:
                reasons[start:stop, :k_eff] = _reasons(model, chunk, top_items).numpy()
            bar.update(len(chunk))
    return TopK(np.arange(len(histories)), items, scores, reasons)


def topk_deterministic(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.topk` whose ties always go to the lower item index.

    The plain top-k is exact except where items tied with the k-th score were left out or
    come in arbitrary order; only rows with such a boundary tie are redone with integer keys
    (score bits, then reversed index), so the common case costs one extra comparison pass.

    Args:
        scores: (B, I) float32 scores; -inf marks items that must not be returned.
        k: Items to keep per row (<= I).
    """
    values, indexes = torch.topk(scores, k, dim=1)  # (B, K)
    kth = values[:, -1:]
    tied_total = (scores == kth).sum(1)
    tied_kept = (values == kth).sum(1)
    redo = ((tied_total > tied_kept) & torch.isfinite(kth.squeeze(1))).nonzero().squeeze(1)
    if len(redo):
        sub = scores[redo] + 0.0  # -0.0 becomes 0.0, so equal floats get equal keys
        bits = sub.contiguous().view(torch.int32).long()
        ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)  # monotone in the float value
        reversed_index = (scores.shape[1] - 1) - torch.arange(scores.shape[1])
        _, exact = torch.topk((ordered << 32) | reversed_index, k, dim=1)
        indexes[redo] = exact
        values[redo] = sub.gather(1, exact)
    # within the kept items: by score descending, then index ascending
    by_index = indexes.argsort(dim=1)
    indexes, values = indexes.gather(1, by_index), values.gather(1, by_index)
    by_score = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, by_score), indexes.gather(1, by_score)


def _reasons(model: Recommender, chunk: UserHistories, top_items: torch.Tensor) -> torch.Tensor:
    history = padded_history(chunk)  # (B, L)
    weights = model.pair_weights(history, top_items)  # (B, L, K)
    if weights is None:
        return torch.full_like(top_items, -1)
    weights = weights.masked_fill((history < 0).unsqueeze(-1), -torch.inf)
    best_weight, best = weights.max(dim=1)  # (B, K)
    reason = history.gather(1, best)
    # no reason when nothing in the history supports the item, or the slot is empty
    return torch.where((best_weight > 0) & (top_items >= 0), reason, -1)
