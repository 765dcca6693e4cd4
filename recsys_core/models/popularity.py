"""Most popular items, optionally with recent events counting more."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from recsys_core.data.interactions import UserHistories
from recsys_core.models.base import (
    Capabilities,
    EpochMetrics,
    FitOptions,
    Recommender,
    TrainingData,
)
from recsys_core.models.registry import register


@dataclass(frozen=True)
class PopularityConfig:
    # An event loses half its weight every `half_life_days` before the newest event;
    # None counts every user once, however old.
    half_life_days: float | None = None


@register
class Popularity(Recommender):
    name = "popularity"
    config_class = PopularityConfig
    description = "Distinct users per item (optionally time-decayed); the baseline to beat."
    capabilities = Capabilities(personalized=False)

    def fit(self, data: TrainingData, options: FitOptions) -> EpochMetrics:
        frame = data.interactions.frame
        self.n_items = data.n_items
        if self.config.half_life_days is None or frame.is_empty():
            counts = data.interactions.item_counts()
        else:
            newest = frame["timestamp"].max()
            age_days = (newest - pl.col("timestamp")) / 86_400.0
            weighted = (
                frame.unique(["user_index", "item_index"], keep="last")
                .group_by("item_index")
                .agg((0.5 ** (age_days / self.config.half_life_days)).sum().alias("w"))
            )
            counts = np.zeros(self.n_items)
            counts[weighted["item_index"].to_numpy()] = weighted["w"].to_numpy()
        self.popularity = torch.from_numpy(counts.astype(np.float32))
        return []

    def score(self, histories: UserHistories) -> torch.Tensor:
        return self.popularity.unsqueeze(0).expand(len(histories), -1).clone()  # (B, I)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"popularity": self.popularity}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.popularity = state["popularity"].float()
        self.n_items = len(self.popularity)
