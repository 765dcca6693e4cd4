"""Conformance tests every model must pass; each model only supplies how to build it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_core.data.interactions import UserHistories
from recsys_core.models import FitOptions, TrainingData, create, registered
from recsys_core.models.base import align_right, padded_history
from recsys_core.models.ease import map_cold_columns
from recsys_core.models.registry import format_spec, parse_spec
from recsys_core.ranking import top_k
from recsys_core.testing.recommenders import RecommenderContract, fit_for_test


@pytest.fixture(params=sorted(registered()))
def name(request) -> str:
    return request.param


class TestEveryModel(RecommenderContract):
    """The conformance suite, for every registered model."""


def fit(name, data, **params):
    return fit_for_test(name, data, **params)


@pytest.mark.parametrize("name", ["mf"])
def test_a_folded_in_user_gets_the_planted_item(name, planted):
    data, expected = planted
    model = fit(name, data)
    user = next(iter(expected))
    h = data.histories(data.users.index([user]))
    as_new = UserHistories(np.array([-1]), h.indptr, h.items, h.timestamps, h.n_items)
    ranked = top_k(model, as_new, 1)
    assert data.items.lookup(ranked.items[:, 0]).to_list() == [expected[user]]


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


@pytest.mark.parametrize("name", ["ease", "itemknn", "als"])
def test_explanation_is_an_item_of_the_same_group(name, planted):
    data, expected = planted
    model = fit(name, data)
    for user in list(expected)[::6]:
        histories = data.histories(data.users.index([user]))
        ranked = top_k(model, histories, 1, explain=True)
        assert ranked.reasons[0, 0] in set(histories.row(0).tolist())
        group = int(data.items.lookup([ranked.items[0, 0]])[0][1:]) // 5
        assert int(data.items.lookup([ranked.reasons[0, 0]])[0][1:]) // 5 == group


def test_ease_refuses_a_catalog_too_large_for_its_dense_matrix(planted):
    from recsys_core.errors import InputError

    data, _ = planted
    with pytest.raises(InputError, match="max_items"):
        fit("ease", data, max_items=5)


def test_ease_history_recency_changes_scores_but_not_weights(planted):
    data, _ = planted
    plain, recent = fit("ease", data), fit("ease", data, history_half_life=1.0)
    torch.testing.assert_close(plain.weights, recent.weights)
    h = data.histories()
    assert not torch.allclose(plain.score(h), recent.score(h))


def test_ease_with_text_ranks_an_item_without_events(planted):
    data, expected = planted
    cold = expected[next(iter(expected))]
    cold_index = int(data.items.index([cold])[0])
    warm = data.with_frame(data.frame.filter(data.frame["item_index"] != cold_index))
    model = fit("ease", warm, text_weight=5.0, reg=1.0)
    assert model.uses_text
    user = next(iter(expected))
    ranked = top_k(model, warm.histories(warm.users.index([user])), 1)
    assert ranked.items[0, 0] == cold_index


def test_ease_maps_text_to_the_columns_of_items_without_events():
    rng = np.random.default_rng(0)
    n, dim = 12, 4
    weights = torch.from_numpy(rng.normal(size=(n, n)))
    weights.diagonal().zero_()
    text = torch.from_numpy(rng.normal(size=(n, dim)))
    warm = np.ones(n, dtype=bool)
    warm[[3, 7]] = False
    mapped = map_cold_columns(weights.clone(), text, warm, reg=0.5)
    # warm columns stay; cold columns are the ridge map of B[:, warm] on the warm text
    torch.testing.assert_close(mapped[:, warm], weights[:, warm])
    e = text[warm].numpy()
    lam = 0.5 * np.trace(e.T @ e) / dim
    m = weights[:, warm].numpy() @ e @ np.linalg.inv(e.T @ e + lam * np.eye(dim))
    expected = m @ text[[3, 7]].numpy().T
    expected[3, 0] = expected[7, 1] = 0.0  # diag(B) stays 0
    np.testing.assert_allclose(mapped[:, [3, 7]].numpy(), expected, rtol=1e-9, atol=1e-9)
    assert mapped[3, 3] == 0 and mapped[7, 7] == 0
    # with text wider than the warm items the map interpolates: an item whose text copies a
    # warm item's gets that item's column
    wide = torch.from_numpy(rng.normal(size=(n, 16)))
    wide[3] = wide[5]
    copied = map_cold_columns(weights.clone(), wide, warm, reg=1e-9)[:, 3]
    keep = [i for i in range(n) if i not in (3, 5)]
    torch.testing.assert_close(copied[keep], weights[keep, 5], rtol=1e-4, atol=1e-4)
    # nothing to map when every item has events
    assert map_cold_columns(weights, text, np.ones(n, dtype=bool), reg=0.5) is weights


def test_ease_gives_new_items_the_columns_of_their_nearest_known_items_by_text():
    rng = np.random.default_rng(1)
    n, dim = 12, 6
    weights = torch.from_numpy(rng.normal(size=(n, n))).float()
    weights.diagonal().zero_()
    text = torch.from_numpy(rng.normal(size=(n, dim))).float()
    warm = np.ones(n, dtype=bool)
    warm[[3, 7]] = False
    nearest = dict(reg=0.5, neighbors=3, temperature=0.2)
    mapped = map_cold_columns(weights.clone(), text, warm, **nearest, share=1.0)
    torch.testing.assert_close(mapped[:, warm], weights[:, warm])
    unit = torch.nn.functional.normalize(text, dim=1)
    known = np.flatnonzero(warm)
    for column in (3, 7):  # the softmax-weighted mean of the 3 nearest known items' columns
        cosine = (unit[known] @ unit[column]).numpy()
        near = known[np.argsort(-cosine)[:3]]
        share = np.exp(np.sort(cosine)[::-1][:3] / 0.2)
        expected = weights[:, near].numpy() @ (share / share.sum())
        expected[column] = 0.0  # diag(B) stays 0
        got = mapped[:, column].numpy()
        np.testing.assert_allclose(np.delete(got, column), np.delete(expected, column), rtol=1e-5)
        assert got[column] == 0
    # the default mix: a share of the neighbours' columns, the rest the ridge map's
    ridge = map_cold_columns(weights.clone(), text, warm, reg=0.5)
    mixed = map_cold_columns(weights.clone(), text, warm, **nearest, share=0.25)
    torch.testing.assert_close(mixed, 0.75 * ridge + 0.25 * mapped)
    # an item whose text copies a known item's takes that item's column at a low temperature
    text[3] = text[5]
    copied = map_cold_columns(weights.clone(), text, warm, 0.5, 3, 1e-3, share=1.0)[:, 3]
    keep = [i for i in range(n) if i != 3]
    torch.testing.assert_close(copied[keep], weights[keep, 5])
    assert map_cold_columns(weights, text, np.ones(n, dtype=bool), **nearest, share=1.0) is weights
    no_neighbours = map_cold_columns(weights.clone(), text, warm, 0.5, 0, 0.1, share=1.0)
    torch.testing.assert_close(no_neighbours, map_cold_columns(weights.clone(), text, warm, 0.5))


def test_ease_new_item_map_is_an_option(planted):
    data, expected = planted
    cold = int(data.items.index([expected[next(iter(expected))]])[0])
    warm = data.with_frame(data.frame.filter(data.frame["item_index"] != cold))
    neighbours = fit("ease", warm, text_weight=5.0, reg=1.0, cold_neighbor_share=0.5)
    ridge = fit("ease", warm, text_weight=5.0, reg=1.0)  # the default: the ridge map alone
    # the columns of items with events are the same fit; the new item's differ by the map
    others = [i for i in range(data.n_items) if i != cold]
    torch.testing.assert_close(neighbours.weights[:, others], ridge.weights[:, others])
    assert not torch.allclose(neighbours.weights[:, cold], ridge.weights[:, cold])


def test_content_without_learning_is_cosine_to_the_profile(planted):
    data, _ = planted
    model = fit("content", data, learned=False, half_life=None)
    h = data.histories(np.arange(2))
    profile = torch.nn.functional.normalize(
        torch.stack([model.embeddings[h.row(r)].sum(0) for r in range(2)]), dim=-1
    )
    torch.testing.assert_close(model.score(h), profile @ model.embeddings.T)


def test_als_fold_in_matches_implicits_user_step(planted):
    data, _ = planted
    model = fit("als", data)
    # the ALS normal equations hold for the folded-in vector of user 0
    h = data.histories(np.arange(1))
    users, items = model.factors(h)
    y = items.double()
    c = np.full(len(h.row(0)), model.config.alpha)
    a = y.T @ y + model.config.regularization * torch.eye(y.shape[1], dtype=torch.float64)
    yh = y[torch.from_numpy(h.row(0))]
    a += yh.T @ (yh * torch.from_numpy(c - 1.0).unsqueeze(1))
    b = (yh * torch.from_numpy(c).unsqueeze(1)).sum(0)
    torch.testing.assert_close(a @ users[0].double(), b, rtol=1e-4, atol=1e-4)


def test_als_measures_its_loss_on_some_passes_and_fits_the_same(planted):
    """The training loss on passes 1, 2, 4, ... and the last only: each its pass's own
    value, and the vectors those of a fit that measures it on every pass."""
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    data, _ = planted
    model = create("als", {"factors": 8, "iterations": 6})
    epochs = model.fit(TrainingData(data), FitOptions(seed=3))
    assert [bool(e) for e in epochs] == [True, True, False, True, False, True]  # 1, 2, 4, 6
    every: list[float] = []
    with threadpool_limits(1, "blas"):
        full = AlternatingLeastSquares(
            factors=8, regularization=model.config.regularization, alpha=model.config.alpha,
            iterations=6, calculate_training_loss=True, random_state=3,
        )  # fmt: skip
        full.fit(
            sp.csr_matrix(data.matrix(), dtype=np.float32),
            show_progress=False, callback=lambda i, s, loss: every.append(loss),
        )  # fmt: skip
    assert [e["loss"] for e in epochs if e] == pytest.approx([every[i] for i in (0, 1, 3, 5)])
    torch.testing.assert_close(model.item_vectors, torch.from_numpy(full.item_factors).float())


def test_blend_weights_are_tuned_towards_the_member_that_predicts(planted):
    data, _ = planted
    # on the planted groups EASE predicts each user's held-out items, popularity cannot
    model = fit("blend", data, members=["popularity", "ease"])
    assert model.weights.min() >= 0 and float(model.weights.sum()) == pytest.approx(1.0)
    assert model.weights[1] > model.weights[0]  # an untuned blend holds 0.5 and 0.5
    singles = {
        member: fit("blend", data, members=[member]).weights for member in ("popularity", "ease")
    }
    assert all(w.tolist() == [1.0] for w in singles.values())  # one member takes it all


def test_blend_standardizes_each_users_unseen_scores():
    from recsys_core.models.blend import standardize

    h = UserHistories(np.array([0, 1]), np.array([0, 1, 1]), np.array([2]), np.array([5]), 4)
    z = standardize(torch.tensor([[1.0, 2.0, 100.0, 3.0], [5.0, 5.0, 5.0, 7.0]]), h)
    assert z[0, 2] == 0.0  # the seen item is left out
    unseen = torch.tensor([[True, True, False, True], [True, True, True, True]])
    for row in range(2):
        values = z[row][unseen[row]]
        assert float(values.mean()) == pytest.approx(0.0, abs=1e-6)
        assert float(values.pow(2).mean()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("offset", [0.0, 1000.0])
@pytest.mark.parametrize("block_bytes", [1 << 21, 240])
def test_blend_folds_each_members_z_scores_into_its_sum(offset, block_bytes, monkeypatch):
    """One pass per member gives the weighted sum of `standardize`d scores: the seen items
    left out of each user's moments (a user who saw every item, one who saw none), far from
    zero means too, with the moments taken over all users at once or two at a time."""
    from recsys_core.models import blend as blend_module
    from recsys_core.models.blend import _seen_positions, add_standardized, standardize

    monkeypatch.setattr(blend_module, "MOMENT_BLOCK_BYTES", block_bytes)

    rng = np.random.default_rng(0)
    rows = [rng.choice(30, size=n, replace=False) for n in (0, 3, 12, 30, 7)]
    h = UserHistories(
        np.arange(5), np.concatenate([[0], np.cumsum([len(r) for r in rows])]),
        np.concatenate(rows), np.zeros(sum(len(r) for r in rows), dtype=np.int64), 30,
    )  # fmt: skip
    members = [torch.randn(5, 30, generator=torch.Generator().manual_seed(j)) * (j + 1) + offset
               for j in range(3)]  # fmt: skip
    seen = _seen_positions(h, 30)
    total, shift = torch.zeros(5, 30), torch.zeros(5, 1, dtype=torch.float64)
    for weight, scores in zip((0.5, 0.2, 0.3), members, strict=True):
        shift += add_standardized(total, scores, weight, seen)
    total.sub_(shift.float()).view(-1).index_fill_(0, seen, 0.0)
    expected = sum(w * standardize(m, h) for w, m in zip((0.5, 0.2, 0.3), members, strict=True))
    torch.testing.assert_close(total, expected, rtol=0, atol=2e-4 if offset else 1e-5)
    assert (total[3] == 0).all() and (total[1, rows[1]] == 0).all()


@pytest.mark.parametrize("augment", ["crop", "mask", "reorder"])
def test_sasrec_augmentation_perturbs_within_the_sequence(augment):
    from recsys_core.models.sasrec import SASRecConfig, _augment

    pad = 99
    sequences = np.array([[pad, pad, 1, 2, 3, 4, 5, 6], [10, 11, 12, 13, 14, 15, 16, 17]])
    config = SASRecConfig(augment=augment, augment_ratio=0.5)
    out = _augment(sequences, config, np.random.default_rng(0), pad)
    assert out.shape == sequences.shape and not np.array_equal(out, sequences)
    for before, after in zip(sequences, out, strict=True):
        kept, original = after[after != pad].tolist(), before[before != pad].tolist()
        if augment == "crop":  # a contiguous piece, at least an input and a target
            assert len(kept) >= 2 and any(
                original[i : i + len(kept)] == kept for i in range(len(original))
            )
        else:  # same length, the next-item target stays last
            assert after[-1] == before[-1] and set(kept) <= set(original)


def test_sasrec_rejects_an_unknown_augmentation():
    from recsys_core.errors import InputError

    with pytest.raises(InputError, match="bad parameters"):
        create("sasrec", {"augment": "shuffle"})


def test_din_pair_weights_are_its_attention(planted):
    data, expected = planted
    model = fit("din", data, learns=True)
    user = next(iter(expected))
    history = padded_history(data.histories(data.users.index([user])))
    weights = model.pair_weights(history, torch.tensor([[0, 5, 10]]))
    assert weights.shape == (1, history.shape[1], 3)
    # attention over real history items (plus the "nothing" slot) sums to at most one
    assert (weights >= 0).all() and (weights.sum(1) <= 1.0 + 1e-5).all()


def test_specs_parse_and_format_round_trip():
    name, params = parse_spec("ease(reg=300, history_half_life=5, text_weight=0.5)")
    assert name == "ease" and params == {"reg": 300, "history_half_life": 5, "text_weight": 0.5}
    assert parse_spec(format_spec(name, params)) == (name, params)
    assert create("ease(reg=300)").config.reg == 300
    # commas inside quotes or brackets belong to the value
    spec = 'sasrec(augment="crop,mask,reorder", epochs=2)'
    assert parse_spec(spec) == ("sasrec", {"augment": "crop,mask,reorder", "epochs": 2})
    assert parse_spec(format_spec(*parse_spec(spec))) == parse_spec(spec)
    members = 'blend(members=["ease", "itemknn"])'
    assert parse_spec(members) == ("blend", {"members": ["ease", "itemknn"]})


def test_cli_model_lists_split_at_top_level_commas_only():
    from flows.cli import model_specs

    models = 'ease,sasrec(augment="crop,mask", epochs=2), blend(members=["ease", "content"])'
    assert model_specs(models) == [
        "ease", 'sasrec(augment="crop,mask", epochs=2)', 'blend(members=["ease", "content"])',
    ]  # fmt: skip


def test_unknown_model_and_bad_params_are_input_errors():
    from recsys_core.errors import InputError

    with pytest.raises(InputError, match="unknown model"):
        create("nope")
    with pytest.raises(InputError, match="bad parameters"):
        create("ease", {"lambda_": 3})
    with pytest.raises(InputError, match="key=value"):
        create("ease(300)")
    # a wrong type is named with its field, not left to fail inside fit
    with pytest.raises(InputError, match=r"cold_map_reg: .*number.*'abc'"):
        create("ease(text_weight=1, cold_map_reg=abc)")
    # Python's None means null, as True/False mean true/false
    assert create("ease(text_weight=1, cold_map_reg=None)").config.cold_map_reg is None
    with pytest.raises(InputError, match="members"):
        create("blend(members=[])")
    assert create("ease(cold_map_reg=null)").config.cold_map_reg is None
    assert create("ease(reg=300)").params()["reg"] == 300  # values are kept as given


def test_padded_history_keeps_the_newest_items_left_or_right_aligned():
    h = UserHistories(
        np.array([0, 1, 2]), np.array([0, 3, 3, 8]), np.array([5, 6, 7, 1, 2, 3, 4, 9]),
        np.arange(8), 10,
    )  # fmt: skip
    left = padded_history(h, max_len=4)
    assert left.tolist() == [[5, 6, 7, -1], [-1, -1, -1, -1], [2, 3, 4, 9]]
    right = padded_history(h, max_len=4, right=True, pad=10)
    assert right.tolist() == [[10, 5, 6, 7], [10, 10, 10, 10], [2, 3, 4, 9]]
    aligned, source = align_right(left, 6, pad=10)
    assert aligned.tolist() == [[10, 10, 10, 5, 6, 7], [10] * 6, [10, 10, 2, 3, 4, 9]]
    assert source.tolist() == [[-1, -1, -1, 0, 1, 2], [-1] * 6, [-1, -1, 0, 1, 2, 3]]
    narrow, source = align_right(left, 2, pad=10)  # the newest two of each row
    assert narrow.tolist() == [[6, 7], [10, 10], [4, 9]] and source.tolist()[0] == [1, 2]


def test_python_style_literals_in_a_spec_mean_what_they_say():
    # `use_text=False` was kept as the string "False", which a dataclass reads as true
    assert parse_spec("sasrec(use_text=False, patience=None)") == (
        "sasrec",
        {"use_text": False, "patience": None},
    )
    assert create("sasrec(use_text=False)").config.use_text is False
    assert parse_spec('ease(name="False")') == ("ease", {"name": "False"})
