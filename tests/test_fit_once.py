"""Fit each thing once: a night fits each config once per data part (EASE's Gram matrix is
inverted once per part and config), the models spec is parsed once, and the blend builds its
members once."""

from __future__ import annotations

import hashlib

import pytest
import torch

from recsys_core.context import RunContext
from recsys_core.models import FitOptions, TrainingData, create
from recsys_core.models.registry import ModelSpec, format_spec, parse_spec
from recsys_core.models.training import SharedFits, fit_shared, shared_fits
from recsys_core.settings import Settings


@pytest.fixture
def ease_solves(monkeypatch):
    """A digest of every matrix EASE inverts: its Gram matrix plus its penalty."""
    from recsys_core.models import ease

    seen: list[str] = []
    inverse = ease.spd_inverse

    def counted(matrix):
        seen.append(hashlib.sha256(matrix.contiguous().numpy().tobytes()).hexdigest())
        return inverse(matrix)

    monkeypatch.setattr(ease, "spd_inverse", counted)
    return seen


def test_a_nightly_solves_ease_once_per_config_and_data_part(trained_lake, ease_solves):
    from recsys_core.pipeline import train

    context = trained_lake
    defaults = Settings(
        data_dir=context.lake.root, encoder=context.settings.embedding.encoder,
        encoder_max_length=64, eval_users=100,
    )  # fmt: skip
    report = train(RunContext(defaults))
    models = {c.model for c in report.candidates}
    assert {"ease", "blend"} <= models  # the default candidates, the blend with its two EASEs
    # the candidate, the blend's tuning and refit, and the refits on all events all solved
    # EASE: more than one config on more than one part
    assert len(set(ease_solves)) >= 4
    # ... and no Gram matrix was inverted twice (the old code inverted the training part's
    # plain EASE for the candidate, for the blend's member and for the blend's tuning when it
    # was refit on all events, whose tuning part holds the same events)
    assert len(ease_solves) == len(set(ease_solves))


def test_shared_fits_fit_once_per_part_and_config(planted, ease_solves):
    data, _ = planted
    part, options = TrainingData(data), FitOptions()
    with shared_fits() as fits:
        first = create("ease(reg=10)")
        fit_shared(first, part, options)
        # a scoring option only: the same fit; new objects holding the same events too
        again = create("ease(reg=10, history_half_life=3)")
        fit_shared(again, TrainingData(data.with_frame(data.frame.clone())), options)
        assert again.weights is first.weights and fits.computed == 1 and fits.reused == 1
        fit_shared(create("ease(reg=20)"), part, options)  # another config
        knn = create("itemknn")
        fit_shared(knn, part, options)
        with shared_fits():  # an inner block (a blend's) joins the night's
            fit_shared(create("itemknn(history_half_life=2)"), part, options)
        assert fits.computed == 3 and fits.reused == 2 and len(ease_solves) == 2
        # other events, or other options: fitted again
        fit_shared(create("ease(reg=10)"), TrainingData(data.with_frame(data.frame[1:])), options)
        fit_shared(create("ease(reg=10)"), part, FitOptions(seed=1))
        assert fits.computed == 5 and len(ease_solves) == 4
    # outside a block every fit solves its own, with the same result
    alone = create("ease(reg=10)")
    fit_shared(alone, part, options)
    assert alone.weights is not first.weights and len(ease_solves) == 5
    torch.testing.assert_close(alone.weights, first.weights, rtol=0, atol=0)


def test_shared_fits_keep_only_the_latest_parts(planted):
    data, _ = planted
    parts = [
        TrainingData(data.with_frame(data.frame.head(data.frame.height - j))) for j in range(3)
    ]
    fits = SharedFits(parts=2)
    calls: list[int] = []
    for j in (0, 1, 0, 2, 0, 1):
        fits.get(parts[j], "key", lambda j=j: calls.append(j) or j)
    # 0 and 1 computed; 0 reused; 2 evicts 1 (least recently used); 0 kept; 1 again
    assert calls == [0, 1, 2, 1]


def test_the_blend_builds_its_members_once_and_tunes_and_refits_them(planted, monkeypatch):
    import recsys_core.models.blend as blend_module

    data, _ = planted
    blend = create('blend(members=["popularity", "ease(reg=10)", "itemknn"], grid=[0, 1])')
    members = list(blend.members)

    def refused(*args, **kwargs):
        raise AssertionError("a member was built again")

    monkeypatch.setattr(blend_module, "create", refused)
    blend.fit(TrainingData(data), FitOptions())
    assert blend.members == members and all(
        a is b for a, b in zip(blend.members, members, strict=True)
    )
    assert blend.n_items == data.n_items and blend.score(data.histories()).shape[1] == data.n_items


def test_an_adapted_blend_keeps_the_stand_ins_it_chose():
    blend = create('blend(members=["ease", "itemknn(neighbors=5)"])')
    adapted, notes = blend.adapted(1000, 2**20)  # too small for EASE's dense matrices
    stand_in = create("ease").stand_in()  # what EASE names past the dense limit
    assert adapted.config.members == (str(stand_in), "itemknn(neighbors=5)")
    assert [m.name for m in adapted.members] == [create(str(stand_in)).name, "itemknn"]
    assert adapted.members[1] is blend.members[1] and notes


@pytest.mark.parametrize(
    "text", ["ease", "ease(reg=300, history_half_life=5)", 'blend(members=["ease", "content"])']
)
def test_a_model_spec_is_parsed_once_and_reads_back_as_written(text):
    spec = ModelSpec.parse(text)
    assert (spec.name, spec.params) == parse_spec(text)
    assert str(spec) == format_spec(*parse_spec(text))
    model = spec.create()
    assert ModelSpec.of(model) == ModelSpec(model.name, model.params())
    assert ModelSpec.of(model).create().params() == model.params()


def test_a_refit_blend_keeps_its_tuned_weights_and_fits_each_member_once(planted, ease_solves):
    data, _ = planted
    earlier = TrainingData(data.with_frame(data.frame.head(int(data.frame.height * 0.8))))
    everything, options = TrainingData(data), FitOptions()
    blend = create('blend(members=["ease(reg=10)", "ease(reg=40)", "itemknn"])')
    with shared_fits():
        blend.fit(earlier, options)  # tunes on a part of `earlier`, then fits on all of it
        weights, tuned = blend.weights.clone(), len(ease_solves)
        assert blend.refit(everything, options)
    # the measured weights are kept: no tuning again, one solve per EASE member that scores
    torch.testing.assert_close(blend.weights, weights, rtol=0, atol=0)
    used = [m for m, w in zip(blend.members, weights, strict=True) if w > 0]
    assert len(ease_solves) - tuned == sum(m.name == "ease" for m in used) > 0
    for member in used:  # each member scoring now is fitted on every event
        fresh = create(member.name, member.params())
        fresh.fit(everything, options)
        torch.testing.assert_close(
            member.score(data.histories()), fresh.score(data.histories()), rtol=0, atol=0
        )
    assert blend.n_items == data.n_items


def test_fits_on_one_part_count_its_co_occurrences_once(planted, monkeypatch):
    from recsys_core.models import ease, sparse_items

    data, _ = planted
    counted: list[int] = []
    count = ease.co_occurrence

    def counting(x):
        counted.append(x.nnz)
        return count(x)

    monkeypatch.setattr(ease, "co_occurrence", counting)
    slabs: list[int] = []  # itemknn's own blocks of counts
    slab = sparse_items.co_occurrence_slab
    monkeypatch.setattr(
        sparse_items,
        "co_occurrence_slab",
        lambda by_item, x, block: slabs.append(len(block)) or slab(by_item, x, block),
    )
    part, options = TrainingData(data), FitOptions()
    other = TrainingData(data.with_frame(data.frame.head(data.frame.height - 50)))
    specs = ["ease(reg=10)", "ease(reg=40, window=3, window_weight=0.5)", "itemknn"]
    with shared_fits() as fits:
        shared = [create(s) for s in specs]
        for model in shared:
            fit_shared(model, part, options)
        # one X^T X for the part, which itemknn took its slabs from
        assert len(counted) == 1 and fits.intermediates == 1 and not slabs
        fit_shared(create("ease(reg=10)"), other, options)  # another part: its own counts
        assert len(counted) == 2
        fit_shared(create("itemknn(neighbors=7)"), part, options)  # not held now: its slabs
        assert len(counted) == 2 and sum(slabs) == data.n_items
    for spec, model in zip(specs, shared, strict=True):  # the same fits as each alone
        alone = create(spec)
        alone.fit(part, options)
        for key, value in alone.state_dict().items():
            torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    assert len(counted) == 4  # alone, each EASE counts for itself


def test_members_sharing_a_fit_are_saved_once_and_loaded_as_one(planted, tmp_path, monkeypatch):
    """EASE and itemknn with and without a history half-life share a fit: the bundle holds
    each fitted matrix once, the loaded members hold one matrix, and an explanation looks
    its weights up once; scores and reasons as before saving."""
    from safetensors import safe_open

    from recsys_core.models import item_item
    from recsys_core.ranking import top_k
    from recsys_core.registry.artifacts import ModelBundle, load_bundle, save_bundle

    data, _ = planted
    blend = create(
        'blend(members=["itemknn", "itemknn(history_half_life=2)", "ease(reg=10)", '
        '"ease(reg=10, history_half_life=2)"])'
    )
    blend.fit(TrainingData(data), FitOptions())
    blend.weights = torch.tensor([0.4, 0.3, 0.2, 0.1])  # every member scores
    blend.refit(TrainingData(data), FitOptions())
    folder = save_bundle(ModelBundle.from_fit(blend, data), tmp_path / "bundle")
    with safe_open(str(folder / "weights.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"m1.same_as", "m3.same_as", "m0.similarity.values", "m2.weights"} <= keys
    assert not any(k.startswith(("m1.similarity", "m3.weights")) for k in keys)

    loaded = load_bundle(folder).model
    assert loaded.members[1].weights is loaded.members[0].weights
    assert loaded.members[3].weights is loaded.members[2].weights
    histories = data.histories()
    torch.testing.assert_close(loaded.score(histories), blend.score(histories), rtol=0, atol=0)
    lookups: list[int] = []
    looked_up = item_item.sparse_pair_weights

    def counted(*args, **kwargs):
        lookups.append(1)
        return looked_up(*args, **kwargs)

    monkeypatch.setattr(item_item, "sparse_pair_weights", counted)
    explained = top_k(loaded, histories, 3, explain=True)
    assert len(lookups) == 1  # one chunk, one lookup for the two itemknn members
    expected = top_k(blend, histories, 3, explain=True)
    assert (explained.items == expected.items).all()
    assert (explained.reasons == expected.reasons).all()
