from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_core.data.interactions import UserHistories
from recsys_core.models.base import Recommender
from recsys_core.ranking import top_k
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
