"""Sparse EASE: each item's column of EASE solved on its neighbourhood, against dense EASE."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from recsys_core.data.interactions import Interactions
from recsys_core.models import FitOptions, TrainingData, create
from recsys_core.ranking import top_k


def clustered_log(n_users: int, n_items: int, clusters: int, seed: int) -> Interactions:
    """Users who mostly meet items of their own cluster, with power-law item popularity."""
    rng = np.random.default_rng(seed)
    cluster_of = np.arange(n_items) % clusters
    popularity = 1.0 / (1.0 + rng.permutation(n_items))  # Zipf-like
    rows = []
    for u in range(n_users):
        own = cluster_of == u % clusters
        p = popularity * np.where(own, 8.0, 1.0)
        size = int(rng.integers(3, 25))
        for i in rng.choice(n_items, size=size, replace=False, p=p / p.sum()):
            rows.append((f"u{u}", f"i{i:04d}", int(rng.integers(0, 10**6))))
    events = pl.DataFrame(
        rows, schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64},
        orient="row",
    ).with_columns(value=pl.lit(1.0))  # fmt: skip
    return Interactions.from_events(events)


def fitted(spec: str, data: Interactions):
    model = create(spec)
    model.fit(TrainingData(data), FitOptions())
    return model


def neighbourhood_reference(
    data: Interactions, neighbors: list[np.ndarray], reg: float
) -> np.ndarray:
    """B[N_j, j] = (G[N_j, N_j] + reg I)^-1 G[N_j, j] from the dense Gram matrix."""
    x = data.matrix()
    gram = (x.T @ x).toarray().astype(np.float64)
    out = np.zeros_like(gram)
    for j, hood in enumerate(neighbors):
        block = gram[np.ix_(hood, hood)] + reg * np.eye(len(hood))
        out[hood, j] = np.linalg.solve(block, gram[hood, j])
    return out


def test_with_every_other_item_as_neighbour_it_is_dense_ease():
    data = clustered_log(300, 80, 4, seed=0)
    dense = fitted("ease(reg=5)", data).weights.numpy()
    sparse = fitted(f"sparse_ease(reg=5, neighbors={data.n_items})", data).weights.toarray()
    np.testing.assert_allclose(sparse, dense, rtol=1e-4, atol=1e-6)
    # and the penalty is the one asked for: another gives other weights
    other = fitted(f"sparse_ease(reg=50, neighbors={data.n_items})", data).weights.toarray()
    assert np.abs(other - dense).max() > 1e-3


def test_each_column_is_the_ridge_solve_on_its_top_co_occurring_items():
    data = clustered_log(300, 80, 4, seed=1)
    model = fitted(f"sparse_ease(reg=5, neighbors=12, gram_neighbors={data.n_items})", data)
    weights = model.weights
    assert (np.diff(weights.tocsc().indptr) <= 12).all()
    assert weights.diagonal().sum() == 0
    x = data.matrix()
    gram = (x.T @ x).toarray()
    by_column = weights.tocsc()
    hoods = [by_column[:, j].indices for j in range(data.n_items)]
    for j, hood in enumerate(hoods):
        outside = np.setdiff1d(np.arange(data.n_items), [*hood, j])
        # the neighbourhood holds the items met together with j most often
        assert len(hood) == 12 and gram[hood, j].min() >= gram[outside, j].max()
    reference = neighbourhood_reference(data, hoods, 5.0)
    np.testing.assert_allclose(weights.toarray(), reference, rtol=1e-4, atol=1e-6)


def test_blocks_the_sparsified_gram_cannot_factor_are_solved_exactly(monkeypatch):
    data = clustered_log(300, 80, 4, seed=2)
    spec = f"sparse_ease(reg=5, neighbors=12, gram_neighbors={data.n_items})"
    want = fitted(spec, data).weights.toarray()
    cholesky_ex = torch.linalg.cholesky_ex

    def fails_every_other(a):
        factor, info = cholesky_ex(a)
        info[::2] = 1  # as if these blocks were indefinite
        return factor, info

    monkeypatch.setattr(torch.linalg, "cholesky_ex", fails_every_other)
    # the failed blocks are recomputed from the interactions: the same weights
    got = fitted(spec, data).weights.toarray()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_sparse_ease_ranks_like_dense_ease_on_a_planted_catalog():
    data = clustered_log(800, 400, 8, seed=3)
    histories = data.histories()

    def top10(spec: str) -> np.ndarray:
        return top_k(fitted(spec, data), histories, 10).items

    dense = top10("ease(reg=20)")
    sparse = top10("sparse_ease(reg=20, neighbors=48, gram_neighbors=96)")
    knn = top10("itemknn")

    def overlap(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean([len(set(r) & set(s)) / 10 for r, s in zip(a, b, strict=True)]))

    # with 12% of the items per column (0.74 here); cosine neighbours share 0.65
    assert overlap(sparse, dense) >= 0.7
    assert overlap(sparse, dense) > overlap(knn, dense) + 0.05


@pytest.mark.parametrize("budget, stands_in", [(2**40, False), (2**20, True)])
def test_sparse_ease_refuses_a_budget_below_its_needs(budget, stands_in):
    model = create("sparse_ease")
    problem = model.size_problem(62_500, budget)
    assert (problem is not None) == stands_in
    assert model.fit_bytes(62_500) < 4 * 2**30  # O(items x neighbours); dense EASE: 124 GiB


@pytest.mark.parametrize("long_bytes", [0, 4 * 40 * 40, 1 << 20])
def test_dense_gram_blocks_equal_the_blocks_of_the_sparse_matrix(long_bytes):
    """A batch's dense Gram block, built from the long rows' block made once and the short
    rows' entries mirrored, equals scipy's fancy indexing of the same unions, whichever rows
    count as long (none, some, all that qualify)."""
    import scipy.sparse as sp

    from recsys_core.models.sparse_ease import _GramBlocks

    rng = np.random.default_rng(0)
    n = 300
    popularity = 1.0 / (1.0 + rng.permutation(n))  # a few items in most rows
    rows = np.repeat(np.arange(n), 12)
    cols = rng.choice(n, size=len(rows), p=popularity / popularity.sum())
    half = sp.csr_matrix((rng.integers(1, 9, len(rows)).astype(np.float32), (rows, cols)), (n, n))
    gram = half.maximum(half.T).tocsr()
    gram.setdiag(0)
    gram.eliminate_zeros()
    gram.sum_duplicates()
    blocks = _GramBlocks(gram, memory_bytes=long_bytes)
    lengths = np.diff(gram.indptr)
    assert (len(blocks.long) > 0) == (long_bytes > 0) and lengths.max() > 8 * np.median(lengths)
    where = blocks.scratch()
    for size in (1, 7, 60, 250, n):
        union = np.sort(rng.choice(n, size=size, replace=False))
        expected = gram[union][:, union].toarray()
        assert np.array_equal(blocks.dense(union, where), expected)
        assert (where == -1).all()  # the scratch is left as it was found


@pytest.mark.parametrize(
    "spec", ["sparse_ease(reg=5, neighbors=12, solve_batch=4)", "itemknn(neighbors=10)"]
)
def test_a_fit_on_several_threads_gives_the_weights_of_one(monkeypatch, spec):
    """The co-occurrence slabs and batches of solves shared out over threads give exactly
    the weights of one thread taking them in order."""
    from recsys_core.models import sparse_ease, sparse_items

    data = clustered_log(300, 80, 4, seed=4)
    for module in (sparse_ease, sparse_items):  # several slabs, not one
        monkeypatch.setattr(module, "slab_rows", lambda n_items, memory_mb: 7)
    weights = {}
    for threads in (1, 3):
        monkeypatch.setattr(sparse_items, "FIT_THREADS", threads)
        weights[threads] = fitted(spec, data).weights
    assert weights[1].nnz >= 10 * data.n_items  # ten or more per column
    assert (weights[1] != weights[3]).nnz == 0


def test_blocks_mapped_on_threads_keep_their_order_and_stop_at_the_first_error():
    import threading
    import time

    from recsys_core.models.sparse_items import map_blocks

    names = set()

    def square(i: int) -> int:
        names.add(threading.current_thread().name)
        time.sleep(0.002)
        return i * i

    assert map_blocks(square, range(20), threads=3) == [i * i for i in range(20)]
    assert len(names) > 1  # on threads, not in the caller's
    started = []

    def fails_at_two(i: int) -> int:
        started.append(i)
        if i == 2:
            raise ValueError("block 2")
        time.sleep(0.01)
        return i

    with pytest.raises(ValueError, match="block 2"):
        map_blocks(fails_at_two, range(50), threads=2)
    assert len(started) < 50  # the blocks after the error never started
