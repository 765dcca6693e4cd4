"""Implicit-feedback ALS (Hu, Koren & Volinsky, 2008) trained by the `implicit` library.

implicit's conjugate-gradient ALS fits the item vectors. Users are scored by folding in: the
exact ALS user step from their history with the item vectors fixed,
    p_u = (Y^T Y + Y^T (C_u - I) Y + reg I)^-1 Y^T C_u 1,
so a user who arrived after training is scored exactly like one who was there, and the
fitted state is the item vectors alone. The same solve gives an exact explanation: score(i)
is a sum over history items h of alpha * y_i^T A_u^-1 y_h.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import ThreadpoolController, threadpool_limits

from recsys_core.cancel import raise_if_stopped
from recsys_core.data.interactions import UserHistories
from recsys_core.models.base import (
    Capabilities,
    EpochMetrics,
    FitOptions,
    Recommender,
    TestProfile,
    TrainingData,
)
from recsys_core.models.ease import cholesky_solve
from recsys_core.models.registry import register

FOLD_IN_MEMORY_MB = 256  # float64 working memory of one block of users being folded in
MIN_BLOCK_WIDTH = 32  # fold-in blocks of histories up to this long are never cut by length


def loss_passes(iterations: int) -> set[int]:
    """The passes (from 0) whose training loss is computed: 1, 2, 4, 8, ... and the last
    (counting from 1), enough for the curve. The loss costs about a quarter of a pass (5M
    events, 128 factors, 15 passes: 10.9 s with it on every pass, 8.8 s without), and a
    blend's ALS member never shows it."""
    doubling = {(1 << k) - 1 for k in range(iterations.bit_length() + 1)}
    return {p for p in doubling if p < iterations} | {iterations - 1}


@dataclass(frozen=True)
class ALSConfig:
    factors: int = 64  # width of user and item vectors
    regularization: float = 0.1  # L2 penalty on the vectors
    alpha: float = 10.0  # confidence of an observed interaction (unobserved pairs count 1)
    iterations: int = 15


@register
class ALS(Recommender):
    name = "als"
    config_class = ALSConfig
    description = "Implicit-feedback ALS from the `implicit` library; folds in every user."
    capabilities = Capabilities(has_factors=True, explains=True)
    test_profile = TestProfile(quick={"factors": 16, "iterations": 15})

    def fit(self, data: TrainingData, options: FitOptions) -> EpochMetrics:
        from implicit.cpu.als import AlternatingLeastSquares

        cfg = self.config
        epochs: EpochMetrics = []
        measured = loss_passes(cfg.iterations)

        def record(iteration: int, seconds: float, loss: float | None) -> None:
            # passes without the loss keep an empty row: each row is its pass
            epochs.append({"loss": float(loss)} if iteration in measured else {})
            model.calculate_training_loss = iteration + 1 in measured  # read each pass
            raise_if_stopped()  # between iterations: implicit calls back once per pass

        # implicit runs its own threads; a threaded BLAS underneath only fights them
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=cfg.factors, regularization=cfg.regularization, alpha=cfg.alpha,
                iterations=cfg.iterations, calculate_training_loss=0 in measured,
                random_state=options.seed,
            )  # fmt: skip
            matrix = sp.csr_matrix(data.interactions.matrix(), dtype=np.float32)
            model.fit(matrix, show_progress=options.progress, callback=record)
        self.item_vectors = torch.from_numpy(np.asarray(model.item_factors)).float()  # (I, D)
        self.n_items = data.n_items
        return epochs

    def _items64(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(I, D) float64 item vectors and Y^T Y + reg I, computed once per set of vectors:
        the Gram matrix costs as much as folding in a block of users, and blocks are many."""
        cached = getattr(self, "_items64_cache", None)
        if cached is None or cached[0] is not self.item_vectors:
            y = self.item_vectors.double()  # (I, D)
            eye = torch.eye(y.shape[1], dtype=torch.float64)
            cached = (self.item_vectors, y, y.T @ y + self.config.regularization * eye)
            self._items64_cache = cached
        return cached[1], cached[2]

    def _solve(
        self, history: torch.Tensor, rhs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fold-in for a padded history (B, L): the user vectors (B, D), and A^-1 `rhs` for
        right-hand sides (B, D, K) when given (None otherwise)."""
        cfg = self.config
        y, base = self._items64()  # (I, D), (D, D)
        present = (history >= 0).double().unsqueeze(-1)  # (B, L, 1)
        yh = y[history.clamp_min(0)] * present  # (B, L, D)
        a = base + (cfg.alpha - 1.0) * yh.transpose(1, 2) @ yh
        b = cfg.alpha * yh.sum(1).unsqueeze(-1)  # (B, D, 1)
        rhs = b if rhs is None else torch.cat([b, rhs], dim=2)
        # one thread per (D, D) system: splitting each small system across threads cost more
        # than it saved on a busy 2-core machine (4-5x for the general inverse; 5-15% for the
        # Cholesky solves beside another job), and one thread gives the same bits everywhere
        with _threads().limit(limits=1, user_api="openmp"):
            # A is positive definite for alpha >= 0 and a positive penalty: a Cholesky factor
            # and two triangular solves, 3-4x faster than the general inverse (128 factors)
            factor, info = torch.linalg.cholesky_ex(a)  # (B, D, D) lower
            indefinite = bool(info.any())
            solved = torch.linalg.solve(a, rhs) if indefinite else cholesky_solve(factor, rhs)
        users = solved[..., 0].float()  # (B, D)
        return users, (solved[..., 1:] if rhs.shape[2] > 1 else None)

    def factors(self, histories: UserHistories) -> tuple[torch.Tensor, torch.Tensor]:
        users = torch.empty(len(histories), self.item_vectors.shape[1])  # (B, D)
        # users in order of history length, so a block pads few of them to a long history
        lengths = np.minimum(histories.lengths(), histories.n_items)
        order = np.argsort(lengths, kind="stable")
        for start, stop in self._blocks(lengths[order]):
            raise_if_stopped()
            rows = order[start:stop]
            users[torch.from_numpy(rows)] = self._solve(_padded_rows(histories, rows))[0]
        return users, self.item_vectors  # (B, D), (I, D)

    def _blocks(self, lengths: np.ndarray) -> list[tuple[int, int]]:
        """Row ranges, for `lengths` in ascending order, whose padded histories and (D, D)
        systems fit FOLD_IN_MEMORY_MB and whose longest history is at most twice the
        shortest (at least `MIN_BLOCK_WIDTH`).

        A fold-in holds (B, L, D) history vectors and (B, D, D) systems in float64, L the
        longest history in the block; unbounded, a few long histories among many users
        would need gigabytes, and in a block of a hundred heavy-tailed histories most of
        the products would be padding (62,500 items: 3x slower than blocks of 1,500 users).
        """
        d = self.item_vectors.shape[1]
        budget = FOLD_IN_MEMORY_MB << 20
        blocks, start, longest, shortest = [], 0, 0, 1
        for row, length in enumerate(lengths.tolist()):
            widest = max(longest, length, 1)
            too_big = (row - start + 1) * 8 * d * (widest + 3 * d) > budget
            if row > start and (too_big or widest > max(2 * shortest, MIN_BLOCK_WIDTH)):
                blocks.append((start, row))
                start, widest = row, max(length, 1)
            if row == start:
                shortest = max(length, 1)
            longest = widest
        if len(lengths):
            blocks.append((start, len(lengths)))
        return blocks

    def score(self, histories: UserHistories) -> torch.Tensor:
        users, items = self.factors(histories)
        return users @ items.T  # (B, I)

    def pair_weights(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        out = torch.empty(history.shape[0], history.shape[1], candidates.shape[1])
        lengths = (history >= 0).sum(1).numpy()  # left-aligned: the padding follows
        # blocks of similar lengths: each system is built from its block's longest history,
        # not the whole chunk's (padding adds exact zeros, so the systems are the same)
        order = np.argsort(lengths, kind="stable")
        y = self._items64()[0]
        for start, stop in self._blocks(lengths[order]):
            rows = torch.from_numpy(order[start:stop])
            width = max(int(lengths[order[stop - 1]]), 1)  # the block's longest history
            yh = y[history[rows].clamp_min(0)]  # (b, L, D)
            yc = y[candidates[rows].clamp_min(0)]  # (b, K, D)
            _, found = self._solve(history[rows, :width], yc.transpose(1, 2))  # A^-1 y_c
            # score(c) = sum_h alpha * y_h^T A^-1 y_c: each term is that history item's share
            out[rows] = (self.config.alpha * yh @ found).float()
        return out  # (B, L, K)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"item_vectors": self.item_vectors}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.item_vectors = state["item_vectors"].float()
        self.n_items = self.item_vectors.shape[0]


@lru_cache(maxsize=1)
def _threads() -> ThreadpoolController:
    """The process's thread pools, looked up once (a lookup scans the loaded libraries)."""
    return ThreadpoolController()


def _padded_rows(histories: UserHistories, rows: np.ndarray) -> torch.Tensor:
    """The whole histories of `rows` (at most the catalog's size of their latest items, as
    `padded_history` keeps), left-aligned in a (b, L) matrix padded with -1."""
    ends = histories.indptr[rows + 1]
    lengths = np.minimum(ends - histories.indptr[rows], histories.n_items)
    width = max(int(lengths.max(initial=0)), 1)
    out = np.full((len(rows), width), -1, dtype=np.int64)
    row = np.repeat(np.arange(len(rows)), lengths)
    column = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[row, column] = histories.items[np.repeat(ends - lengths, lengths) + column]
    return torch.from_numpy(out)
