from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_core.data.interactions import UserHistories
from recsys_core.models.base import Recommender
from recsys_core.models.blend import Blend, BlendConfig
from recsys_core.ranking import QueryBlend, plan_shards, top_k, topk
from recsys_core.ranking.topk import topk_deterministic


class FixedScores(Recommender):
    """A model whose scores are given: lets the ranker be tested on its own."""

    name = "fixed"
    config_class = dict

    def __init__(self, scores: torch.Tensor):
        super().__init__({})
        self.scores = scores

    def fit(self, data, options):
        return []

    def score(self, histories):
        return self.scores[torch.from_numpy(histories.user_index)]

    def state_dict(self):
        return {"scores": self.scores}

    def load_state_dict(self, state):
        self.scores = state["scores"]


def histories_of(rows: list[list[int]], n_items: int) -> UserHistories:
    indptr = np.cumsum([0] + [len(r) for r in rows])
    items = np.array([i for r in rows for i in r], dtype=np.int64)
    return UserHistories(
        user_index=np.arange(len(rows)), indptr=indptr, items=items,
        timestamps=np.arange(len(items)), n_items=n_items,
    )  # fmt: skip


def test_seen_items_are_never_recommended():
    scores = torch.arange(10, dtype=torch.float32).repeat(3, 1)  # item 9 best
    hist = histories_of([[9, 8], [], [0, 1, 2, 3, 4, 5, 6]], 10)
    ranked = top_k(FixedScores(scores), hist, 5)
    assert ranked.items[0].tolist() == [7, 6, 5, 4, 3]
    assert ranked.items[1].tolist() == [9, 8, 7, 6, 5]
    # only three unseen items remain for user 2: the rest of the slots are empty
    assert ranked.items[2].tolist() == [9, 8, 7, -1, -1]
    assert np.isneginf(ranked.scores[2, 3:]).all()


def test_excluded_items_are_never_recommended():
    scores = torch.arange(6, dtype=torch.float32).repeat(2, 1)
    blocked = np.zeros(6, dtype=bool)
    blocked[[5, 3]] = True
    ranked = top_k(FixedScores(scores), histories_of([[], [4]], 6), 3, exclude_items=blocked)
    assert ranked.items.tolist() == [[4, 2, 1], [2, 1, 0]]


def test_ties_go_to_the_lower_item_index_every_time():
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 2.0, 0.0]])
    for _ in range(5):
        ranked = top_k(FixedScores(scores), histories_of([[]], 6), 3)
        assert ranked.items[0].tolist() == [1, 2, 3]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-3, 3), min_size=2, max_size=40).flatmap(
        lambda xs: st.tuples(st.just(xs), st.integers(1, len(xs)))
    )
)
def test_topk_matches_a_stable_sort(case):
    values, k = case
    scores = torch.tensor([values], dtype=torch.float32)
    _, idx = topk_deterministic(scores, k)
    expected = sorted(range(len(values)), key=lambda j: (-values[j], j))[:k]
    assert idx[0].tolist() == expected


@settings(max_examples=30, deadline=None)
@given(st.integers(2000, 2100), st.integers(1, 12), st.integers(0, 2**31))
def test_the_block_prefilter_matches_a_stable_sort_at_any_row_length(n, k, seed):
    from recsys_core.ranking.topk import _block_width

    assert _block_width(n, k) is not None  # rows long enough for the pre-filter
    rng = np.random.default_rng(seed)
    values = rng.integers(-40, 40, size=(5, n)).astype(np.float32)  # many ties
    values[rng.random(values.shape) < 0.05] = -np.inf
    values[1, -2:] = 50.0  # the best items sit in the short last block, when there is one
    values[2, rng.integers(0, n, 3)] = np.nan  # NaN counts as -inf
    values[3, 0], values[3, 1:] = 1.0, -np.inf  # fewer than k items left
    _, idx = topk_deterministic(torch.from_numpy(values), k)
    for row, found in zip(np.where(np.isnan(values), -np.inf, values), idx.tolist(), strict=True):
        expected = sorted(range(n), key=lambda j: (-row[j], j))[:k]
        left = [j for j in expected if np.isfinite(row[j])]  # -inf: nothing to return
        assert found[: len(left)] == left and np.isneginf(row[found[len(left) :]]).all()


@pytest.mark.parametrize("memory_mb", [1, 64])
def test_chunked_equals_unchunked(memory_mb):
    rng = np.random.default_rng(0)
    n_users, n_items = 300, 2000
    scores = torch.from_numpy(rng.random((n_users, n_items)).astype(np.float32))
    rows = [sorted(rng.choice(n_items, size=rng.integers(0, 30), replace=False).tolist())
            for _ in range(n_users)]  # fmt: skip
    hist = histories_of(rows, n_items)
    reference = top_k(FixedScores(scores), hist, 10, memory_mb=10_000)
    chunked = top_k(FixedScores(scores), hist, 10, memory_mb=memory_mb)
    np.testing.assert_array_equal(chunked.items, reference.items)
    np.testing.assert_array_equal(chunked.scores, reference.scores)


class FixedFactors(Recommender):
    """A factor model with given vectors: exercises the one-matmul path of the ranker."""

    name = "fixed-factors"
    config_class = dict

    def __init__(self, users: torch.Tensor, items: torch.Tensor):
        super().__init__({})
        self.users, self.items = users, items

    def fit(self, data, options):
        return []

    def factors(self, histories):
        return self.users[torch.from_numpy(histories.user_index)], self.items

    def score(self, histories):
        users, items = self.factors(histories)
        return users @ items.T

    def state_dict(self):
        return {"users": self.users, "items": self.items}

    def load_state_dict(self, state):
        self.users, self.items = state["users"], state["items"]


def reference_top_k(scores: np.ndarray, rows: list[list[int]], k: int, blocked=None):
    """Brute force: sort each row by (score desc, index asc) after dropping seen/blocked."""
    out = np.full((len(rows), k), -1)
    for u, seen in enumerate(rows):
        allowed = [
            j for j in range(scores.shape[1])
            if j not in set(seen) and (blocked is None or not blocked[j])
            and np.isfinite(scores[u, j])
        ]  # fmt: skip
        best = sorted(allowed, key=lambda j: (-scores[u, j], j))[:k]
        out[u, : len(best)] = best
    return out


def test_chunks_stay_under_the_block_size_whatever_the_budget(monkeypatch):
    """A block over glibc's mmap threshold gets fresh pages at every chunk: each chunk's
    (users x items) block stays under `BLOCK_BYTES` however large the memory budget, and the
    ranking is the one of a single chunk."""
    rng = np.random.default_rng(1)
    n_users, n_items = 300, 2000
    scores = torch.from_numpy(rng.random((n_users, n_items)).astype(np.float32))
    hist = histories_of([rng.choice(n_items, size=5, replace=False).tolist()
                         for _ in range(n_users)], n_items)  # fmt: skip
    sizes: list[int] = []

    class Recording(FixedScores):
        def score(self, histories):
            sizes.append(len(histories))
            return super().score(histories)

    whole = top_k(Recording(scores), hist, 10, memory_mb=10_000)
    assert sizes == [n_users]
    sizes.clear()
    monkeypatch.setattr(topk, "BLOCK_BYTES", 40 * n_items * 4)  # 40 users of 2,000 items
    chunked = top_k(Recording(scores), hist, 10, memory_mb=10_000)
    assert max(sizes) == 40 and sum(sizes) == n_users
    np.testing.assert_array_equal(chunked.items, whole.items)
    np.testing.assert_array_equal(chunked.scores, whole.scores)
    sizes.clear()
    tuned = topk.score_in_chunks(Recording(scores), hist, memory_mb=10_000)
    assert max(sizes) == 40 and torch.equal(tuned, scores)


@settings(max_examples=40, deadline=None)
@given(
    n_items=st.integers(150, 2500),
    k=st.integers(1, 12),
    levels=st.integers(2, 50),
    seed=st.integers(0, 2**16),
    with_blocked=st.booleans(),
)
def test_top_k_matches_brute_force_with_ties_seen_and_blocked_items(
    n_items, k, levels, seed, with_blocked
):
    # few distinct score levels: many ties, also across the pre-filter's block boundaries
    rng = np.random.default_rng(seed)
    n_users = 6
    scores = rng.integers(0, levels, size=(n_users, n_items)).astype(np.float32)
    rows = [sorted(rng.choice(n_items, size=rng.integers(0, 40), replace=False).tolist())
            for _ in range(n_users)]  # fmt: skip
    blocked = rng.random(n_items) < 0.3 if with_blocked else None
    ranked = top_k(
        FixedScores(torch.from_numpy(scores)), histories_of(rows, n_items), k,
        exclude_items=blocked, memory_mb=1,
    )  # fmt: skip
    np.testing.assert_array_equal(ranked.items, reference_top_k(scores, rows, k, blocked))


def test_factor_path_equals_score_path_and_is_chunk_independent():
    rng = np.random.default_rng(1)
    # integer-valued factors give exactly representable products, so ties are real ties
    users = torch.from_numpy(rng.integers(-2, 3, size=(257, 4)).astype(np.float32))
    items = torch.from_numpy(rng.integers(-2, 3, size=(3001, 4)).astype(np.float32))
    rows = [rng.choice(3001, size=rng.integers(0, 25), replace=False).tolist()
            for _ in range(257)]  # fmt: skip
    hist = histories_of(rows, 3001)
    blocked = rng.random(3001) < 0.1
    factor_model = FixedFactors(users, items)
    score_model = FixedScores(users @ items.T)
    whole = top_k(factor_model, hist, 15, exclude_items=blocked, memory_mb=10_000)
    chunked = top_k(factor_model, hist, 15, exclude_items=blocked, memory_mb=1)
    via_score = top_k(score_model, hist, 15, exclude_items=blocked, memory_mb=1)
    expected = reference_top_k((users @ items.T).numpy(), rows, 15, blocked)
    for ranked in (whole, chunked, via_score):
        np.testing.assert_array_equal(ranked.items, expected)
    np.testing.assert_array_equal(whole.scores, via_score.scores)
    assert not any(set(r) & set(ranked.items[u]) for u, r in enumerate(rows))


def test_nan_scores_are_never_returned():
    scores = torch.tensor([[0.5, float("nan"), 0.9, float("nan"), 0.1]])
    ranked = top_k(FixedScores(scores), histories_of([[]], 5), 5)
    assert ranked.items[0].tolist() == [2, 0, 4, -1, -1]


def test_shards_ranked_apart_equal_one_ranking():
    rng = np.random.default_rng(2)
    scores = torch.from_numpy(rng.random((101, 500)).astype(np.float32))
    hist = histories_of([rng.choice(500, size=5, replace=False).tolist() for _ in range(101)], 500)
    model = FixedScores(scores)
    whole = top_k(model, hist, 7)
    shards = plan_shards(len(hist), 30)
    # as few shards of at most 30 users as there can be, of equal sizes
    assert [(s.start, s.stop) for s in shards] == [(0, 25), (25, 50), (50, 75), (75, 101)]
    assert plan_shards(0, 30) == []
    assert [(s.start, s.stop) for s in plan_shards(60, 30)] == [(0, 30), (30, 60)]
    parts = [top_k(model, hist.slice(s.start, s.stop), 7).items for s in shards]
    np.testing.assert_array_equal(np.concatenate(parts), whole.items)


def test_factor_models_without_pair_weights_explain_with_their_item_vectors():
    # item 3 is a near copy of item 0, item 4 of item 1: each explains its twin
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [0.9, 0.1], [0.1, 0.9]])
    users = torch.tensor([[1.0, 1.0]])
    ranked = top_k(FixedFactors(users, items), histories_of([[0, 1]], 5), 2, explain=True)
    assert ranked.items[0].tolist() == [3, 4]
    assert ranked.reasons[0].tolist() == [0, 1]


def test_query_blend_weight_zero_keeps_the_model_ranking_and_one_follows_the_query():
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(rng.random((2, 50)).astype(np.float32))
    item_vectors = torch.nn.functional.normalize(
        torch.from_numpy(rng.normal(size=(50, 8))).float(), dim=1
    )
    query = torch.zeros(2, 8)
    query[0] = item_vectors[17]  # user 0 asks for something like item 17; user 1 asks nothing
    hist = histories_of([[17], []], 50)
    model = FixedScores(scores)
    plain = top_k(model, hist, 5)
    same = top_k(model, hist, 5, query=QueryBlend(query, item_vectors, weight=0.0))
    np.testing.assert_array_equal(same.items, plain.items)
    by_query = top_k(model, hist, 5, query=QueryBlend(query, item_vectors, weight=1.0))
    relevance = (item_vectors @ item_vectors[17]).numpy()
    relevance[17] = -np.inf  # seen: excluded even though it matches the query best
    assert by_query.items[0].tolist() == np.argsort(-relevance, kind="stable")[:5].tolist()
    np.testing.assert_array_equal(by_query.items[1], plain.items[1])  # no query: no change


def test_query_blend_works_the_same_on_the_factor_path():
    rng = np.random.default_rng(4)
    users = torch.from_numpy(rng.normal(size=(3, 6)).astype(np.float32))
    items = torch.from_numpy(rng.normal(size=(400, 6)).astype(np.float32))
    item_vectors = torch.nn.functional.normalize(
        torch.from_numpy(rng.normal(size=(400, 8))).float(), dim=1
    )
    query = QueryBlend(item_vectors[[5, 9, 11]], item_vectors, weight=0.7)
    hist = histories_of([[1, 2], [], [9]], 400)
    blocked = np.zeros(400, dtype=bool)
    blocked[[11, 12]] = True
    via_factors = top_k(FixedFactors(users, items), hist, 6, query=query, exclude_items=blocked)
    via_scores = top_k(FixedScores(users @ items.T), hist, 6, query=query, exclude_items=blocked)
    np.testing.assert_array_equal(via_factors.items, via_scores.items)
    only_query = QueryBlend(query.vectors, item_vectors, weight=1.0)
    by_query = top_k(FixedFactors(users, items), hist, 6, query=only_query, exclude_items=blocked)
    assert by_query.items[0, 0] == 5  # the item the query was made from wins
    assert 9 not in by_query.items[2] and 11 not in by_query.items[2]  # seen, blocked


def test_query_blend_lets_the_query_pick_the_kind_and_the_model_order_the_matches():
    """A model with a heavy head (one favourite far above the rest, as EASE's are) must not
    override the query at the default weight: the first item is the query's match that the
    model likes best, not the model's favourite that does not match."""
    rng = np.random.default_rng(5)
    scores = torch.from_numpy(rng.normal(0.0, 0.3, size=(1, 200)).astype(np.float32))
    scores[0, 0] = 10.0  # the model's favourite, unrelated to the query
    matches = np.arange(5, 15)
    scores[0, matches] = torch.linspace(1.0, -1.0, len(matches))  # item 5: the liked match
    item_vectors = torch.zeros(200, 2)
    item_vectors[:, 1] = 1.0
    item_vectors[matches] = torch.tensor([1.0, 0.2])  # the kind of item the query asks for
    item_vectors = torch.nn.functional.normalize(item_vectors, dim=1)
    query = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0]]), dim=1)
    ranked = top_k(FixedScores(scores), histories_of([[]], 200), 3,
                   query=QueryBlend(query, item_vectors))  # fmt: skip
    assert ranked.items[0, 0] == 5
    assert set(ranked.items[0].tolist()) <= set(matches.tolist())


def test_query_blend_keeps_ruled_out_items_last_and_a_flat_model_follows_the_query():
    scores = torch.tensor([[2.0, -torch.inf, 1.0, 0.5], [0.3, 0.3, 0.3, 0.3]])
    item_vectors = torch.nn.functional.normalize(torch.rand(4, 3) + 0.1, dim=1)
    query = QueryBlend(item_vectors[[1, 3]], item_vectors, weight=0.5)
    blended = scores.clone()
    query.blend(blended, 0, None)
    assert torch.isfinite(blended[0, [0, 2, 3]]).all() and blended[0, 1] == -torch.inf
    relevance = item_vectors[3] @ item_vectors.T
    assert blended[1].argsort().tolist() == relevance.argsort().tolist()


def test_a_blends_reason_is_the_same_whoever_is_ranked_with_the_user():
    """Ranked with a longer history, a user's history is padded; padding must not move the
    scale a blend puts its members on (content reads item 0's text in a padded slot).

    User 0 saw items 1 and 2; item 5 is its top item. `itemknn` backs item 5 with item 2
    (1.0 against 0.2), `content` with item 1 (cosine 0.5 against 0): on each member's own
    scale item 1 wins (0.2 + 1.0 against 1.0 + 0). Item 0's text equals item 5's, so a padded
    slot read as item 0 would set `content`'s scale to 1 instead of 0.5 and hand it to item 2.
    """
    blend = Blend(BlendConfig(members=("itemknn", "content(half_life=None)")))
    knn, content = blend.members
    weights = np.zeros((6, 6), dtype=np.float32)
    weights[1, 5], weights[2, 5], weights[3, 4] = 0.2, 1.0, 1.0
    knn.keep(sp.csr_matrix(weights))
    content.embeddings = torch.tensor(
        [[1.0, 0.0], [0.5, 0.75**0.5], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]
    )
    content.map = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # (D + 1, D)
    content.n_items = 6
    blend.weights, blend.n_items = torch.tensor([0.5, 0.5]), 6
    histories = histories_of([[1, 2], [2, 3, 4]], 6)

    alone = top_k(blend, histories.slice(0, 1), 1, explain=True)
    together = top_k(blend, histories, 1, explain=True)
    assert alone.items[0, 0] == together.items[0, 0] == 5
    assert alone.reasons[0, 0] == together.reasons[0, 0] == 1


@pytest.mark.parametrize("seed", range(6))
def test_a_blends_best_supporters_are_those_of_its_summed_pair_weights(seed):
    """The blend's compiled reasons equal the ranker's largest of `pair_weights`, ties (whole
    weights, so equal sums are common), padding, missing candidates, members that share a
    fit, a member without pair weights and one without weight included."""
    from recsys_core.models.base import padded_history

    rng = np.random.default_rng(seed)
    n = 12
    blend = Blend(
        BlendConfig(
            members=(
                "itemknn",
                "itemknn(history_half_life=2)",
                "content(half_life=None)",
                "popularity",
                "itemknn(history_half_life=5)",
            )
        )
    )
    knn, recent, content, popular, unused = blend.members
    weights = rng.integers(-2, 3, (n, n)).astype(np.float32) * (rng.random((n, n)) < 0.5)
    knn.keep(sp.csr_matrix(weights))
    recent.share_state(knn)  # one fit: one part, two weights
    unused.keep(sp.csr_matrix(rng.integers(0, 3, (n, n)).astype(np.float32)))
    content.embeddings = torch.from_numpy(rng.integers(-1, 2, (n, 3)).astype(np.float32))
    content.map = torch.cat([torch.eye(3), torch.zeros(1, 3)])
    content.n_items = n
    popular.popularity = torch.from_numpy(rng.random(n).astype(np.float32))
    popular.n_items = n
    blend.weights = torch.tensor([0.5, 0.25, 0.25, 0.5, 0.0])
    blend.n_items = n
    lengths = rng.integers(0, 7, 20)
    histories = histories_of([list(rng.integers(0, n, k)) for k in lengths], n)
    history = padded_history(histories)  # (B, L), -1 after each user's items
    candidates = torch.from_numpy(rng.integers(-1, n, (20, 4)))

    found = blend.best_supporters(history, candidates)
    summed = blend.pair_weights(history, candidates).masked_fill(
        (history < 0).unsqueeze(-1), -torch.inf
    )
    best_weight, best = summed.max(dim=1)
    want = torch.where((best_weight > 0) & (candidates >= 0), history.gather(1, best), -1)
    assert torch.equal(found, want)
    assert (want >= 0).any() and (want < 0).any()
