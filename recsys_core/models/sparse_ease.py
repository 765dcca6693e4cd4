"""Sparse EASE: EASE's weights, each item's column solved on its own neighbourhood.

EASE (see `ease.py`) decouples by column: with diag(B) = 0, column j is the ridge regression
of item j on every other item,

    B[-j, j] = (G[-j, -j] + reg I)^-1 G[-j, j],   G = X^T X,

which the dense closed form solves for all columns at once with one (I, I) inverse. Here each
column is solved on its `neighbors` items of largest co-occurrence with j instead of all of
them (a batch of k x k Cholesky solves), so B keeps at most k entries per column and memory
grows with items x k, not items^2: `fit_bytes` bounds a fit at 62,500 items by 3.8 GiB (on
two threads) where dense EASE needs 130 GB (measured: 0.95 GB at 12,500 items, against 4.7
GB for dense EASE).

The (k, k) blocks G[N, N] come from a sparsified Gram matrix that keeps, for each item, its
`gram_neighbors` largest co-occurrences (both directions, exact counts). An entry left out
reads as zero; a block that this makes indefinite (its Cholesky fails) is recomputed exactly
from the interactions. Items that co-occur with j fewer than k times fill the neighbourhood
with the most popular items, so with `neighbors` >= items - 1 every column is solved on all
other items and the weights equal dense EASE's.

It stands in for dense EASE on catalogs whose dense matrices exceed the memory budget. Its
neighbourhoods and blocks play the part of SANSA's sparse approximate inverse (Spisak et al.,
RecSys 2023), without a sparse Cholesky library.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from recsys_core.cancel import raise_if_stopped
from recsys_core.models import sparse_items
from recsys_core.models.base import EpochMetrics, FitOptions, TrainingData
from recsys_core.models.ease import cholesky_solve
from recsys_core.models.item_item import ItemItemRecommender
from recsys_core.models.registry import register
from recsys_core.models.sparse_items import co_occurrence_slab, map_blocks, slab_rows

# bytes per item of a fit, per kept Gram entry (index, value, symmetric copy and CSR build)
# and per neighbour (index, value, weights); the slab and the solve batch come on top
GRAM_BYTES_PER_ENTRY = 40
NEIGHBOR_BYTES = 32


@dataclass(frozen=True)
class SparseEASEConfig:
    reg: float = 500.0  # L2 penalty, as dense EASE's
    neighbors: int = 256  # items each column is solved on (its weights: at most this many)
    # Gram entries kept per item for the neighbourhood blocks (at least `neighbors`)
    gram_neighbors: int = 512
    # scoring: a history item loses half its weight every `history_half_life` later items
    history_half_life: float | None = None
    block_memory_mb: int = 256  # memory for one block of co-occurrence counts while fitting
    solve_batch: int = 64  # columns solved together


@register
class SparseEASE(ItemItemRecommender):
    name = "sparse_ease"
    config_class = SparseEASEConfig
    description = "EASE solved per item on its top co-occurring items; sparse, any catalog size."
    sparse = True

    def size_problem(self, n_items: int, memory_bytes: int) -> str | None:
        need = self.fit_bytes(n_items)
        if need > memory_bytes:
            return (
                f"sparse_ease: {n_items} items need {need / 2**30:.1f} GiB for the sparse Gram "
                f"matrix and neighbourhoods, over the memory budget of "
                f"{memory_bytes / 2**30:.1f} GiB"
            )
        return None

    def fit_bytes(self, n_items: int) -> int:
        """Peak bytes of a fit on `n_items` items (without the interactions themselves)."""
        k, m = self._sizes(n_items)
        # a batch's blocks and factors (float32) and their gather indexes (int64)
        batch = min(self.config.solve_batch, n_items) * k * k * 16
        # a block of counts, its keys and top-m, then the Gram matrix on a batch's union
        slab = min(self.config.block_memory_mb << 20, 4 * n_items * n_items)
        per_item = GRAM_BYTES_PER_ENTRY * m + NEIGHBOR_BYTES * k
        return n_items * per_item + sparse_items.FIT_THREADS * (batch + 4 * slab)  # per thread

    def _sizes(self, n_items: int) -> tuple[int, int]:
        k = max(0, min(self.config.neighbors, n_items - 1))
        return k, max(k, min(self.config.gram_neighbors, n_items - 1))

    def fit(self, data: TrainingData, options: FitOptions) -> EpochMetrics:
        x = data.interactions.matrix()  # (U, I) binary
        n = data.n_items
        k, m = self._sizes(n)
        if k == 0:
            self.keep(sp.csr_matrix((n, n), dtype=np.float32))
            return []
        popularity = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()  # (I,) = diag(G)
        neighbors, targets_gram, gram = _neighbourhoods(x, popularity, k, m, self.config)
        weights = _solve_columns(
            x, gram, popularity, neighbors, targets_gram, self.config.reg,
            self.config.solve_batch, self.config.block_memory_mb,
        )  # fmt: skip
        self.keep(weights)
        return []


# `_GramBlocks`: rows longer than this many times the median row are made dense once, the
# longest first within this many bytes
LONG_ROW_FACTOR = 4
LONG_BLOCK_BYTES = 256 << 20


def _neighbourhoods(
    x: sp.csr_matrix, popularity: np.ndarray, k: int, m: int, config: SparseEASEConfig
) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """Each item's k neighbours, its Gram column on them and the sparsified Gram matrix.

    Returns:
        (I, k) int64 neighbour indexes (largest co-occurrence first), (I, k) float64 counts
        G[neighbour, item], and the symmetric (I, I) CSR Gram matrix with each item's m
        largest off-diagonal co-occurrences (zero diagonal).
    """
    n = x.shape[1]
    # ties, and the items never met together, go to the more popular item: a rare item's
    # neighbourhood is filled with the items most users have, which EASE weights most
    order = np.lexsort((np.arange(n), -popularity))  # most popular first
    rank = np.empty(n, dtype=np.float64)
    rank[order] = np.arange(n)
    filler = torch.from_numpy((0.5 * (1.0 - (rank + 1) / (n + 1))).astype(np.float32))  # < 1
    by_item = x.tocsc()
    step = slab_rows(n, config.block_memory_mb)
    neighbors = np.empty((n, k), dtype=np.int64)
    column = np.empty((n, k), dtype=np.float64)

    def top_of(start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise_if_stopped()  # a block takes seconds on a large catalog
        block = np.arange(start, min(start + step, n))
        counts = co_occurrence_slab(by_item, x, block)  # (b, I) = G[block, :]
        key = torch.where(counts > 0, counts, filler.unsqueeze(0))
        key[torch.arange(len(block)), torch.from_numpy(block)] = -1.0  # never its own neighbour
        top = torch.topk(key, m, dim=1).indices  # (b, m), largest first
        top_counts = torch.gather(counts, 1, top)  # (b, m)
        neighbors[block] = top[:, :k].numpy()  # each block its own rows
        column[block] = top_counts[:, :k].numpy()
        kept = top_counts > 0
        return np.repeat(block, kept.sum(1).numpy()), top[kept].numpy(), top_counts[kept].numpy()

    rows, cols, vals = zip(*map_blocks(top_of, range(0, n, step)), strict=True)
    half = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n, n), dtype=np.float32,
    )  # fmt: skip
    gram = half.maximum(half.T).tocsr()  # both halves hold exact counts: the union
    gram.sum_duplicates()  # one entry per position, sorted (what `_GramBlocks` reads)
    return neighbors, column, gram


class _GramBlocks:
    """Dense blocks gram[union][:, union] of a symmetric CSR Gram matrix, for many unions.

    The rows of popular items hold entries for most of the catalog (every item that has
    them among its `gram_neighbors` adds one), and every union holds them, so reading the
    union's rows (scipy's fancy indexing did: about 50 of a 150 s fit at 62,500 items) reads
    those long rows again for each batch. Here the block among the longest rows is made
    dense once; a union's other entries are read from its short rows and mirrored (the
    matrix is symmetric), so a long row is never read again.
    """

    def __init__(self, gram: sp.csr_matrix, memory_bytes: int = LONG_BLOCK_BYTES):
        self.gram = gram  # canonical: one entry per position
        lengths = np.diff(gram.indptr)
        most = int(np.sqrt(memory_bytes / 4))
        longest = np.argsort(-lengths, kind="stable")[:most]
        self.long = np.sort(longest[lengths[longest] > LONG_ROW_FACTOR * np.median(lengths)])
        self.long_block = gram[self.long][:, self.long].toarray()  # (P, P) float32
        self.long_position = np.full(gram.shape[0], -1, dtype=np.int64)
        self.long_position[self.long] = np.arange(len(self.long))

    def scratch(self) -> np.ndarray:
        """What `dense` needs of its own: an item's position in the union, -1 elsewhere; one
        per thread, left as found after each call."""
        return np.full(self.gram.shape[0], -1, dtype=np.int64)

    def dense(self, union: np.ndarray, where: np.ndarray) -> np.ndarray:
        """gram[union][:, union] as a dense float32 (u, u) array; `union` ascending, `where`
        from `scratch`."""
        gram, size = self.gram, len(union)
        dense = np.zeros((size, size), dtype=np.float32)
        in_long = self.long_position[union]
        is_long = in_long >= 0
        if is_long.any():
            at = np.flatnonzero(is_long)
            dense[np.ix_(at, at)] = self.long_block[np.ix_(in_long[at], in_long[at])]
        short = np.flatnonzero(~is_long)  # positions in the union of the short rows
        starts, lengths = gram.indptr[union[short]], np.diff(gram.indptr)[union[short]]
        first = np.zeros(len(short), dtype=np.int64)  # each row's start in the gathered run
        np.cumsum(lengths[:-1], out=first[1:])
        entries = np.repeat(starts - first, lengths) + np.arange(int(lengths.sum()))
        where[union] = np.arange(size)
        try:
            columns = where[gram.indices[entries]]
        finally:
            where[union] = -1
        kept = columns >= 0
        rows, columns = np.repeat(short, lengths)[kept], columns[kept]
        values = gram.data[entries[kept]]
        dense[rows, columns] = values
        dense[columns, rows] = values  # symmetric: the long rows' entries with short columns
        return dense


def _solve_columns(
    x: sp.csr_matrix,
    gram: sp.csr_matrix,
    popularity: np.ndarray,
    neighbors: np.ndarray,
    column: np.ndarray,
    reg: float,
    batch: int,
    memory_mb: int,
) -> sp.csr_matrix:
    """B[N_j, j] = (G[N_j, N_j] + reg I)^-1 G[N_j, j] for every item j, as (I, I) CSR.

    A batch of columns reads its blocks from one dense copy of the Gram matrix on the union
    of its neighbourhoods (popular items are in most of them, so the union stays small); a
    batch whose union passes `memory_mb` is halved.

    Args:
        x: (U, I) binary interactions (for exact blocks where the sparsified one fails).
        gram: Sparsified symmetric Gram matrix, zero diagonal.
        popularity: (I,) diag(G).
        neighbors: (I, k) each item's neighbourhood N_j.
        column: (I, k) G[N_j, j].
        reg: Ridge penalty.
        batch: Columns solved together (at most).
        memory_mb: Budget for the dense Gram matrix on a batch's union of neighbourhoods
            (each of the fit's `FIT_THREADS` threads has one).
    """
    n, k = neighbors.shape
    values = np.empty((n, k), dtype=np.float32)
    largest_union = max(k, int(np.sqrt((memory_mb << 20) / 4)))
    # items with the same closest neighbour share much of their neighbourhoods: batched
    # together, their union is smaller
    order = np.argsort(neighbors[:, 0], kind="stable")
    blocks_of = _GramBlocks(gram)
    by_item: list[sp.csc_matrix] = []  # made once, when a block first fails
    made = threading.Lock()

    def solve(part: np.ndarray) -> None:  # each thread its own part of the items
        where = blocks_of.scratch()
        start = 0
        while start < len(part):
            raise_if_stopped()
            size = batch
            while True:
                targets = part[start : start + size]
                union, local = np.unique(neighbors[targets], return_inverse=True)
                if len(union) <= largest_union or size == 1:
                    break
                size //= 2
            local = local.reshape(len(targets), k)  # positions of each N_j in the union
            dense = blocks_of.dense(union, where)  # (u, u) float32
            flat = local[:, :, None] * len(union) + local[:, None, :]  # (b, k, k)
            blocks = torch.from_numpy(np.take(dense, flat))  # (b, k, k) float32
            # float32: the counts are exact in it (below 2^24) and the weights come within
            # 1e-6 of a float64 solve, which takes 2-3x as long
            blocks.diagonal(dim1=1, dim2=2).copy_(
                torch.from_numpy(popularity[neighbors[targets]] + reg)
            )
            factor, info = torch.linalg.cholesky_ex(blocks)
            failed = (info != 0).nonzero().squeeze(1).tolist()
            if failed:  # entries the sparsified Gram left out made the block indefinite
                with made:
                    if not by_item:
                        by_item.append(x.tocsc())
                for t in failed:
                    hood = by_item[0][:, neighbors[targets[t]]]
                    blocks[t] = torch.from_numpy((hood.T @ hood).toarray())
                    blocks[t].diagonal().add_(reg)
                    factor[t] = torch.linalg.cholesky(blocks[t])
            rhs = torch.from_numpy(column[targets]).float().unsqueeze(2)  # (b, k, 1)
            values[targets] = cholesky_solve(factor, rhs).squeeze(2).numpy()
            start += len(targets)

    # each column's solve is its own (batched LAPACK calls, one per block): the same weights
    # however the items are shared out
    map_blocks(solve, np.array_split(order, max(1, sparse_items.FIT_THREADS)))
    weights = sp.csr_matrix(
        (values.ravel(), (neighbors.ravel(), np.repeat(np.arange(n), k))),
        shape=(n, n), dtype=np.float32,
    )  # fmt: skip
    weights.eliminate_zeros()
    weights.sort_indices()
    return weights  # (I, I): history item -> candidate
