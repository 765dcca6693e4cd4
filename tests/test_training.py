"""The one torch training loop: steps, per-epoch metrics, seeding and early stopping."""

from __future__ import annotations

import pytest
import torch

from recsys_core.models import FitOptions, TrainingData, create, registered
from recsys_core.models.training import Trainer
from recsys_core.testing.recommenders import group_embeddings


def _line_fit(validations: list[float], patience: int, epochs: int = 8):
    """Fit y = 2x with one weight; `validations` are the figures reported after each epoch.

    Returns the trainer's metrics, the weight after each epoch and the weight at the end.
    """
    trainer = Trainer("line", FitOptions(seed=0), epochs, patience=patience)
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    x = torch.linspace(0, 1, 16)
    after_epoch: list[float] = []
    figures = iter(validations)

    def batches(_epoch):
        yield from (x[:8], x[8:])

    def validate():
        after_epoch.append(float(weight))
        return next(figures)

    history = trainer.run(optimizer, batches, lambda b: ((weight * b - 2 * b) ** 2).mean(),
                          validate=validate)  # fmt: skip
    return trainer, history, after_epoch, float(weight)


def test_each_epoch_reports_its_mean_loss_and_the_loss_falls():
    _, history, _, weight = _line_fit([0.0] * 8, patience=0)
    assert len(history) == 8 and all(set(h) == {"loss", "validation"} for h in history)
    assert history[-1]["loss"] < history[0]["loss"]
    assert weight == pytest.approx(2.0, abs=0.2)  # it learns


def test_early_stopping_stops_after_patience_and_keeps_the_best_epoch():
    trainer, history, after_epoch, weight = _line_fit(
        [0.1, 0.3, 0.2, 0.25, 0.9, 0.9, 0.9, 0.9], patience=2
    )
    assert len(history) == 4  # best at epoch 1, then two epochs without a better figure
    assert trainer.best_epoch == 1
    assert weight == after_epoch[1] != after_epoch[3]  # the best epoch's weight is put back


def test_without_patience_every_epoch_trains():
    _, history, after_epoch, weight = _line_fit([0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], 0)
    assert len(history) == 8 and weight == after_epoch[-1]


def test_seeded_fits_draw_the_same_numbers_and_leave_the_callers_generator_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    trainer = Trainer("x", FitOptions(seed=7), 1)
    with trainer.seeded():
        first = torch.rand(3)
    with trainer.seeded():
        second = torch.rand(3)
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(torch.rand(1), expected_next)  # the caller's stream is intact


@pytest.mark.parametrize("name", ["mf", "sasrec", "din"])
def test_torch_models_stop_early_on_held_out_events(name, planted):
    data, _ = planted
    profile = registered()[name].test_profile
    model = create(name, {**profile.quick, **profile.learns, "patience": 1})
    embeddings = group_embeddings(data) if model.uses_text else None
    history = model.fit(TrainingData(data, embeddings), FitOptions(seed=0))
    assert 1 <= len(history) <= model.config.epochs
    assert all("validation" in h for h in history)
    assert max(h["validation"] for h in history) > 0  # the held-out events are predicted
    scores = model.score(data.histories())
    assert scores.shape == (data.n_users, data.n_items) and torch.isfinite(scores).all()


def test_validation_on_a_user_sample_keeps_the_other_users_newest_events(planted):
    from recsys_core.models.training import validation_part

    data, _ = planted
    options = FitOptions(seed=0, validation_protocol="leave_one_out")
    _, everyone = validation_part(TrainingData(data), options)
    train, sample = validation_part(TrainingData(data), options, users=5)
    assert len(sample.test_users) == 5 and set(sample.test_users) <= set(everyone.test_users)
    # only the sampled users' held-out events leave training; nothing is lost or doubled
    held = sample.test.join(data.frame, on=["user_index", "item_index"], how="inner").height
    assert len(train.interactions) == len(data) - held
    assert len(train.interactions) > len(everyone.train)
