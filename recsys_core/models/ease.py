"""EASE: closed-form shallow autoencoder (Steck, WWW 2019), with optional side signals.

B = I - P diagMat(1 / diag(P)), P = (G + reg I)^-1, diag(B) = 0, where G is the item-item
Gram matrix X^T X. Scores are x_u B, so any user with a history can be scored, and B[h, i]
says how much history item h supports item i.

Options beyond the paper, all off by default:
- `history_half_life`: weight the user's recent items more when scoring (x_u becomes a
  recency-decayed vector); strong when the future follows the latest items.
- `text_weight`: add the item text similarity E E^T to G, as collective EASE does with side
  information (Jeunen et al., 2020). Items with text but no events then get weights too, and
  with `cold_map_reg` set their columns of B are instead predicted from their text by a ridge
  map fitted on the columns of the items that have events (B[:, warm] ~ M E_warm^T), so a new
  item scores like the items whose weights its text resembles.
- `window` / `window_weight`: add co-occurrence of items a user met within `window`
  positions of each other, so items of the same sitting count more than items years apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from recsys_core.data.interactions import Interactions
from recsys_core.errors import InputError
from recsys_core.models.base import (
    Capabilities,
    EpochMetrics,
    FitOptions,
    TestProfile,
    TrainingData,
)
from recsys_core.models.item_item import ItemItemRecommender
from recsys_core.models.registry import register

# peak bytes of a fit per items^2: the float32 Gram matrix from sparse, its float64 copy, the
# inverse and its workspace, the weights (measured: 33 at 6,000 items)
FIT_BYTES_PER_ITEM_PAIR = 34


@dataclass(frozen=True)
class EASEConfig:
    reg: float = 500.0  # L2 penalty; larger favours popular items less
    max_items: int = 40_000  # refused above this many items, whatever the memory
    # scoring: a history item loses half its weight every `history_half_life` later items
    history_half_life: float | None = None
    text_weight: float = 0.0  # weight of the text similarity added to the Gram matrix
    # with text: items without events get B columns mapped from their text by a ridge whose
    # penalty is this times the mean eigenvalue of E^T E over items with events (None = off)
    cold_map_reg: float | None = 1.0
    window: int = 0  # co-occurrence window in each user's chronological history (0 = off)
    window_weight: float = 0.0  # weight of that windowed co-occurrence in the Gram matrix


@register
class EASE(ItemItemRecommender):
    name = "ease"
    config_class = EASEConfig
    description = "Item-item linear autoencoder, closed form; strong on dense catalogs."
    capabilities = Capabilities(uses_text=True, explains=True)
    test_profile = TestProfile(text={"text_weight": 1.0, "reg": 1.0})

    @property
    def uses_text(self) -> bool:
        return self.config.text_weight > 0  # then it needs (and ranks by) item text

    def size_problem(self, n_items: int, memory_bytes: int) -> str | None:
        need = FIT_BYTES_PER_ITEM_PAIR * n_items * n_items
        if n_items > self.config.max_items:
            return (
                f"ease: {n_items} items exceed max_items={self.config.max_items} "
                f"(needs {_size(need)})"
            )
        if need > memory_bytes:
            return (
                f"ease: {n_items} items need {_size(need)} for the dense item x item "
                f"matrices, over the memory budget of {_size(memory_bytes)}"
            )
        return None

    def stand_in(self) -> str:
        """Sparse item-item neighbours, weighted towards recent items as this EASE is."""
        half_life = self.config.history_half_life
        return "itemknn" if half_life is None else f"itemknn(history_half_life={half_life})"

    def fit(self, data: TrainingData, options: FitOptions) -> EpochMetrics:
        n = data.n_items
        if n > self.config.max_items:
            raise InputError(
                f"{self.size_problem(n, 1 << 62)}; choose another model or raise max_items"
            )
        x = data.interactions.matrix()
        gram = torch.from_numpy((x.T @ x).toarray()).double()  # (I, I)
        text = None
        if self.config.text_weight > 0:
            if data.item_embeddings is None:
                raise InputError(
                    "ease: text_weight > 0 needs item embeddings (run `recsys encode`)"
                )
            text = data.item_embeddings.double()  # (I, D)
            gram += self.config.text_weight * (text @ text.T)
        if self.config.window > 0 and self.config.window_weight > 0:
            gram += self.config.window_weight * window_cooccurrence(
                data.interactions, self.config.window
            )
        gram.diagonal().add_(self.config.reg)
        precision = torch.linalg.inv(gram)
        weights = -precision / precision.diagonal().unsqueeze(0)
        weights.diagonal().zero_()
        if text is not None and self.config.cold_map_reg is not None:
            warm = x.getnnz(axis=0) > 0  # items with events: non-empty columns of X
            weights = map_cold_columns(weights, text, warm, self.config.cold_map_reg)
        self.keep(weights.float())  # (I, I)
        return []


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def map_cold_columns(
    weights: torch.Tensor, text: torch.Tensor, warm: np.ndarray, reg: float
) -> torch.Tensor:
    """Replace, in place, the columns of items without events by a ridge map of their text.

    M = B[:, warm] E_w (E_w^T E_w + lambda I)^-1, then B[:, cold] = M E_cold^T; lambda is `reg`
    times the mean eigenvalue of E_w^T E_w. Nothing changes when every item (or none) has events.

    Args:
        weights: (I, I) EASE weights, float64; returned, with its cold columns replaced.
        text: (I, D) item text vectors, float64.
        warm: (I,) bool, items with events in the training data.
        reg: Relative ridge penalty.
    """
    if warm.all() or not warm.any():
        return weights
    cold = torch.from_numpy(~warm).nonzero().squeeze(1)
    text_w = text.clone()
    text_w[cold] = 0.0  # B[:, warm] E_w without copying the warm columns out of B
    gram = text_w.T @ text_w  # (D, D)
    gram.diagonal().add_((reg * gram.diagonal().mean()).clamp_min(1e-12))  # trace / D
    mapping = torch.linalg.solve(gram, (weights @ text_w).T).T  # (I, D)
    weights[:, cold] = mapping @ text[cold].T
    weights[cold, cold] = 0.0  # keep diag(B) = 0
    return weights


def window_cooccurrence(data: Interactions, window: int) -> torch.Tensor:
    """How often two items are within `window` positions in some user's history.

    Returns a symmetric (I, I) float64 tensor with a zero diagonal.
    """
    histories = data.histories()
    user_stop = np.repeat(histories.indptr[1:], histories.lengths())  # (nnz,)
    position = np.arange(len(histories.items))
    left, right = [], []
    for offset in range(1, window + 1):
        first = position[position + offset < user_stop]  # pairs within one user's history
        left.append(histories.items[first])
        right.append(histories.items[first + offset])
    rows, cols = np.concatenate(left), np.concatenate(right)
    counts = sp.coo_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(data.n_items, data.n_items)
    ).toarray()
    counts = counts + counts.T
    np.fill_diagonal(counts, 0.0)
    return torch.from_numpy(counts)
