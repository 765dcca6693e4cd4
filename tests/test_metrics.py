from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_core.evaluation.metrics import ranking_metrics


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
