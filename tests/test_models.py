"""Conformance tests every model must pass; each model only supplies how to build it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_core.models import MODELS, FitOptions, TrainingData, create
from recsys_core.ranking import top_k
from recsys_core.registry.artifacts import ModelBundle, load_bundle, save_bundle
from tests.conftest import group_embeddings

# models that must recover the planted structure (popularity cannot, by design)
PERSONALIZED = ["ease", "content"]


def fit(name, data, **params):
    model = create(name, params)
    embeddings = group_embeddings(data) if model.uses_text else None
    model.fit(TrainingData(data, embeddings), FitOptions(seed=0))
    return model


@pytest.mark.parametrize("name", sorted(MODELS))
class TestModelContract:
    def test_scores_have_one_row_per_user_and_one_column_per_item(self, name, planted):
        data, _ = planted
        model = fit(name, data)
        scores = model.score(data.histories(np.arange(5)))
        assert scores.shape == (5, data.n_items)
        assert scores.dtype == torch.float32
        assert torch.isfinite(scores).all()

    def test_state_round_trip_scores_identically(self, name, planted, tmp_path):
        data, _ = planted
        model = fit(name, data)
        bundle = ModelBundle.from_fit(model, data)
        loaded = load_bundle(save_bundle(bundle, tmp_path / "bundle"))
        histories = data.histories()
        assert loaded.items == data.items and loaded.users == data.users
        torch.testing.assert_close(loaded.model.score(histories), model.score(histories))
        assert loaded.model.params() == model.params()

    def test_fit_is_deterministic(self, name, planted):
        data, _ = planted
        h = data.histories()
        torch.testing.assert_close(fit(name, data).score(h), fit(name, data).score(h))

    def test_reasons_come_from_the_users_history(self, name, planted):
        data, _ = planted
        model = fit(name, data)
        histories = data.histories()
        ranked = top_k(model, histories, 3, explain=True)
        for row in range(len(histories)):
            seen = set(histories.row(row).tolist())
            reasons = ranked.reasons[row][ranked.reasons[row] >= 0]
            assert set(reasons.tolist()) <= seen


@pytest.mark.parametrize("name", PERSONALIZED)
def test_planted_item_is_each_users_top_recommendation(name, planted):
    data, expected = planted
    model = fit(name, data)
    users = [u for u in expected]
    index = data.users.index(users)
    ranked = top_k(model, data.histories(index), 1)
    got = data.items.lookup(ranked.items[:, 0]).to_list()
    assert got == [expected[u] for u in users]


def test_popularity_ranks_by_distinct_users(planted):
    data, _ = planted
    model = fit("popularity", data)
    counts = data.item_counts()
    scores = model.score(data.histories(np.arange(1)))[0].numpy()
    np.testing.assert_allclose(scores, counts)


def test_popularity_decay_prefers_recent_items(planted):
    data, _ = planted
    plain = fit("popularity", data).popularity
    decayed = fit("popularity", data, half_life_days=0.01).popularity
    newest = data.frame.sort("timestamp")["item_index"][-1]
    assert decayed.argmax().item() == newest
    assert not torch.equal(plain, decayed)


def test_ease_explains_with_the_co_occurring_item(planted):
    data, expected = planted
    model = fit("ease", data)
    user = next(iter(expected))
    histories = data.histories(data.users.index([user]))
    ranked = top_k(model, histories, 1, explain=True)
    group_items = set(histories.row(0).tolist())
    assert ranked.reasons[0, 0] in group_items


def test_ease_refuses_a_catalog_too_large_for_its_dense_matrix(planted):
    from recsys_core.errors import InputError

    data, _ = planted
    with pytest.raises(InputError, match="max_items"):
        fit("ease", data, max_items=5)


def test_content_model_ranks_an_item_without_events(planted):
    data, expected = planted
    # drop every event of one planted item: only its text can bring it back
    cold = expected[next(iter(expected))]
    cold_index = int(data.items.index([cold])[0])
    warm = data.with_frame(data.frame.filter(data.frame["item_index"] != cold_index))
    model = fit("content", warm)
    user = next(iter(expected))
    ranked = top_k(model, warm.histories(warm.users.index([user])), 1)
    assert ranked.items[0, 0] == cold_index


def test_unknown_model_and_bad_params_are_input_errors():
    from recsys_core.errors import InputError

    with pytest.raises(InputError, match="unknown model"):
        create("nope")
    with pytest.raises(InputError, match="bad parameters"):
        create("ease", {"lambda_": 3})
