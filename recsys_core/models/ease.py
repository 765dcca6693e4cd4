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
  item scores like the items whose weights its text resembles; `cold_neighbor_share` mixes in
  the mean of the columns of their `cold_neighbors` nearest items by text cosine.
- `window` / `window_weight`: add co-occurrence of items a user met within `window`
  positions of each other, so items of the same sitting count more than items years apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

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
from recsys_core.models.sparse_items import dense_tensor
from recsys_core.models.training import shared_intermediate

# bytes per items^2 a night needs for a dense EASE: one fit's peak (scipy's sparse X^T X, at
# most 8 when every pair of items co-occurs, and the float32 Gram matrix, factored and
# inverted in place, 4; measured 9-11 at 6,000 items), plus the float32 weights the night keeps
# of it and of a second EASE member on two data parts (16). A 5M-event night with the default
# blend peaked at 5.6 GB with 12,500 items (36 per items^2, everything included), and at
# 5.35 GB with the part's float32 counts kept for its other fits (`shared_intermediate`, 4).
FIT_BYTES_PER_ITEM_PAIR = 30


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
    # ... mixed with the mean of the columns of their `cold_neighbors` nearest items with
    # events by text cosine (weighted by softmax(cosine / cold_temperature)), which takes
    # this share of the mix (0 = the ridge map alone, 1 = the neighbours alone; see
    # `map_cold_columns` for why 0 is the default)
    cold_neighbor_share: float = 0.0
    cold_neighbors: int = 20
    cold_temperature: float = 0.1
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
        """Sparse EASE with this penalty, weighted towards recent items as this EASE is (text
        and window signals need the dense Gram matrix and are left out)."""
        params = [f"reg={self.config.reg}"] if self.config.reg != EASEConfig.reg else []
        if self.config.history_half_life is not None:
            params.append(f"history_half_life={self.config.history_half_life}")
        return f"sparse_ease({', '.join(params)})" if params else "sparse_ease"

    def fit(self, data: TrainingData, options: FitOptions) -> EpochMetrics:
        n = data.n_items
        if n > self.config.max_items:
            raise InputError(
                f"{self.size_problem(n, 1 << 62)}; choose another model or raise max_items"
            )
        text = None
        if self.config.text_weight > 0:
            if data.item_embeddings is None:
                raise InputError(
                    "ease: text_weight > 0 needs item embeddings (run `recsys encode`)"
                )
            text = data.item_embeddings.float()  # (I, D)
        x = data.interactions.matrix()
        weights = ease_weights(lambda dtype: self._gram(data, x, text, dtype))
        if text is not None and self.config.cold_map_reg is not None:
            warm = x.getnnz(axis=0) > 0  # items with events: non-empty columns of X
            weights = map_cold_columns(
                weights,
                text,
                warm,
                self.config.cold_map_reg,
                self.config.cold_neighbors,
                self.config.cold_temperature,
                self.config.cold_neighbor_share,
            )
        self.keep(weights)  # (I, I) float32
        return []

    def _gram(
        self, data: TrainingData, x: sp.csr_matrix, text: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor:
        """G + text_weight E E^T + window_weight W + reg I, (I, I) in `dtype`."""
        # the part's counts (exact in float32 below 2^24), shared with the night's other
        # EASE and itemknn fits on the same part; this fit changes a copy
        counts = shared_intermediate(data, CO_OCCURRENCE, lambda: co_occurrence(x))
        gram = counts.to(dtype, copy=True)
        if text is not None:
            gram.addmm_(text.to(dtype), text.to(dtype).T, alpha=self.config.text_weight)
        if self.config.window > 0 and self.config.window_weight > 0:
            add_window_cooccurrence(
                gram, data.interactions, self.config.window, self.config.window_weight
            )
        gram.diagonal().add_(self.config.reg)
        return gram


# the key of a part's dense X^T X among a night's shared intermediate results
CO_OCCURRENCE = "co_occurrence"


def co_occurrence(x: sp.csr_matrix) -> torch.Tensor:
    """X^T X as a dense (I, I) float32 tensor, for a (U, I) sparse X.

    scipy's sparse product: torch's (CSR x CSR) was 2x faster at 12,500 items but kept about
    0.4 GB of the process's memory at every call (torch 2.13 on CPU), six times a night.
    """
    return dense_tensor((x.T @ x).T)  # scipy's product is CSC; its transpose (equal) is CSR


def ease_weights(gram: Callable[[torch.dtype], torch.Tensor]) -> torch.Tensor:
    """EASE's B = I - P diagMat(1 / diag(P)) with diag(B) = 0, P the inverse of the penalized
    Gram matrix, as (I, I) float32.

    That matrix is symmetric positive definite, so P comes from its Cholesky factor, in place
    (LAPACK potrf and potri): a third of the memory of the float64 general inverse and, in
    float32, a fraction of its time (12,500 items on 2 busy cores: 22 s on one BLAS thread,
    10 s on two, against 60 s or more for the float64 LU inverse; on counts the weights agree
    to about 1e-3 of the largest and the top-20 lists did not change). torch's
    `cholesky_inverse` is as fast on an idle machine but 10x slower when another process
    shares the cores. A factor that fails in float32, or whose pivots show a condition number
    over `MAX_SINGLE_CONDITION` (a penalty too small for the counts), is redone in float64.

    Args:
        gram: Builds the penalized Gram matrix in a dtype (a new C-contiguous tensor).
    """
    precision = spd_inverse(gram(torch.float32))
    if precision is None:  # not positive definite in float32 precision
        precision = spd_inverse(gram(torch.float64))
        if precision is None:
            raise InputError("ease: the penalized Gram matrix is not positive definite; raise reg")
        precision = precision.float()
    precision.div_(-precision.diagonal().clone().unsqueeze(0))
    precision.diagonal().zero_()
    return precision


# above this condition number a float32 inverse keeps fewer than about 2 significant digits
# of its smaller entries, and EASE is solved in float64 instead
MAX_SINGLE_CONDITION = 1e5


def cholesky_solve(factor: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """(L L^T)^-1 rhs for lower (b, k, k) factors and (b, k, m) right-hand sides (two
    triangular solves: several times faster than `torch.cholesky_solve` on batches here)."""
    half = torch.linalg.solve_triangular(factor, rhs, upper=False)
    return torch.linalg.solve_triangular(factor.mT, half, upper=True)


def spd_inverse(matrix: torch.Tensor) -> torch.Tensor | None:
    """The inverse of a symmetric positive definite matrix, computed in its own memory.

    Args:
        matrix: (n, n) C-contiguous float32 or float64; overwritten.

    Returns:
        `matrix`, now holding the inverse; None when the factorization fails (not positive
        definite at this precision) or, in float32, when the factor shows a condition number
        over `MAX_SINGLE_CONDITION` (its pivots' squared ratio, a lower bound); `matrix` is
        then garbage.
    """
    data = matrix.numpy().T  # the same memory in Fortran order (the matrix is symmetric)
    single = data.dtype == np.float32
    potrf, potri = (lapack.spotrf, lapack.spotri) if single else (lapack.dpotrf, lapack.dpotri)
    # as many BLAS threads as torch's: the process keeps OpenBLAS to one thread for
    # implicit's ALS (OPENBLAS_NUM_THREADS), which made these solves 2x slower on 2 cores
    # (12,500 items: 19 s against 10 s)
    with threadpool_limits(torch.get_num_threads(), "blas"):
        factor, info = potrf(data, lower=True, overwrite_a=True, clean=False)
        if info != 0:
            return None
        pivots = np.abs(np.diagonal(factor))
        if single and (pivots.max() / pivots.min()) ** 2 > MAX_SINGLE_CONDITION:
            return None  # float32 would lose the inverse's small entries
        inverse, info = potri(factor, lower=True, overwrite_c=True)
    if info != 0:
        return None
    if not np.shares_memory(inverse, data):  # LAPACK worked on a copy
        data[...] = inverse
    return _symmetric(matrix)


def _symmetric(matrix: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """Copy, in place, the upper triangle of `matrix` (C order) onto its lower one."""
    n = matrix.shape[0]
    for start in range(0, n, block):
        stop = min(n, start + block)
        diagonal = matrix[start:stop, start:stop]
        diagonal.copy_(torch.triu(diagonal) + torch.triu(diagonal, 1).T)
        matrix[stop:, start:stop] = matrix[start:stop, stop:].T
    return matrix


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def map_cold_columns(
    weights: torch.Tensor,
    text: torch.Tensor,
    warm: np.ndarray,
    reg: float,
    neighbors: int = 0,
    temperature: float = 0.1,
    share: float = 0.0,
) -> torch.Tensor:
    """Replace, in place, the columns of items without events by columns made from the
    items with events whose text they resemble: `1 - share` of a ridge map of their text
    plus `share` of the mean of their nearest items' columns.

    - The ridge map: M = B[:, warm] E_w (E_w^T E_w + lambda I)^-1, then B[:, cold] =
      M E_cold^T; lambda is `reg` times the mean eigenvalue of E_w^T E_w. A global linear
      map, it follows broad text directions (a genre, a product type).
    - The neighbours: B[:, c] = sum_n softmax_n(cos(e_c, e_n) / temperature) B[:, n] over
      c's `neighbors` nearest items with events by text cosine, so x_u B[:, c] is that
      weighted mean of the user's scores of those items: a new item is supported by what
      supports the known items nearest to it.

    Ranked among themselves (10% of the items held out as new, seeds 0-2), new items are
    ranked better with half of each: `ease` with text and window reached NDCG@10 0.1477
    with the ridge map, 0.1651 with 20 neighbours and 0.1621 with half of each on Amazon
    Office; 0.3782, 0.3937 and 0.4043 on MovieLens-100K (recall@20 0.5046, 0.4776, 0.5051).
    Ranked among the known items (MovieLens-100K's `global_temporal` split, where 3% of the
    test events are on new items) the default blend with half of each lost 2-4% NDCG@10
    and 8% recall@20 (seeds 1-3): the neighbours' columns gave new items 1.6% of the
    top-10 slots instead of 3.8% and 2 hits instead of 9. So the ridge map alone is the
    default. Nothing changes when every item (or none) has events.

    Args:
        weights: (I, I) EASE weights; returned, with its cold columns replaced.
        text: (I, D) item text vectors.
        warm: (I,) bool, items with events in the training data.
        reg: Relative ridge penalty.
        neighbors: Nearest items with events per new item (0: the ridge map alone).
        temperature: Softmax temperature on the cosines (smaller: nearer items weigh more).
        share: Weight of the neighbours' columns; 0 = the ridge map alone, 1 = the
            neighbours alone.
    """
    if warm.all() or not warm.any():
        return weights
    cold = torch.from_numpy(np.flatnonzero(~warm))
    columns = torch.zeros(weights.shape[0], len(cold), dtype=weights.dtype)  # (I, C)
    if neighbors <= 0:
        share = 0.0  # no neighbours to mix in: the ridge map alone
    if share < 1:
        columns.add_(_ridge_columns(weights, text, cold, reg), alpha=1 - share)
    if share > 0:
        near = _neighbor_columns(weights, text, warm, cold, neighbors, temperature)
        columns.add_(near, alpha=share)
    weights[:, cold] = columns
    weights[cold, cold] = 0.0  # keep diag(B) = 0
    return weights


def _ridge_columns(
    weights: torch.Tensor, text: torch.Tensor, cold: torch.Tensor, reg: float
) -> torch.Tensor:
    """(I, C) M E_cold^T, M the ridge map of B's warm columns on their text."""
    text_w = text.to(weights.dtype).clone()
    text_w[cold] = 0.0  # B[:, warm] E_w without copying the warm columns out of B
    gram = text_w.T.double() @ text_w.double()  # (D, D)
    gram.diagonal().add_((reg * gram.diagonal().mean()).clamp_min(1e-12))  # trace / D
    mapping = torch.linalg.solve(gram, (weights @ text_w).double().T).T  # (I, D)
    return (mapping @ text[cold].double().T).to(weights.dtype)


def _neighbor_columns(
    weights: torch.Tensor,
    text: torch.Tensor,
    warm: np.ndarray,
    cold: torch.Tensor,
    k: int,
    temperature: float,
) -> torch.Tensor:
    """(I, C) the softmax(cosine / temperature)-weighted mean of the columns of each cold
    item's `k` nearest warm items by text."""
    warm_index = torch.from_numpy(np.flatnonzero(warm))
    unit = torch.nn.functional.normalize(text.float(), dim=1)
    near = (unit[cold] @ unit[warm_index].T).topk(min(k, len(warm_index)), dim=1)  # (C, k)
    share = torch.softmax(near.values / temperature, dim=1).to(weights.dtype)
    items = warm_index[near.indices]  # (C, k)
    out = torch.zeros(weights.shape[0], len(cold), dtype=weights.dtype)
    for j in range(items.shape[1]):  # k gathers of (I, C): no (I, C, k) temporary
        out.addcmul_(weights[:, items[:, j]], share[:, j])
    return out


def add_window_cooccurrence(
    gram: torch.Tensor, data: Interactions, window: int, weight: float
) -> torch.Tensor:
    """Add, in place, `weight` times how often two items are within `window` positions in
    some user's history (symmetric, nothing on the diagonal) to `gram`.

    Args:
        gram: (I, I) float tensor, returned.
        data: The events, read in each user's chronological order.
        window: Positions apart that still count.
        weight: Weight of one co-occurrence.
    """
    histories = data.histories()
    user_stop = np.repeat(histories.indptr[1:], histories.lengths())  # (nnz,)
    position = np.arange(len(histories.items))
    n = data.n_items
    for offset in range(1, window + 1):
        first = position[position + offset < user_stop]  # pairs within one user's history
        left = torch.from_numpy(histories.items[first].astype(np.int64))
        right = torch.from_numpy(histories.items[first + offset].astype(np.int64))
        apart = left != right
        left, right = left[apart], right[apart]
        ones = torch.full((len(left),), weight, dtype=gram.dtype)
        flat = gram.view(-1)
        flat.index_add_(0, left * n + right, ones)
        flat.index_add_(0, right * n + left, ones)
    return gram
