"""`content(whiten=...)`: text vectors whitened over the catalog before the profile match.

A planted catalog where one shared direction dominates every text vector, as it does for
sentence encoders: each group's items carry the shared direction strongly and their group's
own direction weakly, and one new item per group (no events) carries its group's direction
strongly and the shared one weakly. Raw cosines to a user's profile rank the other groups'
items (all shared direction) above the user's group's new item; after whitening the shared
direction no longer drowns the group's, and the new item comes first.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from recsys_core.data.interactions import Interactions, UserHistories
from recsys_core.models import create
from recsys_core.ranking import top_k
from recsys_core.testing.recommenders import events_frame, fit_for_test

GROUPS, PER_GROUP, USERS = 6, 5, 4
NEW = PER_GROUP  # index within its group of the group's new item


def planted_catalog() -> tuple[Interactions, torch.Tensor]:
    """Interactions (each user buys 3 of one group's items) and (I, D) text vectors."""
    rng = np.random.default_rng(0)
    dim = GROUPS + 4
    ids, vectors = [], []
    for g in range(GROUPS):
        for k in range(PER_GROUP + 1):
            shared, own = (1.0, 3.0) if k == NEW else (3.0, 1.0)
            vector = 0.1 * rng.normal(size=dim)
            vector[0] += shared
            vector[1 + g] += own
            ids.append(f"g{g}-{k}")
            vectors.append(vector)
    rows, t = [], 1_000_000
    for g in range(GROUPS):
        for u in range(USERS):
            for k in rng.choice(PER_GROUP, size=3, replace=False):
                t += 60
                rows.append((f"u{g}-{u}", f"g{g}-{k}", t))
    data = Interactions.from_events(events_frame(rows), catalog_item_ids=pl.Series(ids))
    order = [ids.index(i) for i in data.items.ids.to_list()]
    text = torch.nn.functional.normalize(torch.tensor(np.array(vectors)[order]).float(), dim=1)
    return data, text


def new_item_hits(model, data: Interactions) -> float:
    """Share of users whose group's new item is in the top 3 unseen items of the catalog (the
    group's two other unseen items may come before it)."""
    histories: UserHistories = data.histories()
    ranked = top_k(model, histories, 3).items
    users = data.users.lookup(histories.user_index).to_list()  # "u<group>-<n>"
    answers = data.items.index([f"g{u[1:].split('-')[0]}-{NEW}" for u in users])
    return float(np.mean([a in row for a, row in zip(answers, ranked, strict=True)]))


@pytest.mark.parametrize("learned", [False, True])
def test_whitened_profile_ranks_the_groups_new_item_first(learned):
    data, text = planted_catalog()
    raw = fit_for_test("content", data, embeddings=text, learned=learned)
    whitened = fit_for_test("content", data, embeddings=text, learned=learned, whiten=1.0)
    assert new_item_hits(raw, data) == 0.0  # the shared direction wins without whitening
    assert new_item_hits(whitened, data) == 1.0


def test_a_whitened_model_scores_the_same_after_loading():
    data, text = planted_catalog()
    model = fit_for_test("content", data, embeddings=text, whiten=1.0)
    loaded = create("content", {"whiten": 1.0})
    loaded.load_state_dict(model.state_dict())
    histories = data.histories()
    torch.testing.assert_close(loaded.score(histories), model.score(histories))
