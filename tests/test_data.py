"""Vocabulary, interactions and splits."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_core.data.interactions import HistoryTable, Interactions
from recsys_core.data.splits import global_temporal, make_split
from recsys_core.data.vocab import Vocabulary
from recsys_core.errors import InputError


@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=30))
def test_vocabulary_round_trips(values):
    vocab = Vocabulary.from_values(values)
    assert len(vocab) == len(set(values))
    index = vocab.index(values)
    assert (index >= 0).all()
    assert vocab.lookup(index).to_list() == values
    assert Vocabulary.from_frame(vocab.to_frame()) == vocab


def test_vocabulary_unknown_ids_and_duplicates():
    vocab = Vocabulary(["a", "b"])
    assert vocab.index(["b", "zzz"]).tolist() == [1, -1]
    assert vocab.lookup([1, -1]).to_list() == ["b", None]
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary(["a", "a"])


def events(rows):
    return pl.DataFrame(
        rows, schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64},
        orient="row",
    ).with_columns(value=pl.lit(1.0))  # fmt: skip


def test_histories_are_chronological_distinct_and_keep_catalog_items():
    data = Interactions.from_events(
        events([("u1", "b", 30), ("u1", "a", 10), ("u1", "b", 5), ("u2", "c", 7)]),
        catalog_item_ids=pl.Series(["a", "b", "c", "cold"]),
    )
    assert data.n_items == 4 and data.items.index(["cold"])[0] >= 0
    h = data.histories(data.users.index(["u1", "u2"]))
    assert data.items.lookup(h.row(0)).to_list() == ["a", "b"]  # b counts at its latest time
    assert h.recency_rank().tolist() == [1, 0, 0]
    part = h.slice(1, 2)
    assert data.items.lookup(part.row(0)).to_list() == ["c"]
    assert h.dense().sum().item() == 3


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 5), st.integers(0, 6)), max_size=60),
    st.sampled_from([1, 2**60]),  # 2**60: times too far apart for the compiled sort's key
)
def test_history_table_from_events_in_any_order(rows, spread):
    users = np.array([u for u, _, _ in rows], dtype=np.int64)
    items = np.array([i for _, i, _ in rows], dtype=np.int64)
    times = np.array([t for _, _, t in rows], dtype=np.int64) * spread - 3 * spread
    table = HistoryTable.from_events(users, items, times, n_users=5, n_items=6)
    h = table.rows(np.arange(5))
    for user in range(5):
        latest: dict[int, int] = {}  # each item at its latest time
        for u, i, t in zip(users, items, times, strict=True):
            if u == user:
                latest[int(i)] = max(latest.get(int(i), int(t)), int(t))
        expected = sorted(latest, key=lambda i: (latest[i], i))
        assert h.row(user).tolist() == expected
        assert h.timestamps[h.indptr[user] : h.indptr[user + 1]].tolist() == [
            latest[i] for i in expected
        ]
    assert table.items.dtype == np.int32 and table.timestamps.dtype == np.int64


def test_history_table_orders_times_whose_span_overflows_int64():
    times = np.array([3 * 2**61, -3 * 2**61, 0, 5])  # max - min is past int64
    table = HistoryTable.from_events(np.zeros(4, dtype=np.int64), np.arange(4), times, 1, 4)
    assert table.items.tolist() == [1, 2, 3, 0]
    assert table.timestamps.tolist() == sorted(times.tolist())


def test_history_table_refuses_indexes_outside_the_vocabularies():
    with pytest.raises(ValueError, match="user indexes"):
        HistoryTable.from_events(np.array([0, 3]), np.array([0, 0]), np.array([1, 2]), 3, 1)
    with pytest.raises(ValueError, match="item indexes"):
        HistoryTable.from_events(np.array([0, 0]), np.array([0, -1]), np.array([1, 2]), 3, 1)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 6), st.integers(0, 9)), min_size=1, max_size=40
    ),
    st.lists(st.integers(0, 5), max_size=8),
)
def test_histories_of_any_users_in_any_order_and_twice(rows, asked):
    data = Interactions.from_events(
        events([(f"u{u}", f"i{i}", t) for u, i, t in rows]),
        users=Vocabulary.from_values(pl.Series([f"u{u}" for u in range(6)])),
    )
    users = np.array(asked, dtype=np.int64)
    for h in (data.histories(users), data.histories(users)):  # the second from what is kept
        assert h.user_index.tolist() == asked and h.items.dtype == h.timestamps.dtype == np.int64
        for j, user in enumerate(asked):
            latest: dict[int, int] = {}  # each item at its latest time
            name = data.users.lookup(np.array([user])).to_list()[0]
            for u, i, t in rows:
                if f"u{u}" == name:
                    item = int(data.items.index([f"i{i}"])[0])
                    latest[item] = max(latest.get(item, t), t)
            expected = sorted(latest, key=lambda i: (latest[i], i))
            assert h.row(j).tolist() == expected
            assert h.timestamps[h.indptr[j] : h.indptr[j + 1]].tolist() == [
                latest[i] for i in expected
            ]
    unknown = data.histories(np.array([-1, 6, 0], dtype=np.int64))  # outside the vocabulary
    assert unknown.lengths()[:2].tolist() == [0, 0]
    assert unknown.row(2).tolist() == data.histories(np.array([0])).row(0).tolist()
    h.items[:] = -1  # a caller's copy: what the data keeps is not changed
    assert (data.histories(users).items >= 0).all()
    assert data.matrix().nnz == len({(u, i) for u, i, _ in rows})


def test_global_temporal_split_has_no_leakage(planted):
    data, _ = planted
    split = global_temporal(data, 0.3)
    train_max = split.train.frame["timestamp"].max()
    full = data.frame.join(split.test, on=["user_index", "item_index"])
    assert full["timestamp"].min() >= train_max
    seen = split.train.frame.select("user_index", "item_index").unique()
    assert split.test.join(seen, on=["user_index", "item_index"], how="inner").is_empty()
    assert set(split.test_users) <= set(split.train.frame["user_index"].unique().to_list())


def test_split_of_too_little_data_is_an_input_error():
    data = Interactions.from_events(events([("u1", "a", 1)]))
    with pytest.raises(InputError, match="empty"):
        make_split(data, "global_temporal")
    with pytest.raises(InputError, match="unknown evaluation protocol"):
        make_split(data, "nope")


def test_fingerprint_changes_with_the_data(planted):
    data, _ = planted
    assert data.fingerprint() == data.fingerprint()
    fewer = data.with_frame(data.frame.head(len(data) - 1))
    assert fewer.fingerprint() != data.fingerprint()
    assert np.array_equal(data.item_counts() > 0, data.matrix().sum(0).A1 > 0)


def test_cold_item_split_keeps_held_out_items_out_of_training(planted):
    data, _ = planted
    assert make_split(data, "cold_items").candidates.sum() == 2  # 10% of 20 items by default
    split = make_split(data, "cold_items", 0.25)
    cold = np.flatnonzero(split.candidates)
    assert len(cold) == 5
    assert not split.train.frame["item_index"].is_in(cold.tolist()).any()
    assert split.test["item_index"].is_in(cold.tolist()).all()


def _random_interactions(rows: list[tuple[int, int, int]]) -> Interactions:
    return Interactions.from_events(events([(f"u{u}", f"i{i}", t) for u, i, t in rows]))


@pytest.mark.parametrize("protocol", ["user_temporal", "leave_one_out", "user_random"])
def test_per_user_splits_have_no_leakage_and_cover_every_user(protocol, planted):
    data, _ = planted
    split = make_split(data, protocol)
    train_pairs = split.train.frame.select("user_index", "item_index").unique()
    assert split.test.join(train_pairs, on=["user_index", "item_index"]).is_empty()
    # every event of a test pair left training, and nothing else did
    kept = data.frame.join(split.test, on=["user_index", "item_index"], how="anti")
    assert kept.height == split.train.frame.height
    assert set(split.test_users) == set(data.frame["user_index"].unique().to_list())


def test_user_temporal_tests_each_users_latest_fifth():
    # u0 meets items 0..9 in order; u1 meets items 5..9 in order
    rows = [(0, i, 100 + i) for i in range(10)] + [(1, i, 200 + i) for i in range(5, 10)]
    data = _random_interactions(rows)
    split = make_split(data, "user_temporal")
    tested = {
        data.users.lookup([u])[0]: sorted(data.items.lookup(g["item_index"]).to_list())
        for (u,), g in split.test.group_by("user_index")
    }
    assert tested == {"u0": ["i8", "i9"], "u1": ["i9"]}  # round(0.2 * 10) = 2, max(1, 1) = 1


def test_user_temporal_orders_by_first_interaction():
    # item a first met at t=1 and again at t=50: it is old, so the latest is b
    rows = [(0, 1, 1), (0, 2, 10), (0, 1, 50)]
    data = _random_interactions(rows)
    split = make_split(data, "user_temporal", 0.3)
    assert data.items.lookup(split.test["item_index"]).to_list() == ["i2"]
    assert split.train.frame.height == 2  # both events of item 1 stay in training


def test_leave_one_out_holds_out_exactly_the_latest_item():
    rows = [(0, i, 10 * i) for i in range(5)] + [(1, 7, 3), (1, 8, 4), (2, 9, 1)]
    data = _random_interactions(rows)
    split = make_split(data, "leave_one_out")
    tested = dict(
        zip(
            data.users.lookup(split.test["user_index"]).to_list(),
            data.items.lookup(split.test["item_index"]).to_list(),
            strict=True,
        )
    )
    assert tested == {"u0": "i4", "u1": "i8"}  # u2 has a single item: not evaluated


def test_user_random_holds_out_a_quarter_and_depends_on_the_seed():
    rows = [(u, i, u * 100 + i) for u in range(20) for i in range(40)]
    data = _random_interactions(rows)
    a, b = make_split(data, "user_random", seed=1), make_split(data, "user_random", seed=1)
    c = make_split(data, "user_random", seed=2)
    assert a.test.equals(b.test) and not a.test.equals(c.test)
    per_user = a.test.group_by("user_index").len()["len"]
    assert per_user.unique().to_list() == [10]  # 25% of 40
    # it is not simply the latest or earliest items
    positions = a.test["item_index"].to_numpy() % 40
    assert positions.min() < 30 and positions.max() >= 10


@settings(deadline=None)  # a busy machine slows single examples; the property is what counts
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 12), st.integers(0, 1000)),
        min_size=4, max_size=80,
    ),
    st.sampled_from(["global_temporal", "user_temporal", "leave_one_out", "user_random"]),
)  # fmt: skip
def test_every_protocol_is_leak_free_on_any_data(rows, protocol):
    data = _random_interactions(rows)
    try:
        split = make_split(data, protocol)
    except InputError:
        return  # too little data for a test part: refused with a clear error
    seen = split.train.frame.select("user_index", "item_index").unique()
    assert split.test.join(seen, on=["user_index", "item_index"]).is_empty()
    assert set(split.test_users) <= set(split.train.frame["user_index"].to_list())
    assert split.test.height > 0 and split.train.frame.height > 0
    if protocol in ("user_temporal", "leave_one_out"):
        # within a user, every test item was met no earlier than every training item
        first = data.frame.group_by("user_index", "item_index").agg(pl.col("timestamp").min())
        test_t = split.test.join(first, on=["user_index", "item_index"])
        train_t = seen.join(first, on=["user_index", "item_index"])
        latest_train = train_t.group_by("user_index").agg(pl.col("timestamp").max())
        joined = test_t.join(latest_train, on="user_index", suffix="_train")
        assert (joined["timestamp"] >= joined["timestamp_train"]).all()


def test_protocol_fraction_is_checked():
    data = _random_interactions([(0, i, i) for i in range(5)])
    with pytest.raises(InputError, match="between 0 and 1"):
        make_split(data, "user_random", 1.5)
