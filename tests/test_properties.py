"""Property tests: the metric functions against slow references, and the split protocols.

The references are plain Python loops over one list at a time, written from the definitions
in the docstrings of recsys_core/evaluation/metrics.py and recsys_core/data/splits.py, so a
vectorised shortcut that drifts from its definition shows up on some generated input.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch
from hypothesis import example, given, reject, settings
from hypothesis import strategies as st

from recsys_core.data.interactions import Interactions
from recsys_core.data.splits import DEFAULT_FRACTIONS, PROTOCOLS, Split, make_split
from recsys_core.errors import InputError
from recsys_core.evaluation.metrics import (
    METRICS,
    average_popularity,
    catalog_coverage,
    hit_matrix,
    intra_list_diversity,
    list_metrics,
    novelty,
    ranking_metrics,
)
from recsys_core.testing.recommenders import events_frame

SETTINGS = settings(max_examples=80, deadline=None)
TOLERANCE = 1e-6


# -- generated ranked lists ---------------------------------------------------------------------
@st.composite
def ranked_lists(draw, *, min_relevant: int = 0) -> tuple[np.ndarray, list[set[int]], int]:
    """(U, width) distinct item indexes per row, best first, -1 padding at the end of short
    lists; a relevant set per row; the catalog size."""
    n_items = draw(st.integers(1, 15))
    n_users = draw(st.integers(1, 6))
    width = draw(st.integers(1, 8))
    ranked = np.full((n_users, width), -1, dtype=np.int64)
    relevant = []
    for user in range(n_users):
        length = draw(st.integers(0, min(width, n_items)))
        items = draw(st.lists(st.integers(0, n_items - 1), min_size=length, max_size=length,
                              unique=True))  # fmt: skip
        ranked[user, :length] = items
        relevant.append(
            draw(st.sets(st.integers(0, n_items - 1), min_size=min(min_relevant, n_items)))
        )
    return ranked, relevant, n_items


def relevance_matrix(relevant: list[set[int]], n_items: int) -> sp.csr_matrix:
    rows = [u for u, items in enumerate(relevant) for _ in items]
    cols = [i for items in relevant for i in sorted(items)]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(relevant), n_items))


def reference_accuracy(items: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """Every accuracy metric of one list at `k`, straight from the definitions."""
    top = items[:k]
    hits = [item >= 0 and item in relevant for item in top]
    ideal = min(len(relevant), k)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, hit in enumerate(hits, start=1) if hit)
    idcg = sum(1.0 / math.log2(rank + 1) for rank in range(1, ideal + 1))
    precision_sum, found = 0.0, 0
    for rank, hit in enumerate(hits, start=1):
        if hit:
            found += 1
            precision_sum += found / rank
    first = next((rank for rank, hit in enumerate(hits, start=1) if hit), None)
    return {
        "ndcg": dcg / idcg,
        "recall": sum(hits) / len(relevant),
        "precision": sum(hits) / k,
        "map": precision_sum / ideal,
        "hr": 1.0 if any(hits) else 0.0,
        "mrr": 1.0 / first if first is not None else 0.0,
    }


@SETTINGS
@given(data=ranked_lists(min_relevant=1), cutoffs=st.sets(st.integers(1, 8), min_size=1))
@example(data=(np.array([[-1]]), [{0}], 1), cutoffs={1})  # no filled slot in any list
def test_ranking_metrics_match_the_definitions(data, cutoffs):
    ranked, relevant, n_items = data
    ks = sorted(k for k in cutoffs if k <= ranked.shape[1]) or [ranked.shape[1]]
    got = ranking_metrics(ranked, relevance_matrix(relevant, n_items), ks)
    assert set(got) == {f"{name}@{k}" for name in METRICS for k in ks}
    for k in ks:
        per_user = [
            reference_accuracy(row.tolist(), rel, k)
            for row, rel in zip(ranked, relevant, strict=True)
        ]
        for name in METRICS:
            expected = sum(user[name] for user in per_user) / len(per_user)
            assert got[f"{name}@{k}"] == pytest.approx(expected, abs=TOLERANCE), f"{name}@{k}"


@SETTINGS
@given(data=ranked_lists())
def test_hit_matrix_marks_exactly_the_relevant_filled_slots(data):
    ranked, relevant, n_items = data
    hits = hit_matrix(ranked, relevance_matrix(relevant, n_items))
    assert hits.shape == ranked.shape and hits.dtype == bool
    for u, row in enumerate(ranked):
        assert hits[u].tolist() == [item >= 0 and item in relevant[u] for item in row]


@SETTINGS
@given(data=ranked_lists())
def test_users_without_relevant_items_or_lists_shorter_than_k_are_refused(data):
    ranked, relevant, n_items = data
    matrix = relevance_matrix(relevant, n_items)
    width = ranked.shape[1]
    if any(not items for items in relevant):
        with pytest.raises(ValueError, match="at least one relevant item"):
            ranking_metrics(ranked, matrix, [width])
    else:
        with pytest.raises(ValueError, match="fewer than k"):
            ranking_metrics(ranked, matrix, [width + 1])


# -- beyond-accuracy metrics ----------------------------------------------------------------------
@st.composite
def list_inputs(draw):
    """Ranked lists plus training users per item, a user count and item text vectors (some
    items without text: zero rows)."""
    ranked, _, n_items = draw(ranked_lists())
    n_users = draw(st.integers(0, 20))
    item_users = np.array(
        draw(st.lists(st.integers(0, max(n_users, 1)), min_size=n_items, max_size=n_items)),
        dtype=np.float64,
    )
    dim = draw(st.integers(1, 5))
    values = st.floats(-1.0, 1.0, allow_nan=False, width=32).filter(lambda v: abs(v) > 1e-3)
    rows = draw(st.lists(st.lists(values, min_size=dim, max_size=dim), min_size=n_items,
                         max_size=n_items))  # fmt: skip
    embeddings = np.array(rows, dtype=np.float32).reshape(n_items, dim)
    no_text = draw(st.lists(st.booleans(), min_size=n_items, max_size=n_items))
    embeddings[np.array(no_text, dtype=bool)] = 0.0
    return ranked, item_users, n_users, torch.from_numpy(embeddings)


def filled(ranked: np.ndarray) -> list[int]:
    return [int(item) for row in ranked for item in row if item >= 0]


def reference_coverage(ranked: np.ndarray, n_candidates: int) -> float:
    return len(set(filled(ranked))) / max(n_candidates, 1)


def reference_novelty(ranked: np.ndarray, item_users: np.ndarray, n_users: int) -> float:
    items = filled(ranked)
    if not items:
        return 0.0
    return sum(-math.log2(max(item_users[i], 1.0) / max(n_users, 1)) for i in items) / len(items)


def reference_popularity(ranked: np.ndarray, item_users: np.ndarray) -> float:
    items = filled(ranked)
    return sum(item_users[i] for i in items) / len(items) if items else 0.0


def reference_diversity(ranked: np.ndarray, embeddings: torch.Tensor) -> float:
    """Mean over users (with at least one pair) of the mean 1 - cosine over ordered pairs of
    distinct slots whose items both have text."""
    vectors = embeddings.double().numpy()
    per_user = []
    for row in ranked:
        items = [int(i) for i in row if i >= 0 and np.abs(vectors[i]).sum() > 0]
        distances = []
        for a in range(len(items)):
            for b in range(len(items)):
                if a != b:
                    x, y = vectors[items[a]], vectors[items[b]]
                    cosine = float(x @ y) / (math.sqrt(x @ x) * math.sqrt(y @ y))
                    distances.append(1.0 - cosine)
        if distances:
            per_user.append(sum(distances) / len(distances))
    return sum(per_user) / len(per_user) if per_user else 0.0


@SETTINGS
@given(inputs=list_inputs(), extra_candidates=st.integers(0, 5), chunk_users=st.integers(1, 4))
def test_list_metrics_match_the_definitions(inputs, extra_candidates, chunk_users):
    ranked, item_users, n_users, embeddings = inputs
    n_candidates = len(item_users) + extra_candidates
    assert catalog_coverage(ranked, n_candidates) == pytest.approx(
        reference_coverage(ranked, n_candidates), abs=TOLERANCE
    )
    assert novelty(ranked, item_users, n_users) == pytest.approx(
        reference_novelty(ranked, item_users, n_users), abs=TOLERANCE
    )
    assert average_popularity(ranked, item_users) == pytest.approx(
        reference_popularity(ranked, item_users), abs=TOLERANCE
    )
    assert intra_list_diversity(ranked, embeddings, chunk_users=chunk_users) == pytest.approx(
        reference_diversity(ranked, embeddings), abs=TOLERANCE
    )


@SETTINGS
@given(inputs=list_inputs(), cutoffs=st.sets(st.integers(1, 8), min_size=1))
def test_list_metrics_cut_every_list_at_each_k(inputs, cutoffs):
    ranked, item_users, n_users, embeddings = inputs
    ks = sorted(k for k in cutoffs if k <= ranked.shape[1]) or [ranked.shape[1]]
    got = list_metrics(ranked, ks, item_users=item_users, n_users=n_users,
                       n_candidates=len(item_users), embeddings=embeddings)  # fmt: skip
    for k in ks:
        top = ranked[:, :k]
        expected = {
            "coverage": reference_coverage(top, len(item_users)),
            "novelty": reference_novelty(top, item_users, n_users),
            "popularity": reference_popularity(top, item_users),
            "diversity": reference_diversity(top, embeddings),
        }
        for name, value in expected.items():
            assert got[f"{name}@{k}"] == pytest.approx(value, abs=TOLERANCE), f"{name}@{k}"


# -- splits ----------------------------------------------------------------------------------------
BASE_TIME = 1_700_000_000


@st.composite
def interactions(draw) -> Interactions:
    """Events of up to 6 users, each with 2+ distinct items, some repeated; timestamps from a
    narrow range, so ties in time are common."""
    n_items = draw(st.integers(3, 12))
    n_users = draw(st.integers(1, 6))
    rows = []
    for user in range(n_users):
        items = draw(st.lists(st.integers(0, n_items - 1), min_size=2, max_size=n_items,
                              unique=True))  # fmt: skip
        for item in items:
            for _ in range(draw(st.integers(1, 3))):
                rows.append((f"u{user}", f"i{item:02d}", BASE_TIME + draw(st.integers(0, 40))))
    events = events_frame(rows)
    catalog = pl.Series([f"i{i:02d}" for i in range(n_items)])
    return Interactions.from_events(events, catalog)


def split_or_reject(data: Interactions, protocol: str, fraction: float | None, seed: int) -> Split:
    """The split; an input too small for the protocol (an empty part, refused with InputError
    as documented) is not an example."""
    try:
        return make_split(data, protocol, fraction, seed=seed)
    except InputError:
        reject()


def pairs_of(frame: pl.DataFrame) -> set[tuple[int, int]]:
    return set(frame.select("user_index", "item_index").unique().iter_rows())


def first_seen(data: Interactions) -> dict[tuple[int, int], int]:
    """When each user first met each item."""
    out: dict[tuple[int, int], int] = {}
    for user, item, ts in data.frame.select("user_index", "item_index", "timestamp").iter_rows():
        out[(user, item)] = min(ts, out.get((user, item), ts))
    return out


FRACTIONS = st.one_of(st.none(), st.floats(0.05, 0.95))


@SETTINGS
@given(data=interactions(), protocol=st.sampled_from(sorted(PROTOCOLS)), fraction=FRACTIONS,
       seed=st.integers(0, 2**16))  # fmt: skip
def test_no_pair_is_in_both_parts_and_the_same_seed_gives_the_same_split(
    data, protocol, fraction, seed
):
    split = split_or_reject(data, protocol, fraction, seed)
    train, test = pairs_of(split.train.frame), pairs_of(split.test)
    assert not train & test
    assert test <= pairs_of(data.frame) and train <= pairs_of(data.frame)
    assert split.test.height == len(test)  # distinct pairs
    again = make_split(data, protocol, fraction, seed=seed)
    assert again.train.frame.equals(split.train.frame) and again.test.equals(split.test)
    if split.candidates is not None:
        assert (again.candidates == split.candidates).all()


@SETTINGS
@given(data=interactions(), protocol=st.sampled_from(["user_temporal", "user_random",
       "leave_one_out"]), fraction=FRACTIONS, seed=st.integers(0, 2**16))  # fmt: skip
def test_per_user_protocols_move_whole_pairs_and_hold_out_the_asked_share(
    data, protocol, fraction, seed
):
    split = make_split(data, protocol, fraction, seed=seed)
    # every event of a test pair left training, and nothing else did
    moved = data.frame.join(split.test, on=["user_index", "item_index"], how="semi")
    assert split.train.frame.height + moved.height == data.frame.height
    items_per_user = data.frame.group_by("user_index").agg(pl.col("item_index").n_unique())
    tested = dict(split.test.group_by("user_index").len().iter_rows())
    for user, n in items_per_user.iter_rows():  # every user has 2+ items: all are evaluated
        count = tested.get(user, 0)
        assert 1 <= count <= n - 1, (user, count, n)
        if protocol == "leave_one_out":
            assert count == 1
        else:
            share = DEFAULT_FRACTIONS[protocol] if fraction is None else fraction
            assert abs(count - n * share) <= 1, (user, count, n, share)


@SETTINGS
@given(data=interactions(), protocol=st.sampled_from(["user_temporal", "leave_one_out"]),
       fraction=FRACTIONS)  # fmt: skip
def test_per_user_temporal_tests_never_start_before_a_training_item(data, protocol, fraction):
    split = make_split(data, protocol, fraction)
    seen = first_seen(data)
    for user in split.test_users.tolist():
        test_items = split.test.filter(pl.col("user_index") == user)["item_index"].to_list()
        train_items = (
            split.train.frame.filter(pl.col("user_index") == user)["item_index"].unique().to_list()
        )
        # by first interaction, ties broken by item index
        latest_train = max((seen[(user, i)], i) for i in train_items)
        earliest_test = min((seen[(user, i)], i) for i in test_items)
        assert earliest_test > latest_train, (user, earliest_test, latest_train)


@SETTINGS
@given(data=interactions(), fraction=FRACTIONS)
def test_global_temporal_tests_only_on_events_after_all_of_training(data, fraction):
    split = split_or_reject(data, "global_temporal", fraction, 0)
    last_train = split.train.frame["timestamp"].max()
    for user, item in pairs_of(split.test):
        events = data.frame.filter((pl.col("user_index") == user) & (pl.col("item_index") == item))
        assert events["timestamp"].min() > last_train, (user, item)


@SETTINGS
@given(data=interactions(), fraction=FRACTIONS, seed=st.integers(0, 2**16))
def test_cold_items_never_reach_training(data, fraction, seed):
    split = split_or_reject(data, "cold_items", fraction, seed)
    cold = set(np.flatnonzero(split.candidates).tolist())
    with_events = set(data.frame["item_index"].unique().to_list())
    share = DEFAULT_FRACTIONS["cold_items"] if fraction is None else fraction
    assert cold <= with_events and len(cold) >= 1
    assert abs(len(cold) - len(with_events) * share) <= 1
    assert not cold & set(split.train.frame["item_index"].to_list())
    assert set(split.test["item_index"].to_list()) <= cold
    kept = data.frame.filter(~pl.col("item_index").is_in(sorted(cold)))
    assert split.train.frame.equals(kept)
