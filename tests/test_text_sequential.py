"""The text-fused sequential model continues a sequence with an item it never saw in training,
because the item's text names it.

A planted catalog: pairs of items that share a rare word in their titles (`... ridgeback-17`),
the rest of each title drawn from common words. In training, users meet random items, then the
two items of a pair in a row, so "the next item shares the rare word of the last one" is the
only order there is. Held-out pairs have a first item that users meet (among the random ones)
and a second item with no events at all: only text can put it first after its partner.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from recsys_core.data.interactions import Interactions, UserHistories
from recsys_core.models import FitOptions, TrainingData, create
from recsys_core.ranking import top_k
from recsys_core.testing.recommenders import events_frame

COMMON = ["stapler", "paper", "pen", "blue", "black", "pack", "desk", "ink", "large", "refill"]
TRAIN_PAIRS, COLD_PAIRS, USERS_PER_PAIR = 60, 30, 6


def bag_of_words(texts: list[str], dim: int = 64) -> torch.Tensor:
    """Unit-length sum of a fixed random vector per word: texts that share a word are close
    (a stand-in for a sentence encoder, with no model download). (N, dim)."""

    def word(w: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(w.encode())).normal(size=dim)

    vectors = np.array([sum(word(w) for w in text.split()) for text in texts])
    return torch.nn.functional.normalize(torch.tensor(vectors, dtype=torch.float32), dim=1)


def planted_catalog():
    """Interactions over warm pairs (both items seen, in order) and cold pairs (the first
    item seen at random, the second never), the text vectors, and the test users: each a
    history ending with a cold pair's first item, and the item that must come next."""
    rng = np.random.default_rng(0)
    pairs = TRAIN_PAIRS + COLD_PAIRS
    ids, texts = [], []
    for p in range(pairs):
        for side in ("a", "b"):
            ids.append(f"{side}{p}")
            texts.append(" ".join([*rng.choice(COMMON, size=3, replace=False), f"ridgeback-{p}"]))
    index = {item: i for i, item in enumerate(ids)}
    openers = [f"a{p}" for p in range(pairs)]  # items users meet at random
    rows, t = [], 1_000_000
    for p in range(TRAIN_PAIRS):
        for u in range(USERS_PER_PAIR):
            for item in [*rng.choice(openers, size=2, replace=False), f"a{p}", f"b{p}"]:
                t += 60
                rows.append((f"u{p}-{u}", str(item), t))
    data = Interactions.from_events(events_frame(rows), catalog_item_ids=_series(ids))
    text = bag_of_words([texts[index[i]] for i in data.items.ids.to_list()])
    tests = []
    for p in range(TRAIN_PAIRS, pairs):
        history = [str(i) for i in rng.choice(openers[:TRAIN_PAIRS], size=2, replace=False)]
        tests.append(([*history, f"a{p}"], f"b{p}"))
    return data, text, tests


def _series(ids: list[str]):
    import polars as pl

    return pl.Series(ids)


def hits_at_10(use_text: bool, **extra) -> float:
    """Share of test users whose cold next item is in the model's top 10."""
    data, text, tests = planted_catalog()
    cold = data.items.index([target for _, target in tests])
    assert (data.item_counts()[cold] == 0).all()  # the answers have no training events
    model = create(
        "sasrec",
        {"dim": 32, "layers": 1, "heads": 1, "max_len": 8, "epochs": 40, "batch_size": 32,
         "lr": 0.005, "dropout": 0.1, "text_dropout": 0.0, "use_text": use_text, "threads": 1,
         **extra},
    )  # fmt: skip
    model.fit(TrainingData(data, text if use_text else None), FitOptions(seed=0))
    items = [data.items.index(history) for history, _ in tests]
    histories = UserHistories(
        np.full(len(tests), -1),
        np.concatenate([[0], np.cumsum([len(h) for h in items])]),
        np.concatenate(items).astype(np.int64),
        np.concatenate([np.arange(len(h)) for h in items]),
        data.n_items,
    )
    ranked = top_k(model, histories, 10).items  # (users, 10), seen items excluded
    return float(np.mean([c in row for c, row in zip(cold, ranked, strict=True)]))


def test_the_text_fused_model_continues_with_an_item_it_never_saw():
    assert hits_at_10(use_text=True) >= 0.6


@pytest.mark.parametrize("use_text", [False])
def test_without_text_the_new_item_is_out_of_reach(use_text):
    # 60 items without events tie at the bottom: by chance about none reach the top 10
    assert hits_at_10(use_text) <= 0.2
