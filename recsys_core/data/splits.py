"""Leakage-free evaluation splits.

Every split trains on one part of the events and tests on a later (or held-out) part. Test
items a user already has in training are not relevant: the ranker never recommends seen
items, so counting them would only lower every model's recall.

Protocols:
- `global_temporal`: one time cutoff for everybody; nothing after it is in training. The
  strictest: no model sees the future of any user.
- `user_temporal`: the latest `test_fraction` of each user's items (by first interaction).
  Every user is evaluated; other users' later events may be in training.
- `leave_one_out`: each user's latest item; the usual protocol of sequential models.
- `user_random`: a random `test_fraction` of each user's items (default 25%), as in
  published comparison tables (e.g. the Microsoft Recommenders ML-100K tables).
- `cold_items`: a random 10% of items held out of training entirely, ranked among themselves;
  only models that read item text can rank them.

Splits assign whole (user, item) pairs: every event of a test pair leaves training, so a
repeated interaction can never leak its own answer.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _user_pairs(data: Interactions) -> pl.DataFrame:
    """Distinct (user, item) pairs with the time the user first met the item, and the
    pair's position in the user's chronological order (`pos`, 0 = oldest) and count `n`."""
    return (
        data.frame.group_by("user_index", "item_index")
        .agg(pl.col("timestamp").min().alias("first_seen"))
        .sort(["user_index", "first_seen", "item_index"])
        .with_columns(
            pos=pl.int_range(pl.len()).over("user_index"),
            n=pl.len().over("user_index"),
        )
    )


def _split_pairs(data: Interactions, test_pairs: pl.DataFrame, protocol: str) -> Split:
    """Train on every event whose pair is not a test pair; test on the test pairs."""
    keys = test_pairs.select("user_index", "item_index")
    train = data.frame.join(keys, on=["user_index", "item_index"], how="anti")
    return _finish(data, train, keys, protocol)


def _test_count(n: pl.Expr, test_fraction: float) -> pl.Expr:
    """Test pairs per user: the rounded fraction, at least one, leaving one to train on."""
    return (n * test_fraction).round().clip(1).cast(pl.Int64).clip(upper_bound=n - 1)


def global_temporal(data: Interactions, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """Train on events before a global time cutoff, test on those after it.

    The cutoff is the timestamp below which `1 - test_fraction` of events fall; test users
    must have at least one training event.
    """
    ts = data.frame["timestamp"]
    cutoff = ts.quantile(1.0 - test_fraction, interpolation="higher")
    train = data.frame.filter(pl.col("timestamp") < cutoff)
    test = data.frame.filter(pl.col("timestamp") >= cutoff)
    return _finish(data, train, test, "global_temporal")


def user_temporal(data: Interactions, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """Each user's latest `test_fraction` of items (by first interaction) are the test.

    Ties in time are broken by item index, so the split is the same on every run.
    """
    pairs = _user_pairs(data)
    test = pairs.filter(pl.col("pos") >= pl.col("n") - _test_count(pl.col("n"), test_fraction))
    return _split_pairs(data, test, "user_temporal")


def leave_one_out(data: Interactions, test_fraction: float = 0.0, seed: int = 0) -> Split:
    """Each user's latest item is the test (users with a single item are not evaluated)."""
    pairs = _user_pairs(data)
    test = pairs.filter((pl.col("pos") == pl.col("n") - 1) & (pl.col("n") > 1))
    return _split_pairs(data, test, "leave_one_out")


def user_random(data: Interactions, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """A random `test_fraction` of each user's items are the test (seeded, reproducible)."""
    pairs = _user_pairs(data)
    rng = np.random.default_rng(seed)
    test = (
        pairs.with_columns(draw=pl.Series(rng.random(pairs.height)))
        .with_columns(order=pl.col("draw").rank("ordinal").over("user_index") - 1)
        .filter(pl.col("order") < _test_count(pl.col("n"), test_fraction))
    )
    return _split_pairs(data, test, "user_random")


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


SplitMaker = Callable[..., Split]
PROTOCOLS: dict[str, SplitMaker] = {
    "global_temporal": global_temporal,
    "user_temporal": user_temporal,
    "leave_one_out": leave_one_out,
    "user_random": user_random,
    "cold_items": cold_items,
}
# each protocol's usual test fraction, used when none is given
DEFAULT_FRACTIONS = {
    "global_temporal": 0.2,
    "user_temporal": 0.2,
    "leave_one_out": 0.0,
    "user_random": 0.25,
    "cold_items": 0.1,
}


def check_protocol(protocol: str) -> str:
    """Return `protocol` if it is known; raise InputError naming the known ones otherwise."""
    if protocol not in PROTOCOLS:
        raise InputError(
            f"unknown evaluation protocol {protocol!r} (known: {', '.join(PROTOCOLS)})"
        )
    return protocol


def make_split(
    data: Interactions, protocol: str, test_fraction: float | None = None, seed: int = 0
) -> Split:
    """Split `data` by a named protocol.

    Args:
        data: All interactions.
        protocol: One of `PROTOCOLS`.
        test_fraction: Share of events, items or pairs to test on; None = the protocol's
            usual value (`DEFAULT_FRACTIONS`). Ignored by `leave_one_out`.
        seed: Seed of the random protocols (`user_random`, `cold_items`).
    """
    maker = PROTOCOLS[check_protocol(protocol)]
    fraction = DEFAULT_FRACTIONS[protocol] if test_fraction is None else test_fraction
    if protocol != "leave_one_out" and not 0.0 < fraction < 1.0:
        raise InputError(f"{protocol}: test fraction must be between 0 and 1, got {fraction}")
    return maker(data, fraction, seed=seed)
