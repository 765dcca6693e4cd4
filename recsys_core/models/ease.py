"""EASE: closed-form shallow autoencoder (Steck, WWW 2019).

B = I - P diagMat(1 / diag(P)), P = (X^T X + reg I)^-1, diag(B) = 0. Scores are X_u B, so any
user with a history can be scored, and B[h, i] says how much history item h supports item i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys_core.data.interactions import UserHistories
from recsys_core.errors import InputError
from recsys_core.models.base import EpochMetrics, FitOptions, Recommender, TrainingData, register


@dataclass(frozen=True)
class EASEConfig:
    reg: float = 500.0  # L2 penalty; larger favours popular items less
    max_items: int = 40_000  # the dense item x item matrix needs 4 * items^2 bytes


@register
class EASE(Recommender):
    name = "ease"
    config_class = EASEConfig
    description = "Item-item linear autoencoder, closed form; strong on dense catalogs."

    def fit(self, data: TrainingData, options: FitOptions) -> EpochMetrics:
        n = data.n_items
        if n > self.config.max_items:
            raise InputError(
                f"ease: {n} items exceed max_items={self.config.max_items} "
                f"(needs {4 * n * n / 2**30:.1f} GiB); choose another model or raise max_items"
            )
        x = data.interactions.matrix()
        gram = torch.from_numpy((x.T @ x).toarray()).double()  # (I, I)
        gram.diagonal().add_(self.config.reg)
        precision = torch.linalg.inv(gram)
        weights = -precision / precision.diagonal().unsqueeze(0)
        weights.diagonal().zero_()
        self.weights = weights.float()  # (I, I)
        self.n_items = n
        return []

    def score(self, histories: UserHistories) -> torch.Tensor:
        # sparse (B, I) history rows @ dense (I, I): nnz * I work instead of B * I * I
        return torch.from_numpy(histories.csr() @ self.weights.numpy())  # (B, I)

    def pair_weights(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        rows = history.clamp_min(0).unsqueeze(-1)  # (B, L, 1)
        return self.weights[rows, candidates.clamp_min(0).unsqueeze(1)]  # (B, L, K)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.weights = state["weights"].float()
        self.n_items = self.weights.shape[0]
