"""Defaults that fit any catalog: sparse item-item neighbours, stand-ins, sampled evaluation."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_core.context import RunContext
from recsys_core.data.interactions import UserHistories
from recsys_core.data.splits import make_split
from recsys_core.errors import InputError
from recsys_core.evaluation import evaluate
from recsys_core.models import MODELS, FitOptions, Recommender, TrainingData, create, register
from recsys_core.models.sparse_items import (
    add_product,
    co_occurrence_slab,
    co_occurrence_topn,
    sparse_pair_weights,
    sparse_scores,
    split_rows,
)
from recsys_core.settings import Settings

TINY_BUDGET = 2**20  # 1 MiB: too small for EASE's dense matrices on any catalog below


def _binary(users: int, items: int, density: float, seed: int) -> sp.csr_matrix:
    x = sp.random(users, items, density=density, random_state=seed, format="csr")
    x.data[:] = 1.0
    return x.astype(np.float32)


def _reference_topn(x: sp.csr_matrix, n: int, shrink: float) -> np.ndarray:
    """Dense cosine neighbours, one column at a time, ties to the lower index."""
    co = (x.T @ x).toarray().astype(np.float64)
    norms = np.sqrt(np.diag(co))
    sim = (co / (norms[:, None] * norms[None, :] + shrink)).astype(np.float32)
    np.fill_diagonal(sim, 0.0)
    out = np.zeros_like(sim)
    for j in range(sim.shape[1]):
        order = np.lexsort((np.arange(sim.shape[0]), -sim[:, j]))[:n]  # value desc, index asc
        keep = order[sim[order, j] > 0]
        out[keep, j] = sim[keep, j]
    return out


@pytest.mark.parametrize("memory_mb", [0, 1, 64])  # 0: one item per block
def test_sparse_neighbours_match_a_dense_reference_whatever_the_blocks(memory_mb):
    x = _binary(200, 120, 0.08, seed=1)
    norms = torch.from_numpy(np.sqrt(np.asarray(x.sum(axis=0)).ravel()).astype(np.float32))

    def cosine(counts, block):
        return counts.div_(norms[torch.from_numpy(block)].unsqueeze(1) * norms + 10.0)

    got = co_occurrence_topn(x, 7, cosine, memory_mb=memory_mb).toarray()
    want = _reference_topn(x, 7, 10.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert (np.count_nonzero(got, axis=0) <= 7).all()
    assert np.diag(got).sum() == 0


def test_itemknn_stores_neighbour_lists_not_a_dense_matrix(planted):
    data, _ = planted
    model = create("itemknn(neighbors=3)")
    model.fit(TrainingData(data), FitOptions())
    state = model.state_dict()
    assert "similarity" not in state  # no (I, I) tensor
    assert state["similarity.values"].numel() <= 3 * data.n_items
    again = create("itemknn(neighbors=3)")
    again.load_state_dict(state)
    histories = data.histories()
    torch.testing.assert_close(again.score(histories), model.score(histories))


def test_itemknn_loads_an_older_dense_bundle(planted):
    data, _ = planted
    model = create("itemknn")
    model.fit(TrainingData(data), FitOptions())
    dense = {"similarity": torch.from_numpy(model.weights.toarray())}
    old = create("itemknn")
    old.load_state_dict(dense)
    torch.testing.assert_close(old.score(data.histories()), model.score(data.histories()))


@pytest.mark.parametrize("share", [0.0, 0.05, 0.3, 2.0])  # every row dense .. none
def test_long_rows_scored_dense_give_the_sparse_product(share):
    rng = np.random.default_rng(3)
    weights = _binary(150, 150, 0.04, seed=4).tocsr()
    weights[:6] = rng.random((6, 150)).astype(np.float32)  # popular items: long rows
    weights.data[:] = rng.standard_normal(weights.nnz).astype(np.float32)
    rows = _binary(40, 150, 0.1, seed=5)
    rows.data[:] = rng.random(rows.nnz).astype(np.float32)  # recency-weighted histories
    split = split_rows(weights, share=share)
    if share <= 1:
        lengths = np.diff(weights.indptr)
        np.testing.assert_array_equal(split.dense_rows, np.flatnonzero(lengths >= share * 150))
        assert split.light.nnz == lengths[lengths < share * 150].sum()
    else:
        assert split is None
    got = sparse_scores(rows, weights, split)
    want = torch.from_numpy((rows.astype(np.float64) @ weights.astype(np.float64)).toarray())
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)
    buffer = torch.full_like(got, float("nan"))  # a reused buffer: its contents are not read
    assert sparse_scores(rows, weights, split, out=buffer) is buffer and torch.equal(buffer, got)
    if share <= 1:  # a memory bound keeps the longest rows dense, the others sparse
        bound = split_rows(weights, share=share, memory_bytes=3 * 150 * 4)
        np.testing.assert_array_equal(bound.dense_rows, [0, 1, 2])  # full rows, lowest first
        torch.testing.assert_close(sparse_scores(rows, weights, bound), got)


@pytest.mark.parametrize("share", [0.05, 2.0])  # long rows dense, or none
@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_sparse_members_add_their_z_scores_user_by_user(share, offset):
    """The fused pass (scores made in a row buffer, their moments, the scaled row added)
    gives what making the (B, I) scores and `add_standardized` give: users who saw nothing,
    some items or every item, with long rows kept dense or not, far from zero means too."""
    from recsys_core.models.blend import _seen_positions, add_standardized
    from recsys_core.models.sparse_items import run_passes, standardized_pass

    rng = np.random.default_rng(11)
    n = 150
    weights = _binary(n, n, 0.04, seed=12).tocsr()
    weights[:6] = rng.random((6, n)).astype(np.float32)  # popular items: long rows
    weights.data[:] = (rng.standard_normal(weights.nnz) + offset).astype(np.float32)
    lists = [rng.choice(n, size=k, replace=False) for k in (0, 5, 40, n, 1, 17)]
    h = UserHistories(
        np.arange(len(lists)), np.concatenate([[0], np.cumsum([len(r) for r in lists])]),
        np.concatenate(lists), np.zeros(sum(len(r) for r in lists), dtype=np.int64), n,
    )  # fmt: skip
    rows = h.csr(rng.random(len(h.items)).astype(np.float32) + 0.5)  # recency-like weights
    seen = _seen_positions(h, n)
    split = split_rows(weights, share=share)
    assert (split is None) == (share > 1)
    start = torch.from_numpy(rng.standard_normal((len(lists), n)).astype(np.float32))
    want = start.clone()
    want_shift = add_standardized(want, sparse_scores(rows, weights, split), 0.7, seen)
    got = start.clone()
    found = standardized_pass(rows, weights, split, seen, 0.7, got)
    run_passes([found], *got.shape)
    got_shift = torch.from_numpy(found.shift).unsqueeze(1)
    unseen = torch.ones(len(lists) * n, dtype=torch.bool)
    unseen[seen] = False
    torch.testing.assert_close(
        (got - got_shift.float()).view(-1)[unseen],
        (want - want_shift.float()).view(-1)[unseen],
        rtol=1e-5,
        atol=1e-4,
    )
    assert got_shift.shape == (len(lists), 1) and got_shift.dtype == torch.float64
    torch.testing.assert_close(got[0], start[0])  # no history: scores all 0, nothing added


def test_the_user_by_user_passes_give_the_same_rows_on_any_number_of_threads():
    """A chunk's users are cut among the threads by their work, and each thread takes its
    users a few at a time through every member's pass: every user's row is made by one
    thread in the same order, so the sums are the same to the bit on 1, 2 or 3 threads."""
    from recsys_core.models.blend import _seen_positions
    from recsys_core.models.sparse_items import row_blocks, run_passes, standardized_pass

    rng = np.random.default_rng(21)
    n, users = 300, 150
    heavy = _binary(n, n, 0.05, seed=22).tolil()
    heavy[:5] = rng.random((5, n)).astype(np.float32)  # long rows, kept dense below
    heavy = heavy.tocsr()
    light = _binary(n, n, 0.03, seed=23)
    for w in (heavy, light):
        w.data[:] = rng.standard_normal(w.nnz).astype(np.float32)
    lengths = np.minimum(rng.pareto(1.2, users) * 5 + 1, n).astype(np.int64)
    lists = [rng.choice(n, size=k, replace=False) for k in lengths]
    h = UserHistories(
        np.arange(users), np.concatenate([[0], np.cumsum(lengths)]), np.concatenate(lists),
        np.zeros(int(lengths.sum()), dtype=np.int64), n,
    )  # fmt: skip
    rows = h.csr(rng.random(len(h.items)).astype(np.float32) + 0.5)
    seen = _seen_positions(h, n)
    split = split_rows(heavy, share=0.5)
    assert split is not None
    start = torch.from_numpy(rng.standard_normal((users, n)).astype(np.float32))
    found = {}
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            total = start.clone()
            passes = [
                standardized_pass(rows, heavy, split, seen, 0.6, total),
                standardized_pass(rows, light, None, seen, 0.4, total),
            ]
            assert len(row_blocks(sum(p.cost for p in passes), count)) == count  # cut
            run_passes(passes, users, n)
            found[count] = (total, [p.shift.copy() for p in passes], sparse_scores(rows, light))
    finally:
        torch.set_num_threads(threads)
    total, shifts, product = found[1]
    for count in (2, 3):
        assert torch.equal(found[count][0], total)
        assert all(np.array_equal(a, b) for a, b in zip(found[count][1], shifts, strict=True))
        assert torch.equal(found[count][2], product)
    np.testing.assert_array_equal(product.numpy(), (rows @ light).toarray())  # scipy's sums
    # and each member's pass alone, one after the other, adds the same
    again = start.clone()
    for w, sp_, weight in ((heavy, split, 0.6), (light, None, 0.4)):
        run_passes([standardized_pass(rows, w, sp_, seen, weight, again)], users, n)
    assert torch.equal(again, total)


def test_passes_over_one_weights_matrix_join_and_add_the_same_bits():
    """EASE with and without a history half-life read one fitted matrix: their passes join,
    each weights entry read once for both, and the sum and each member's shift are the
    bits of the passes run one after the other; passes over other weights do not join."""
    from recsys_core.models.blend import _seen_positions
    from recsys_core.models.sparse_items import run_passes, standardized_pass

    rng = np.random.default_rng(31)
    n, users = 200, 60
    weights = _binary(n, n, 0.05, seed=32).tolil()
    weights[:4] = rng.random((4, n)).astype(np.float32)  # long rows, kept dense
    weights = weights.tocsr()
    weights.data[:] = rng.standard_normal(weights.nnz).astype(np.float32)
    other = weights.copy()
    lengths = np.minimum(rng.pareto(1.2, users) * 5 + 1, n).astype(np.int64)
    h = UserHistories(
        np.arange(users), np.concatenate([[0], np.cumsum(lengths)]),
        np.concatenate([rng.choice(n, size=k, replace=False) for k in lengths]),
        np.zeros(int(lengths.sum()), dtype=np.int64), n,
    )  # fmt: skip
    recent = h.csr(rng.random(len(h.items)).astype(np.float32) + 0.5)
    plain = h.csr(np.ones(len(h.items), dtype=np.float32))
    seen = _seen_positions(h, n)
    split = split_rows(weights, share=0.5)
    assert split is not None
    start = torch.from_numpy(rng.standard_normal((users, n)).astype(np.float32))

    apart = start.clone()
    alone = [
        standardized_pass(recent, weights, split, seen, 0.6, apart),
        standardized_pass(plain, weights, split, seen, 0.3, apart),
    ]
    for found in alone:
        run_passes([found], users, n)
    joined = start.clone()
    passes = [
        standardized_pass(recent, weights, split, seen, 0.6, joined),
        standardized_pass(plain, weights, split, seen, 0.3, joined),
    ]
    both = passes[0].join(passes[1])
    assert both is not None and both.scratch_rows == 2
    run_passes(passes, users, n)
    assert torch.equal(joined, apart) and not torch.equal(joined, start)
    for found, want in zip(passes, alone, strict=True):
        np.testing.assert_array_equal(found.shift, want.shift)
    assert np.any(passes[0].shift != passes[1].shift)  # each member's own
    # another matrix (equal entries, another fit), or the same one into another sum: apart
    assert passes[0].join(standardized_pass(plain, other, split, seen, 0.3, joined)) is None
    assert passes[0].join(standardized_pass(plain, weights, split, seen, 0.3, apart)) is None


def test_the_scatter_loops_prefetch_on_this_machine():
    """The prefetch hint falls back to a no-op where LLVM will not build it; here it must
    build, or the loops quietly lose it."""
    import numba

    from recsys_core.models.sparse_items import _prefetch_hint

    hint = _prefetch_hint()

    @numba.njit
    def touch(values):
        hint(values, 3)
        return values[0]

    assert touch(np.ones(8, dtype=np.float32)) == 1.0
    assert any("llvm.prefetch" in ir for ir in touch.inspect_llvm().values())


def test_row_blocks_cut_the_rows_by_their_work():
    from recsys_core.models.sparse_items import row_blocks, work

    indptr = np.concatenate([[0], np.cumsum([1000] * 10 + [1] * 990)])  # ten heavy rows first
    blocks = row_blocks(work(indptr, 1.0, 0.0), 2)
    assert blocks[0][0] == 0 and blocks[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))  # contiguous
    assert blocks[0][1] <= 10  # the heavy rows are half the work
    assert len(row_blocks(work(indptr, 1.0, 0.0), 3)) == 3
    assert len(row_blocks(work(indptr[:41], 1.0, 0.0), 8)) == 1  # 40 rows: too few to cut


def test_loops_running_side_by_side_share_the_threads():
    """Shards ranked side by side keep the cores busy already: a loop started while
    another runs takes a share of the threads, not all of them."""
    from recsys_core.models.sparse_items import in_row_blocks, work

    cost = work(np.arange(0, 2001, 10), 1.0, 0.0)  # 200 rows
    outer, inner = [], []

    def part(start: int, stop: int) -> None:
        outer.append((start, stop))
        in_row_blocks(lambda a, b: inner.append((start, a, b)), cost)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        in_row_blocks(part, cost)
    finally:
        torch.set_num_threads(threads)
    assert sorted(outer) == [(0, 100), (100, 200)]  # alone: both threads
    assert sorted(inner) == [(0, 0, 200), (100, 0, 200)]  # beside it: one thread each


def test_a_blend_of_sparse_members_scores_the_same_through_the_fused_pass(planted, monkeypatch):
    from recsys_core.models.base import Recommender as Base
    from recsys_core.models.blend import Blend, BlendConfig, _seen_positions
    from recsys_core.models.item_item import ItemItemRecommender

    data, _ = planted
    blend = Blend(BlendConfig(members=("itemknn", "itemknn(history_half_life=2)", "popularity")))
    blend.fit(TrainingData(data), FitOptions(validation_protocol="user_random"))
    blend.weights = torch.tensor([0.5, 0.3, 0.2])
    h = data.histories()
    fused = blend.score(h)
    calls = []
    original = ItemItemRecommender.standardized_pass
    monkeypatch.setattr(
        ItemItemRecommender,
        "standardized_pass",
        lambda self, *a: calls.append(1) or original(self, *a),
    )
    assert torch.equal(blend.score(h), fused) and len(calls) == 2  # both item-item members
    monkeypatch.setattr(ItemItemRecommender, "standardized_pass", Base.standardized_pass)
    block = blend.score(h)  # each member's (B, I) scores, then `add_standardized`
    # equal up to a constant per user: a member whose unseen scores are all equal for a user
    # gives that user's unseen items z = 0 here and a rounding residue (the same for each of
    # them) through the block, which changes no ranking
    unseen = torch.ones_like(fused, dtype=torch.bool)
    unseen.view(-1)[_seen_positions(h, data.n_items)] = False

    def centred(scores: torch.Tensor) -> torch.Tensor:
        mean = (scores * unseen).sum(1, keepdim=True) / unseen.sum(1, keepdim=True)
        return (scores - mean) * unseen

    torch.testing.assert_close(centred(block), centred(fused), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "members", [("itemknn",), ("itemknn", "itemknn(history_half_life=2)", "popularity")]
)
def test_models_score_into_the_rankers_reused_buffer_as_they_score_alone(
    planted, members, monkeypatch
):
    from recsys_core.models.blend import Blend, BlendConfig
    from recsys_core.ranking import top_k, topk

    data, _ = planted
    model = Blend(BlendConfig(members=members)) if len(members) > 1 else create(members[0])
    model.fit(TrainingData(data), FitOptions(validation_protocol="user_random"))
    h = data.histories()
    out = torch.full((len(h), data.n_items), float("nan"))  # what a last chunk left there
    model.score_into(h, out)
    assert torch.equal(out, model.score(h).float())
    # chunks of a few users each reuse one buffer: each chunk's scores are its own
    one = top_k(model, h, 10, explain=True)
    assert len(h) > 12
    monkeypatch.setattr(topk, "_users_per_chunk", lambda *a, **k: 3)
    small = top_k(model, h, 10, explain=True)
    assert np.array_equal(one.items, small.items) and np.array_equal(one.reasons, small.reasons)
    np.testing.assert_array_equal(one.scores, small.scores)


def test_the_compiled_product_adds_scipys_sums_into_dense_rows():
    rng = np.random.default_rng(8)
    a = _binary(30, 50, 0.15, seed=9)
    a.data[:] = rng.standard_normal(a.nnz).astype(np.float32)
    a[[3, 17]] = 0.0  # rows without entries
    a.eliminate_zeros()
    b = _binary(50, 70, 0.2, seed=10)
    b.data[:] = rng.standard_normal(b.nnz).astype(np.float32)
    want = (a @ b).toarray()  # float32 sums, in the same order: equal to the bit
    got = add_product(a.indptr, a.indices, a.data, b, np.zeros((30, 70), dtype=np.float32))
    np.testing.assert_array_equal(got, want)
    assert not got[[3, 17]].any()
    start = rng.standard_normal((4, 70)).astype(np.float32)  # adds to what `out` holds
    picked = np.array([5, 0, 29, 5])
    got = add_product(a.indptr, a.indices, a.data, b, start.copy(), picked)
    np.testing.assert_allclose(got, start + want[picked], rtol=1e-6, atol=1e-6)
    b64 = sp.csr_matrix((b.data, b.indices.astype(np.int64), b.indptr.astype(np.int64)), b.shape)
    np.testing.assert_array_equal(  # 64-bit indexes (matrices past 2^31 entries) too
        add_product(a.indptr, a.indices, a.data, b64, np.zeros((30, 70), np.float32)), want
    )
    by_item = a.tocsc()  # a CSC matrix's columns are the rows of its transpose
    slab = co_occurrence_slab(by_item, a, np.array([2, 40, 7]))
    np.testing.assert_array_equal(slab.numpy(), (a.T @ a).toarray()[[2, 40, 7]])
    with pytest.raises(ValueError, match="float32"):
        add_product(a.indptr, a.indices, a.data, b, np.zeros((30, 70)))


def test_pair_weights_look_each_history_item_and_candidate_up_in_the_sparse_weights():
    rng = np.random.default_rng(11)
    weights = _binary(60, 60, 0.2, seed=12)
    weights.data[:] = rng.standard_normal(weights.nnz).astype(np.float32)
    dense = weights.toarray()
    shuffled = weights.copy()  # columns out of order within rows: searched once sorted
    for r in range(60):
        a, b = shuffled.indptr[r], shuffled.indptr[r + 1]
        order = rng.permutation(b - a)
        shuffled.indices[a:b], shuffled.data[a:b] = (
            shuffled.indices[a:b][order],
            shuffled.data[a:b][order],
        )
    shuffled.has_sorted_indices = False
    history = torch.from_numpy(rng.integers(-1, 60, size=(7, 9)))  # -1: padding
    candidates = torch.from_numpy(rng.integers(0, 60, size=(7, 5)))
    history[0, :3] = history[0, 5]  # an item met again
    history[1, 1:] = -1  # one history item: searched in its row, not by the columns
    candidates[2, 4] = candidates[2, 0]
    got = sparse_pair_weights(shuffled, history, candidates).numpy()
    h, c = history.numpy(), candidates.numpy()
    want = dense[np.maximum(h, 0)[:, :, None], c[:, None, :]] * (h >= 0)[:, :, None]
    np.testing.assert_array_equal(got, want)
    assert (got != 0).any() and (got[h < 0] == 0).all()
    # the candidates' columns scanned against the history: the same weights
    by_column = weights.tocsc()
    np.testing.assert_array_equal(
        sparse_pair_weights(shuffled, history, candidates, by_column).numpy(), want
    )
    assert (want[0, :3] != 0).any()  # the repeated item's slots are filled too


def test_ease_stands_down_for_sparse_ease_when_the_catalog_is_too_large():
    ease = create("ease(history_half_life=5)")
    assert ease.size_problem(100, 2**40) is None
    problem = ease.size_problem(1000, TINY_BUDGET)
    assert problem is not None and "1000 items" in problem and "memory budget" in problem
    model, notes = ease.adapted(1000, TINY_BUDGET)
    assert model.name == "sparse_ease" and model.config.history_half_life == 5
    assert notes == [f"{problem}; sparse_ease(history_half_life=5) stands in"]
    assert "max_items" in create("ease(max_items=10)").size_problem(11, 2**40)
    # the penalty travels with it; the text and window signals need the dense Gram matrix
    stand_in, _ = create("ease(reg=300, text_weight=30, window=5)").adapted(1000, TINY_BUDGET)
    assert stand_in.params() == create("sparse_ease(reg=300)").params()


def test_the_default_blend_replaces_its_dense_members_and_names_them():
    blend = create("blend")
    same, notes = blend.adapted(500, 2**40)
    assert same is blend and notes == []
    adapted, notes = blend.adapted(1000, TINY_BUDGET)
    # both EASE members give way to sparse EASE (one fit: they differ only in scoring)
    assert adapted.config.members == (
        "sparse_ease", "sparse_ease(history_half_life=5)", "itemknn", "content",
        "als(factors=128, regularization=30, alpha=3)",
    )  # fmt: skip
    assert len(notes) == 2 and all(n.startswith("blend member ease: 1000 items") for n in notes)
    assert len({m.fit_key() for m in adapted.members[:2]}) == 1
    only_dense, notes = create('blend(members=["ease", "sparse_ease"])').adapted(1000, TINY_BUDGET)
    assert only_dense.config.members == ("sparse_ease",)  # the stand-in is a member already


def test_sampled_evaluation_ranks_a_seeded_subset_of_test_users(planted):
    data, _ = planted
    split = make_split(data, "user_random", 0.3, seed=0)
    model = create("itemknn")
    model.fit(TrainingData(split.train), FitOptions())
    full = evaluate(model, split)
    assert full["users"] == full["test_users"] == len(split.test_users)
    sample = evaluate(model, split, max_users=10, seed=1)
    assert sample["users"] == 10 and sample["test_users"] == len(split.test_users)
    assert evaluate(model, split, max_users=10, seed=1) == sample  # same seed, same users
    assert evaluate(model, split, max_users=10, seed=2) != sample


class _Boom(Recommender):
    """A model that cannot train, to show that one failed candidate does not fail a run."""

    name = "boom-test"
    config_class = type("BoomConfig", (), {"__dataclass_fields__": {}})

    def fit(self, data, options):
        raise RuntimeError("planted failure")

    def score(self, histories):  # pragma: no cover - never fitted
        raise AssertionError

    def state_dict(self):  # pragma: no cover
        return {}

    def load_state_dict(self, state):  # pragma: no cover
        pass

    def params(self):
        return {}


@pytest.fixture
def boom_model():
    register(_Boom)
    yield _Boom.name
    MODELS.pop(_Boom.name)


def test_a_candidate_that_fails_is_left_out_and_named(trained_lake, boom_model):
    from recsys_core.pipeline import train

    report = train(trained_lake.with_settings(models=(boom_model, "popularity")))
    assert {c.model for c in report.candidates} == {"popularity", "ease"}  # ease: the champion
    assert len(report.left_out) == 1
    assert report.left_out[0].startswith(f"{boom_model}: did not train (RuntimeError: planted")
    with pytest.raises(RuntimeError, match="no candidate trained"):
        train(trained_lake.with_settings(models=(boom_model,), registered_model="x"))


def test_a_requested_model_too_large_is_refused_before_any_fit(trained_lake):
    from recsys_core.pipeline import train
    from recsys_core.registry.tracking import Tracker

    context = trained_lake
    lake, settings = context.lake, context.settings
    runs = Tracker(lake, settings.tracking.experiment, settings.tracking.registered_model)
    experiments = [e.experiment_id for e in runs.client.search_experiments()]
    before = len(runs.client.search_runs(experiments))
    tight = settings.updated(models=("popularity", "ease"), memory_budget_gb=1e-5)
    with pytest.raises(InputError, match=r"ease: 40 items need .* memory budget"):
        train(RunContext(tight))
    assert len(runs.client.search_runs(experiments)) == before


def test_default_candidates_adapt_to_a_catalog_above_the_dense_limit(trained_lake):
    from recsys_core.pipeline import recommend, train

    context = trained_lake
    lake, settings = context.lake, context.settings
    defaults = Settings(
        data_dir=lake.root, encoder=settings.embedding.encoder, encoder_max_length=64,
        memory_budget_gb=1e-5, eval_users=100, k=5,
    )  # fmt: skip
    report = train(RunContext(defaults))
    models = [c.model for c in report.candidates]
    assert "sparse_ease" in models and "blend" in models and "ease" not in models
    assert report.decision.startswith("champion recsys/1 cannot be re-measured (ease: 40")
    # the dense EASE of the earlier champion cannot be re-measured on this budget either
    assert any(n.startswith("ease: 40 items need") and n.endswith("sparse_ease stands in")
               for n in report.left_out)  # fmt: skip
    assert sum("blend member ease" in n for n in report.left_out) == 2
    assert report.evaluated_users == min(report.test_users, 100)
    recommend(RunContext(defaults))
    recs = lake.read("recommendations")
    events = lake.read("events", ["user_id", "item_id"]).unique()
    assert recs["user_id"].n_unique() == events["user_id"].n_unique()
    assert recs.group_by("user_id").len()["len"].unique().to_list() == [5]
    assert recs.join(events, on=["user_id", "item_id"], how="inner").is_empty()


def test_als_folds_users_in_by_blocks_with_the_same_result(planted, monkeypatch):
    import recsys_core.models.als as als
    from recsys_core.models.base import padded_history

    data, _ = planted
    model = create("als(factors=8, iterations=3)")
    model.fit(TrainingData(data), FitOptions())
    histories = data.histories()
    whole = model._solve(padded_history(histories, max_len=data.n_items))[0]
    monkeypatch.setattr(als, "FOLD_IN_MEMORY_MB", 0)  # one user per block
    assert len(model._blocks(histories.lengths())) == len(histories)
    users, _ = model.factors(histories)
    torch.testing.assert_close(users, whole)
    history = padded_history(histories, max_len=6)
    candidates = torch.zeros(len(histories), 3, dtype=torch.int64)
    blocked = model.pair_weights(history, candidates)
    monkeypatch.setattr(als, "FOLD_IN_MEMORY_MB", 1 << 10)
    torch.testing.assert_close(blocked, model.pair_weights(history, candidates))


def test_als_fold_in_blocks_hold_histories_of_similar_lengths(planted, monkeypatch):
    """A block pads every history to its longest: blocks are cut where the longest would
    pass twice the shortest, and the users' vectors stay those of one padded solve."""
    import recsys_core.models.als as als
    from recsys_core.models.base import padded_history

    data, _ = planted
    model = create("als(factors=8, iterations=3)")
    model.fit(TrainingData(data), FitOptions())
    lengths = np.sort(np.random.default_rng(0).pareto(1.2, 500).astype(np.int64) + 1)
    blocks = model._blocks(lengths)
    assert blocks[0][0] == 0 and blocks[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
    for start, stop in blocks:
        block = lengths[start:stop]
        assert stop - start == 1 or block[-1] <= max(2 * block[0], als.MIN_BLOCK_WIDTH)
    assert 3 <= len(blocks) <= 20  # cut by length, not one user each
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, data.n_items + 1, size=60)  # 1 to every item, unordered
    histories = UserHistories(
        user_index=np.arange(len(sizes)), indptr=np.concatenate([[0], np.cumsum(sizes)]),
        items=np.concatenate([rng.permutation(data.n_items)[:n] for n in sizes]),
        timestamps=np.arange(sizes.sum()), n_items=data.n_items,
    )  # fmt: skip
    whole = model._solve(padded_history(histories, max_len=data.n_items))[0]
    monkeypatch.setattr(als, "MIN_BLOCK_WIDTH", 1)
    assert len(model._blocks(np.sort(sizes))) > 3
    torch.testing.assert_close(model.factors(histories)[0], whole)


def test_a_stage_measures_its_own_peak_memory():
    from recsys_core.resources import measured, peak_rss_mb

    ballast = np.ones(64 << 17)  # 64 MiB, touched
    del ballast
    before = peak_rss_mb()
    with measured() as figures:
        pass
    assert figures["seconds"] >= 0
    assert figures["peak_rss_mb"] < before - 32  # the earlier ballast does not count
    with measured() as figures:
        ballast = np.ones(64 << 17)
    assert figures["peak_rss_mb"] >= 64 + 1 and ballast.sum() > 0


def _resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_a_stage_starts_from_what_the_process_holds_not_what_it_freed():
    from recsys_core.resources import _malloc_trim, measured

    blocks = [bytearray(4000) for _ in range(40_000)]  # 160 MB of small blocks in the C heap
    top = bytearray(4000)  # mostly allocated after them: the heap cannot shrink from its end
    held = _resident_mb()
    del blocks  # freed, but (glibc) still resident until trimmed
    with measured() as figures:
        pass
    if _malloc_trim() is not None:  # glibc: the freed pages go back
        assert _resident_mb() < held - 100
        assert figures["peak_rss_mb"] < held - 100
    assert len(top) == 4000


def test_blend_members_that_fit_the_same_state_are_fitted_once(planted, monkeypatch):
    from recsys_core.models.itemknn import ItemKNN

    data, _ = planted
    fits = []
    original = ItemKNN.fit
    monkeypatch.setattr(ItemKNN, "fit", lambda self, *a: fits.append(1) or original(self, *a))
    blend = create('blend(members=["itemknn", "itemknn(history_half_life=5)"], grid=[0, 1])')
    blend.fit(TrainingData(data), FitOptions())
    assert len(fits) == 2  # once for tuning, once for the refit (not once per member)
    assert create("itemknn").fit_key() == create("itemknn(history_half_life=5)").fit_key()
    assert create("itemknn").fit_key() != create("itemknn(neighbors=5)").fit_key()
