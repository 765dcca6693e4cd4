"""A training that fails midway leaves the champion and the published table as they were."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from recsys_core.models.ease import EASE
from recsys_core.pipeline import recommend, train
from recsys_core.registry.tracking import CHAMPION, Tracker


def _versions(tracker: Tracker, name: str) -> set[str]:
    return {v.version for v in tracker.client.search_model_versions(f"name='{name}'")}


@pytest.mark.parametrize("failure", ["candidate-fit", "refit", "alias"])
def test_a_failed_training_leaves_the_champion_as_it_was(trained_lake, monkeypatch, failure):
    context = trained_lake
    lake, settings = context.lake, context.settings
    before = recommend(context)
    tracker = Tracker(lake, settings.tracking.experiment, settings.tracking.registered_model)
    champion = tracker.get(CHAMPION)
    versions = _versions(tracker, settings.tracking.registered_model)
    assert champion is not None and champion.model == "ease"

    calls = {"fit": 0}
    real_fit = EASE.fit

    def fit(self, data, options):
        calls["fit"] += 1
        # the first fit is the candidate on the training part, the second the refit on all
        if calls["fit"] == {"candidate-fit": 1, "refit": 2}.get(failure):
            raise RuntimeError("worker lost")
        return real_fit(self, data, options)

    def set_alias(self, *args, **kwargs):
        raise RuntimeError("worker lost")

    monkeypatch.setattr(EASE, "fit", fit)
    if failure == "alias":
        monkeypatch.setattr(MlflowClient, "set_registered_model_alias", set_alias)
    with pytest.raises(RuntimeError, match="worker lost"):
        train(context)
    monkeypatch.undo()

    assert calls["fit"] == {"candidate-fit": 1, "refit": 2, "alias": 2}[failure]
    assert tracker.get(CHAMPION) == champion
    if failure == "alias":
        # the refit version was registered but never became champion
        assert len(_versions(tracker, settings.tracking.registered_model) - versions) == 1
    else:
        assert _versions(tracker, settings.tracking.registered_model) == versions
    assert lake.version("recommendations") == before.version
    # the next night publishes from the same champion
    after = recommend(context)
    assert after.model == before.model and after.rows == before.rows
