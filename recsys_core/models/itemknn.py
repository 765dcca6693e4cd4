"""Item-item cosine KNN (Sarwar et al., 2001; Deshpande & Karypis, 2004).

sim(i, j) = |U_i & U_j| / (sqrt(|U_i| |U_j|) + shrink), keeping each item's `neighbors`
most similar items. A user's score for item j is the sum of sim(h, j) over history items h,
so the explanation is the history item with the largest similarity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys_core.data.interactions import UserHistories
from recsys_core.models.base import (
    EpochMetrics,
    FitOptions,
    Recommender,
    TrainingData,
    item_item_pair_weights,
    item_item_scores,
    register,
)


@dataclass(frozen=True)
class ItemKNNConfig:
    neighbors: int = 100  # similar items kept per item (the rest count zero)
    shrink: float = 10.0  # damps similarities that rest on few common users
    # scoring: a history item loses half its weight every `history_half_life` later items
    history_half_life: float | None = None


@register
class ItemKNN(Recommender):
    name = "itemknn"
    config_class = ItemKNNConfig
    description = "Item-item cosine neighbours; simple, explainable, fast to refit."

    def fit(self, data: TrainingData, options: FitOptions) -> EpochMetrics:
        x = data.interactions.matrix()
        co = torch.from_numpy((x.T @ x).toarray()).float()  # (I, I) common users
        norms = co.diagonal().clone().sqrt()  # (I,)
        sim = co / (norms.unsqueeze(1) * norms.unsqueeze(0) + self.config.shrink)
        sim.fill_diagonal_(0.0)
        k = min(self.config.neighbors, sim.shape[1])
        # neighbours of j are the rows i with the largest sim(i, j): keep them per column
        values, rows = torch.topk(sim, k, dim=0)  # (k, I)
        sparse = torch.zeros_like(sim).scatter_(0, rows, values)
        self.similarity = sparse  # (I, I): history item -> candidate
        self.n_items = data.n_items
        return []

    def score(self, histories: UserHistories) -> torch.Tensor:
        return item_item_scores(histories, self.config.history_half_life, self.similarity)

    def pair_weights(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return item_item_pair_weights(self.similarity, history, candidates)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"similarity": self.similarity}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.similarity = state["similarity"].float()
        self.n_items = self.similarity.shape[0]
