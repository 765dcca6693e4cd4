"""Item-item cosine KNN (Sarwar et al., 2001; Deshpande & Karypis, 2004).

sim(i, j) = |U_i & U_j| / (sqrt(|U_i| |U_j|) + shrink), keeping each item's `neighbors`
most similar items. A user's score for item j is the sum of sim(h, j) over history items h,
so the explanation is the history item with the largest similarity.

The neighbour lists are sparse (`neighbors` x items entries), built a block of items at a
time, so the model fits any catalog: at 62,500 items it holds about 50 MB where a dense
item x item matrix would need 15 GiB. It is the item-item model that stands in for EASE
when a catalog is too large for EASE's dense matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys_core.models.base import EpochMetrics, FitOptions, TrainingData
from recsys_core.models.ease import CO_OCCURRENCE
from recsys_core.models.item_item import ItemItemRecommender
from recsys_core.models.registry import register
from recsys_core.models.sparse_items import co_occurrence_topn
from recsys_core.models.training import shared_intermediate


@dataclass(frozen=True)
class ItemKNNConfig:
    neighbors: int = 100  # similar items kept per item (the rest count zero)
    shrink: float = 10.0  # damps similarities that rest on few common users
    # scoring: a history item loses half its weight every `history_half_life` later items
    history_half_life: float | None = None
    block_memory_mb: int = 256  # memory for one block of similarities while fitting


@register
class ItemKNN(ItemItemRecommender):
    name = "itemknn"
    config_class = ItemKNNConfig
    description = "Item-item cosine neighbours, sparse; simple, explainable, any catalog size."
    sparse = True
    state_name = "similarity"

    def fit(self, data: TrainingData, options: FitOptions) -> EpochMetrics:
        x = data.interactions.matrix()
        norms = torch.from_numpy(np.sqrt(np.asarray(x.sum(axis=0)).ravel()).astype(np.float32))
        shrink = self.config.shrink

        def cosine(counts: torch.Tensor, block: np.ndarray) -> torch.Tensor:
            # counts: (b, I) common users of each block item with every item
            scale = norms[torch.from_numpy(block)].unsqueeze(1) * norms.unsqueeze(0) + shrink
            return counts.div_(scale)

        neighbors, memory_mb = self.config.neighbors, self.config.block_memory_mb
        # the dense X^T X of a night's EASE fit on this part, when it is held (never made
        # here: past EASE's dense limit there is none, and the slabs bound the memory)
        counts = shared_intermediate(data, CO_OCCURRENCE)
        # (I, I): history item -> candidate
        self.keep(co_occurrence_topn(x, neighbors, cosine, memory_mb=memory_mb, counts=counts))
        return []
