"""Text content-based model: a user is the recency-weighted mean of their items' text vectors.

Items are ranked by similarity to that profile, so an item with text but no events (a cold
item) ranks like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys_core.data.interactions import UserHistories
from recsys_core.errors import InputError
from recsys_core.models.base import EpochMetrics, FitOptions, Recommender, TrainingData, register


@dataclass(frozen=True)
class ContentConfig:
    # A history item loses half its weight for every `half_life` items the user saw after it.
    half_life: float = 10.0


@register
class Content(Recommender):
    name = "content"
    config_class = ContentConfig
    uses_text = True
    description = "Similarity of item text vectors to the user's recent items; ranks cold items."

    def fit(self, data: TrainingData, options: FitOptions) -> EpochMetrics:
        if data.item_embeddings is None:
            raise InputError("content: item embeddings are missing (run `recsys encode` first)")
        self.embeddings = data.item_embeddings.float()  # (I, D)
        self.n_items = data.n_items
        return []

    def _history_weights(self, histories: UserHistories) -> np.ndarray:
        return (0.5 ** (histories.recency_rank() / self.config.half_life)).astype(np.float32)

    def factors(self, histories: UserHistories) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.from_numpy(self._history_weights(histories))  # (nnz,)
        rows = torch.from_numpy(np.repeat(np.arange(len(histories)), histories.lengths()))
        profile = torch.zeros(len(histories), self.embeddings.shape[1])  # (B, D)
        profile.index_add_(0, rows, self.embeddings[histories.items] * weights.unsqueeze(1))
        return torch.nn.functional.normalize(profile, dim=-1), self.embeddings

    def score(self, histories: UserHistories) -> torch.Tensor:
        users, items = self.factors(histories)
        return users @ items.T  # (B, D) @ (D, I)

    def pair_weights(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        hist = self.embeddings[history.clamp_min(0)]  # (B, L, D)
        cand = self.embeddings[candidates.clamp_min(0)]  # (B, K, D)
        # later items of the (most-recent-last) history count more, as in the profile
        length = (history >= 0).sum(1, keepdim=True)  # (B, 1)
        age = (length - 1 - torch.arange(history.shape[1]).unsqueeze(0)).clamp_min(0)
        recency = 0.5 ** (age / self.config.half_life)  # (B, L)
        return hist @ cand.transpose(1, 2) * recency.unsqueeze(-1)  # (B, L, K)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"embeddings": self.embeddings}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.embeddings = state["embeddings"].float()
        self.n_items = self.embeddings.shape[0]
