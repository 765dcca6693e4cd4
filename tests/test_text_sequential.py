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
import polars as pl
import pytest
import torch

from recsys_core.data.interactions import Interactions, UserHistories
from recsys_core.models import FitOptions, TrainingData, create
from recsys_core.models.registry import ModelSpec
from recsys_core.models.sasrec import budgeted
from recsys_core.pipeline.train import _adapted_defaults
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
    data = Interactions.from_events(events_frame(rows), catalog_item_ids=pl.Series(ids))
    text = bag_of_words([texts[index[i]] for i in data.items.ids.to_list()])
    tests = []
    for p in range(TRAIN_PAIRS, pairs):
        history = [str(i) for i in rng.choice(openers[:TRAIN_PAIRS], size=2, replace=False)]
        tests.append(([*history, f"a{p}"], f"b{p}"))
    return data, text, tests


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


def test_without_text_the_new_item_is_out_of_reach():
    # the 30 answers have no events and, without text, no representation: none is reached
    assert hits_at_10(use_text=False) <= 0.2


DEFAULTS = [ModelSpec.parse(s) for s in ("popularity", "ease", "content", "blend")]


def _log(per_user: int, users: int = 40, same_time: bool = False) -> Interactions:
    rows = [
        (f"u{u}", f"i{(u + j) % 50}", 1_000_000 + (0 if same_time else 60 * j))
        for u in range(users)
        for j in range(per_user)
    ]
    return Interactions.from_events(events_frame(rows))


def test_the_sequential_text_model_joins_ordered_short_histories_with_text():
    data, text = _log(6), torch.ones(50, 8)
    specs, notes = _adapted_defaults(DEFAULTS, data, text)
    sequential = [str(s) for s in specs if s.name == "sasrec"]
    assert len(sequential) == 1 and "epochs=20" in sequential[0]
    blend = specs[-1].create()  # the blend stays last and gains it, with the last-item match
    assert blend.name == "blend" and sequential[0] in blend.config.members
    assert "content(learned=false, half_life=0.5, whiten=1.0)" in blend.config.members
    assert "content(whiten=1.0)" in blend.config.members  # the whitened profile match
    assert "joins" in notes[0]


@pytest.mark.parametrize(
    ("data", "text", "why"),
    [
        (_log(6), None, "no text"),
        (_log(6, same_time=True), torch.ones(50, 8), "no order: one timestamp per user"),
        (_log(2), torch.ones(50, 8), "too few items per user"),
        (_log(45), torch.ones(50, 8), "long histories"),
    ],
)
def test_the_defaults_stay_as_they_are_elsewhere(data, text, why):
    assert _adapted_defaults(DEFAULTS, data, text) == (DEFAULTS, []), why


def test_the_fit_is_sized_to_its_budget():
    office = budgeted(53_000, 2_400, 4_900)
    assert office == {"epochs": 20, "negatives": 0}
    # Amazon 5-core categories a few times Office's size fit fewer epochs, every item scored
    grocery, beauty = budgeted(151_000, 8_700, 14_700), budgeted(198_000, 12_100, 22_400)
    for params in (grocery, beauty):
        assert params is not None and 3 <= params["epochs"] < 20 and params["negatives"] == 0
    assert beauty["epochs"] < grocery["epochs"]
    assert budgeted(60_000, 25_000, 5_000)["negatives"] > 0  # a large catalog samples
    assert budgeted(50_000_000, 2_400, 500_000) is None  # too large for the budget: left out


def test_a_blend_of_members_that_share_the_text_vectors_saves(tmp_path):
    from safetensors.torch import load_file, save_file

    data, text, _ = planted_catalog()
    blend = create("blend", {"members": ["content", "content(learned=false, half_life=0.5)"]})
    blend.fit(TrainingData(data, text), FitOptions(seed=0))
    blend.weights = torch.tensor([0.5, 0.5])  # both members kept, whatever the tuning chose
    save_file(blend.state_dict(), tmp_path / "blend.safetensors")
    again = create("blend", {"members": list(blend.config.members)})
    again.load_state_dict(load_file(tmp_path / "blend.safetensors"))
    histories = data.histories(np.arange(5))
    assert torch.allclose(again.score(histories), blend.score(histories))
