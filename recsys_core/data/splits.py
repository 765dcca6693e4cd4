"""Leakage-free evaluation splits.

Every split trains on one part of the events and tests on a later (or held-out) part. Test
items a user already has in training are not relevant: the ranker never recommends seen
items, so counting them would only lower every model's recall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys_core.data.interactions import Interactions
from recsys_core.errors import InputError


@dataclass(frozen=True)
class Split:
    """A train part and the relevant test items of each evaluated user.

    Attributes:
        train: Training interactions (same vocabularies as the full data).
        test: `user_index`, `item_index` pairs to retrieve, distinct and unseen in training.
        protocol: Name of the protocol that made the split.
        candidates: (n_items,) bool mask of the items ranked in evaluation; None = all.
    """

    train: Interactions
    test: pl.DataFrame
    protocol: str
    candidates: np.ndarray | None = None

    @property
    def test_users(self) -> np.ndarray:
        return self.test["user_index"].unique().sort().to_numpy()

    def fingerprint(self) -> str:
        return f"{self.protocol}:{self.train.fingerprint()}:{self.test.height}"


def _finish(data: Interactions, train: pl.DataFrame, test: pl.DataFrame, protocol: str) -> Split:
    seen = train.select("user_index", "item_index").unique()
    test = (
        test.select("user_index", "item_index")
        .unique()
        .join(seen, on=["user_index", "item_index"], how="anti")
        .join(seen.select("user_index").unique(), on="user_index", how="semi")
        .sort(["user_index", "item_index"])
    )
    if train.is_empty() or test.is_empty():
        raise InputError(
            f"{protocol} split left an empty train or test part "
            f"({train.height} train events, {test.height} test pairs): too few events to evaluate"
        )
    return Split(train=data.with_frame(train), test=test, protocol=protocol)


def global_temporal(data: Interactions, test_fraction: float = 0.2) -> Split:
    """Train on events before a global time cutoff, test on those after it.

    The cutoff is the timestamp below which `1 - test_fraction` of events fall; test users
    must have at least one training event.
    """
    ts = data.frame["timestamp"]
    cutoff = ts.quantile(1.0 - test_fraction, interpolation="higher")
    train = data.frame.filter(pl.col("timestamp") < cutoff)
    test = data.frame.filter(pl.col("timestamp") >= cutoff)
    return _finish(data, train, test, "global_temporal")


def cold_items(data: Interactions, test_fraction: float = 0.1, seed: int = 0) -> Split:
    """Hold a random `test_fraction` of the items with events out of training entirely.

    Training keeps every event of the other items; the test asks each user with training
    history to retrieve their held-out items, ranked among the held-out items only. Models
    that know items only from events cannot rank them; text-capable models can.
    """
    with_events = data.frame["item_index"].unique().sort().to_numpy()
    rng = np.random.default_rng(seed)
    n_cold = max(1, round(len(with_events) * test_fraction))
    cold = np.sort(rng.choice(with_events, size=n_cold, replace=False))
    is_cold = pl.col("item_index").is_in(cold.tolist())
    split = _finish(data, data.frame.filter(~is_cold), data.frame.filter(is_cold), "cold_items")
    mask = np.zeros(data.n_items, dtype=bool)
    mask[cold] = True
    return Split(split.train, split.test, split.protocol, candidates=mask)


PROTOCOLS = {"global_temporal": global_temporal, "cold_items": cold_items}


def make_split(data: Interactions, protocol: str, test_fraction: float = 0.2) -> Split:
    try:
        maker = PROTOCOLS[protocol]
    except KeyError:
        raise InputError(
            f"unknown evaluation protocol {protocol!r} (known: {', '.join(PROTOCOLS)})"
        ) from None
    return maker(data, test_fraction)
