"""Vocabulary, interactions and splits."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recsys_core.data.interactions import Interactions
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
    split = make_split(data, "cold_items", 0.25)
    cold = np.flatnonzero(split.candidates)
    assert len(cold) == 5
    assert not split.train.frame["item_index"].is_in(cold.tolist()).any()
    assert split.test["item_index"].is_in(cold.tolist()).all()
