"""What item-item models share: a user's score is their history row times an item x item matrix.

score(u, j) = sum over history items h of x_uh W[h, j], with x_u the user's history, its
entries halved every `history_half_life` later items when the config sets one. W[h, j] says
how much history item h supports item j, so it is also the explanation. W is dense (EASE's
closed form) or sparse (item-kNN's top-N neighbour lists, any catalog size); a subclass fits
it and sets `sparse`.
"""

from __future__ import annotations

from functools import cached_property
from typing import ClassVar

import scipy.sparse as sp
import torch

from recsys_core.data.interactions import UserHistories
from recsys_core.models.base import Capabilities, Recommender, StandardizedPass, recency_weights
from recsys_core.models.sparse_items import (
    RowSplit,
    from_state,
    sparse_dense_matmul,
    sparse_pair_weights,
    sparse_scores,
    split_rows,
    standardized_pass,
    to_state,
)


class ItemItemRecommender(Recommender):
    """Base of the item-item models. Subclasses fit `self.weights` and set `sparse`.

    Their config has `history_half_life` (None = every history item counts once); it only
    changes scoring, so models that differ in it alone share one fit (`scoring_params`).
    """

    capabilities = Capabilities(explains=True)
    scoring_params = ("history_half_life",)
    sparse: ClassVar[bool] = False  # W is a scipy CSR matrix, else a dense torch tensor
    state_name: ClassVar[str] = "weights"  # W's key in the saved state
    weights: torch.Tensor | sp.csr_matrix  # (I, I): history item -> candidate

    def keep(self, weights: torch.Tensor | sp.csr_matrix) -> None:
        if isinstance(weights, sp.spmatrix) and not weights.has_canonical_format:
            weights.sum_duplicates()  # each row's columns ascending, as explanations search them
        self.weights = weights
        self.n_items = weights.shape[0]
        for derived in ("_row_split", "_by_column", "_derived_from"):  # from W when needed
            self.__dict__.pop(derived, None)

    def share_state(self, other: Recommender) -> None:
        # W itself, and what is derived from it once, not copies (models that differ only in
        # `history_half_life` share one fit)
        assert isinstance(other, ItemItemRecommender)
        self.keep(other.weights)
        self._derived_from = other

    def explanation_key(self) -> tuple[str, int]:
        # pair weights are W's entries, whatever the history's recency weights
        return ("item_item", id(self.weights))

    def _derived(self, name: str, compute):
        other = self.__dict__.get("_derived_from")
        if other is not None and other.weights is self.weights:
            return getattr(other, name)
        return compute(self.weights)

    @cached_property
    def _row_split(self) -> RowSplit | None:
        """Sparse W's long rows kept dense for scoring."""
        return self._derived("_row_split", split_rows)

    @cached_property
    def _by_column(self) -> sp.csc_matrix:
        """Sparse W by candidate, for explanations (`sparse_pair_weights`): as much memory
        again as W (128 MB at 62,500 items with 256 weights each)."""
        return self._derived("_by_column", lambda weights: weights.tocsc())

    def _history_rows(self, histories: UserHistories) -> sp.csr_matrix:
        """(B, I) history rows, the recency weights (`history_half_life`) as values."""
        return histories.csr(recency_weights(histories, self.config.history_half_life))

    def score(self, histories: UserHistories) -> torch.Tensor:
        rows = self._history_rows(histories)
        if self.sparse:
            return sparse_scores(rows, self.weights, self._row_split)  # (B, I)
        return sparse_dense_matmul(rows, self.weights)  # sparse (B, I) @ dense (I, I)

    def score_into(self, histories: UserHistories, out: torch.Tensor) -> None:
        if not self.sparse:
            return super().score_into(histories, out)
        rows = self._history_rows(histories)
        sparse_scores(rows, self.weights, self._row_split, out)

    def sparse_score(self, histories: UserHistories) -> sp.csr_matrix | None:
        if not self.sparse or self._row_split is not None:
            return None  # dense, or long rows: `score` is faster than this product
        rows = self._history_rows(histories)
        return rows @ self.weights  # (B, I), the entries `sparse_scores` makes dense

    def standardized_pass(
        self, total: torch.Tensor, histories: UserHistories, weight: float, seen: torch.Tensor
    ) -> StandardizedPass | None:
        if not self.sparse:
            return None  # dense weights: one dense product makes the block
        rows = self._history_rows(histories)
        return standardized_pass(rows, self.weights, self._row_split, seen, weight, total)

    def pair_weights(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        if self.sparse:
            return sparse_pair_weights(self.weights, history, candidates, self._by_column)
        rows = history.clamp_min(0).unsqueeze(-1)  # (B, L, 1)
        return self.weights[rows, candidates.clamp_min(0).unsqueeze(1)]  # (B, L, K)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.sparse:
            return to_state(self.state_name, self.weights)
        return {self.state_name: self.weights}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.sparse:
            self.keep(from_state(self.state_name, state))
        else:
            self.keep(state[self.state_name].float())
