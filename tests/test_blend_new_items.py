"""The blend ranks items without training events (new items) by the members that can score
them, instead of by the weights that suit items with a history.

A planted catalog: groups of items share a rare word in their text; within a group, users
buy from one of several clusters, which only events tell apart. Each group also has one new
item, with text and no events. Among items with events, a co-occurrence model knows the
user's cluster and outranks the text match; among the new items it knows nothing, and the
text match to the user's last item finds the user's group.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file, save_file

from recsys_core.data.interactions import Interactions, UserHistories
from recsys_core.models import Capabilities, FitOptions, Recommender, TrainingData, create
from recsys_core.models.registry import MODELS
from recsys_core.ranking import top_k
from recsys_core.testing.recommenders import events_frame

COMMON = ["stapler", "paper", "pen", "blue", "black", "pack", "desk", "ink", "large", "refill"]
GROUPS, CLUSTERS, PER_CLUSTER, USERS_PER_CLUSTER = 12, 4, 5, 8
NEW = CLUSTERS * PER_CLUSTER  # index within its group of the group's new item
TEXT_MEMBER = "content(learned=false, half_life=0.5)"  # text cosine to the user's last item


@dataclass(frozen=True)
class EventsOnlyConfig:
    dim: int = 16


class EventsOnly(Recommender):
    """Co-occurrence counts for items with events; items without events score by vectors
    that never left their random start (as in a factor model that never trained them), so
    among new items its scores are noise on the scale of its others."""

    name = "events_only"
    config_class = EventsOnlyConfig
    capabilities = Capabilities()

    def fit(self, data, options):
        x = data.interactions.matrix()
        self.counts = torch.from_numpy((x.T @ x).toarray().astype(np.float32)).contiguous()
        self.counts.fill_diagonal_(0.0)
        generator = torch.Generator().manual_seed(options.seed)
        self.vectors = torch.randn(data.n_items, self.config.dim, generator=generator)
        self.new = torch.from_numpy(data.interactions.item_counts() == 0)
        self.n_items = data.n_items
        return []

    def score(self, histories):
        rows = torch.from_numpy(histories.csr().toarray().astype(np.float32))  # (B, I)
        scores = rows @ self.counts
        noise = (rows @ self.vectors) @ self.vectors.T  # (B, I)
        scale = scores[:, ~self.new].std(1, keepdim=True) / noise.std(1, keepdim=True)
        return torch.where(self.new, noise * scale, scores)

    def state_dict(self):
        return {"counts": self.counts, "vectors": self.vectors, "new": self.new}

    def load_state_dict(self, state):
        self.counts, self.vectors, self.new = state["counts"], state["vectors"], state["new"]
        self.n_items = len(self.counts)


@pytest.fixture
def events_only(monkeypatch):
    monkeypatch.setitem(MODELS, EventsOnly.name, EventsOnly)  # undone after the test


def bag_of_words(texts: list[str], dim: int = 64) -> torch.Tensor:
    """Unit-length sum of a fixed random vector per word (a stand-in for a sentence
    encoder): texts that share a word are close. (N, dim)."""

    def word(w: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(w.encode())).normal(size=dim)

    vectors = np.array([sum(word(w) for w in text.split()) for text in texts])
    return torch.nn.functional.normalize(torch.tensor(vectors, dtype=torch.float32), dim=1)


def planted_catalog(with_new_items: bool = True):
    """Interactions, text vectors, and test users: three items of one cluster, and their
    group's new item as the answer (left out of the catalog with `with_new_items=False`)."""
    rng = np.random.default_rng(0)
    ids, texts = [], []
    for g in range(GROUPS):
        for k in range(NEW + 1):
            ids.append(f"g{g}-{k}")
            texts.append(" ".join([*rng.choice(COMMON, size=2, replace=False), f"ridgeback-{g}"]))
    rows, t = [], 1_000_000
    for g in range(GROUPS):
        for c in range(CLUSTERS):
            for u in range(USERS_PER_CLUSTER):
                for k in rng.choice(PER_CLUSTER, size=4, replace=False):
                    t += 60
                    rows.append((f"u{g}-{c}-{u}", f"g{g}-{c * PER_CLUSTER + k}", t))
    catalog = ids if with_new_items else [i for i in ids if not i.endswith(f"-{NEW}")]
    data = Interactions.from_events(events_frame(rows), catalog_item_ids=pl.Series(catalog))
    text = bag_of_words([texts[ids.index(i)] for i in data.items.ids.to_list()])
    tests = []
    for g in range(GROUPS):
        c = rng.integers(CLUSTERS)
        history = [f"g{g}-{c * PER_CLUSTER + k}" for k in rng.choice(PER_CLUSTER, 3, replace=False)]
        tests.append((history, f"g{g}-{NEW}"))
    return data, text, tests


def _histories(data: Interactions, tests) -> UserHistories:
    items = [data.items.index(history) for history, _ in tests]
    return UserHistories(
        np.full(len(tests), -1),
        np.concatenate([[0], np.cumsum([len(h) for h in items])]),
        np.concatenate(items).astype(np.int64),
        np.concatenate([np.arange(len(h)) for h in items]),
        data.n_items,
    )


def hits_among_new_items(model: Recommender, data: Interactions, tests, k: int = 3) -> float:
    """Share of test users whose group's new item is in the top `k` of the new items."""
    new = data.item_counts() == 0
    answers = data.items.index([answer for _, answer in tests])
    assert new[answers].all()  # the answers have no training events
    ranked = top_k(model, _histories(data, tests), k, exclude_items=~new).items
    return float(np.mean([a in row for a, row in zip(answers, ranked, strict=True)]))


def test_new_items_are_ranked_by_the_members_that_can_score_them(events_only):
    data, text, tests = planted_catalog()
    blend = create("blend", {"members": ["events_only", TEXT_MEMBER]})
    blend.fit(TrainingData(data, text), FitOptions(seed=0))
    assert hits_among_new_items(blend, data, tests) >= 0.8
    # the text match leads among new items: tuned on items held out as new in validation
    assert blend.cold_weights is not None and blend.cold_weights[1] > blend.cold_weights[0]
    # with one weight vector for every item, the member's noise buries the text match
    blend.cold_weights = None
    assert hits_among_new_items(blend, data, tests) <= 0.5


def test_the_new_items_weights_save_and_load(events_only, tmp_path):
    data, text, tests = planted_catalog()
    blend = create("blend", {"members": ["events_only", TEXT_MEMBER]})
    blend.fit(TrainingData(data, text), FitOptions(seed=0))
    save_file(blend.state_dict(), tmp_path / "blend.safetensors")
    again = create("blend", {"members": list(blend.config.members)})
    again.load_state_dict(load_file(tmp_path / "blend.safetensors"))
    torch.testing.assert_close(again.cold_weights, blend.cold_weights)
    histories = _histories(data, tests)
    torch.testing.assert_close(again.score(histories), blend.score(histories))


def test_without_new_items_the_blend_has_one_weight_vector(events_only):
    data, text, _ = planted_catalog(with_new_items=False)
    assert (data.item_counts() > 0).all()
    blend = create("blend", {"members": ["events_only", TEXT_MEMBER]})
    blend.fit(TrainingData(data, text), FitOptions(seed=0))
    assert blend.cold_weights is None and "cold_weights" not in blend.state_dict()


class Flood(EventsOnly):
    """Co-occurrence counts, as `events_only`, for items with events, and every item without
    events just above all of them: a member that shows new items first."""

    name = "flood"

    def score(self, histories):
        rows = torch.from_numpy(histories.csr().toarray().astype(np.float32))  # (B, I)
        scores = rows @ self.counts
        top = scores.max(1, keepdim=True).values + 1.0
        return torch.where(self.new, top + 1e-3 * torch.arange(self.n_items).float(), scores)


def test_the_weights_for_items_with_events_are_tuned_without_the_new_items(
    events_only, monkeypatch
):
    monkeypatch.setitem(MODELS, Flood.name, Flood)
    data, text, _ = planted_catalog()
    tuned = {}
    for first in ("events_only", "flood"):
        blend = create("blend", {"members": [first, TEXT_MEMBER]})
        epochs = blend.fit(TrainingData(data, text), FitOptions(seed=0))
        assert blend.cold_weights is not None
        tuned[first] = (epochs[-1]["validation_ndcg@10"], float(blend.weights[0]))
    # on items with events `flood` ranks as `events_only` does; the new items it puts first
    # can never be held out and take the new-item weights, so they do not count against it
    assert tuned["flood"][1] > 0
    assert tuned["flood"][0] >= 0.95 * tuned["events_only"][0]
