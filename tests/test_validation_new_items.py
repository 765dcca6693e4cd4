"""The night's validation judges models on the items it can judge: a catalog item without a
single event can never be held out, so showing it must not count against a model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from recsys_core.data.interactions import Interactions
from recsys_core.data.splits import make_split
from recsys_core.evaluation import evaluate
from recsys_core.models import Capabilities, FitOptions, Recommender, TrainingData
from recsys_core.pipeline.train import judged_items
from recsys_core.testing.recommenders import events_frame

ITEMS, NEW = 30, 6  # the last NEW catalog items have no events at all


@dataclass(frozen=True)
class _Config:
    boost_new: bool = False


class NextItem(Recommender):
    """Scores the item after the user's newest one highest (the planted sequence), and, with
    `boost_new`, every item without events higher still, as a model that shows new items."""

    name = "next_item"
    config_class = _Config
    capabilities = Capabilities()

    def fit(self, data, options):
        self.n_items = data.n_items
        self.new = torch.from_numpy(data.interactions.item_counts() == 0)
        return []

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def score(self, histories):
        scores = torch.zeros(len(histories), self.n_items)
        for row in range(len(histories)):
            last = int(histories.row(row)[-1])
            scores[row, (last + 1) % (ITEMS - NEW)] = 1.0
        if self.config.boost_new:
            scores[:, self.new] = 2.0 + torch.arange(int(self.new.sum())).float()
        return scores


def _night() -> Interactions:
    rows, t = [], 1_000_000
    for u in range(40):
        for step in range(6):  # each user walks the items with events in order
            t += 60
            rows.append((f"u{u}", f"i{(u + step) % (ITEMS - NEW):02d}", t))
    catalog = pl.Series([f"i{i:02d}" for i in range(ITEMS)])
    return Interactions.from_events(events_frame(rows), catalog_item_ids=catalog)


def test_items_without_events_are_left_out_of_the_validation_ranking():
    data = _night()
    split = judged_items(make_split(data, "leave_one_out", seed=0), data)
    touched = data.item_counts() > 0
    assert split.candidates is not None and (split.candidates == touched).all()
    assert int((~split.candidates).sum()) == NEW

    fitted = {}
    for boost in (False, True):
        model = NextItem(_Config(boost_new=boost))
        model.fit(TrainingData(split.train, None), FitOptions())
        fitted[boost] = evaluate(model, split, (5,))["ndcg@5"]
    assert fitted[False] > 0.9  # the planted next item is found
    assert np.isclose(fitted[True], fitted[False])  # showing new items costs nothing here

    # the plain split counts each new item shown as a miss
    plain = make_split(data, "leave_one_out", seed=0)
    model = NextItem(_Config(boost_new=True))
    model.fit(TrainingData(plain.train, None), FitOptions())
    assert evaluate(model, plain, (5,))["ndcg@5"] < 0.5 * fitted[False]


def test_a_catalog_whose_items_all_have_events_keeps_its_split():
    rows = [(f"u{u}", f"i{(u + s) % 8}", 1_000_000 + 60 * (6 * u + s)) for u in range(20)
            for s in range(5)]  # fmt: skip
    data = Interactions.from_events(events_frame(rows))
    split = make_split(data, "leave_one_out", seed=0)
    assert judged_items(split, data) is split
