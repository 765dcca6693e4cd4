from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_core.evaluation.metrics import (
    intra_list_diversity,
    list_metrics,
    novelty,
    ranking_metrics,
)


def relevance(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    data = [(r, i) for r, items in enumerate(rows) for i in items]
    r, c = zip(*data, strict=True)
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), n_items))


def test_hand_computed_case():
    # relevant {1, 3, 7}; ranked [3, 5, 1, 9]: hits at ranks 1 and 3
    ranked = np.array([[3, 5, 1, 9]])
    m = ranking_metrics(ranked, relevance([[1, 3, 7]], 10), ks=(4,))
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@4"] == pytest.approx(dcg / idcg)
    assert m["recall@4"] == pytest.approx(2 / 3)
    assert m["precision@4"] == pytest.approx(2 / 4)
    assert m["hr@4"] == 1.0
    assert m["mrr@4"] == 1.0
    assert m["map@4"] == pytest.approx((1 / 1 + 2 / 3) / 3)


def test_misses_and_empty_slots_score_zero():
    ranked = np.array([[0, -1, -1], [2, 4, 6]])
    m = ranking_metrics(ranked, relevance([[5], [1]], 8), ks=(3,))
    for name in ("ndcg", "recall", "precision", "map", "hr", "mrr"):
        assert m[f"{name}@3"] == 0.0


def test_mrr_uses_the_first_hit():
    m = ranking_metrics(np.array([[9, 8, 2, 1]]), relevance([[2, 1]], 10), ks=(4,))
    assert m["mrr@4"] == pytest.approx(1 / 3)


def test_k_larger_than_the_list_is_refused():
    with pytest.raises(ValueError, match="fewer than k"):
        ranking_metrics(np.array([[1, 2]]), relevance([[1]], 4), ks=(5,))


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_metric_properties(data):
    n_items = data.draw(st.integers(5, 30))
    n_users = data.draw(st.integers(1, 6))
    k = data.draw(st.integers(1, 5))
    rel_rows, ranked = [], []
    for _ in range(n_users):
        rel = data.draw(st.sets(st.integers(0, n_items - 1), min_size=1, max_size=n_items))
        order = data.draw(st.permutations(list(range(n_items))))
        rel_rows.append(sorted(rel))
        ranked.append(order[:k])
    rel = relevance(rel_rows, n_items)
    m = ranking_metrics(np.array(ranked), rel, ks=(k,))
    for value in m.values():
        assert 0.0 <= value <= 1.0 + 1e-12
    assert m[f"precision@{k}"] <= m[f"hr@{k}"]
    # the ideal ranking (relevant items first) scores a perfect NDCG and HR
    ideal = [(r + [i for i in range(n_items) if i not in r])[:k] for r in rel_rows]
    best = ranking_metrics(np.array(ideal), rel, ks=(k,))
    assert best[f"ndcg@{k}"] == pytest.approx(1.0)
    assert best[f"hr@{k}"] == 1.0
    assert best[f"ndcg@{k}"] >= m[f"ndcg@{k}"] - 1e-12


def test_list_metrics_hand_computed():
    # two users' lists over 6 items; training users per item
    ranked = np.array([[0, 1], [1, -1]])
    item_users = np.array([8.0, 2.0, 0.0, 1.0, 1.0, 1.0])
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0, 0], [0, 0], [0, 0]])
    m = list_metrics(
        ranked, (2,), item_users=item_users, n_users=8, n_candidates=6, embeddings=vectors
    )
    assert m["coverage@2"] == pytest.approx(2 / 6)
    # slots: item 0 (8 of 8 users), item 1 (2 of 8), item 1 again
    assert m["novelty@2"] == pytest.approx((0.0 + 2.0 + 2.0) / 3)
    assert m["popularity@2"] == pytest.approx((8 + 2 + 2) / 3)
    # user 0: items 0 and 1 are orthogonal -> distance 1; user 1 has a single item: no pair
    assert m["diversity@2"] == pytest.approx(1.0)


def test_items_without_text_are_left_out_of_diversity():
    vectors = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    assert intra_list_diversity(np.array([[0, 1, 2]]), vectors) == pytest.approx(0.0)
    assert intra_list_diversity(np.array([[0, 1]]), vectors) == 0.0  # no pair with text


def test_novelty_counts_an_item_nobody_saw_as_one_user():
    assert novelty(np.array([[2]]), np.array([4.0, 4.0, 0.0]), 4) == pytest.approx(2.0)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_list_metric_properties(data):
    n_items = data.draw(st.integers(2, 12))
    n_users = data.draw(st.integers(1, 5))
    k = data.draw(st.integers(1, n_items))
    ranked = np.array(
        [data.draw(st.permutations(list(range(n_items))))[:k] for _ in range(n_users)]
    )
    item_users = np.array(
        data.draw(st.lists(st.integers(0, 50), min_size=n_items, max_size=n_items)), dtype=float
    )
    total = max(int(item_users.max()), 1)
    vectors = torch.tensor(
        data.draw(
            st.lists(
                st.lists(st.floats(-1, 1), min_size=3, max_size=3),
                min_size=n_items,
                max_size=n_items,
            )
        )
    )
    m = list_metrics(
        ranked, (k,), item_users=item_users, n_users=total, n_candidates=n_items, embeddings=vectors
    )
    assert 0.0 < m[f"coverage@{k}"] <= 1.0
    assert m[f"novelty@{k}"] >= -1e-9
    assert item_users.min() <= m[f"popularity@{k}"] <= item_users.max()
    assert -1e-6 <= m[f"diversity@{k}"] <= 2.0 + 1e-6
    # showing every item to someone covers the whole catalog
    everything = np.arange(n_items)[None, :]
    assert (
        list_metrics(
            everything, (n_items,), item_users=item_users, n_users=total, n_candidates=n_items
        )[f"coverage@{n_items}"]
        == 1.0
    )
    # a list of one repeated direction has no diversity
    same = torch.ones(n_items, 3)
    assert intra_list_diversity(ranked, same) == pytest.approx(0.0, abs=1e-6)


def test_evaluate_reports_accuracy_and_list_metrics(planted):
    from recsys_core.data.splits import make_split
    from recsys_core.evaluation import evaluate
    from recsys_core.models import FitOptions, TrainingData, create
    from recsys_core.testing.recommenders import group_embeddings

    data, _ = planted
    split = make_split(data, "user_temporal")
    model = create("popularity")
    model.fit(TrainingData(split.train), FitOptions())
    metrics = evaluate(model, split, (5,), item_embeddings=group_embeddings(data))
    assert {"ndcg@5", "recall@5", "coverage@5", "novelty@5", "popularity@5", "diversity@5"} <= set(
        metrics
    )
    # popularity shows everybody nearly the same list: low coverage
    assert metrics["coverage@5"] < 0.6
    assert metrics["users"] == len(split.test_users)
