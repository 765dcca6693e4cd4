"""A nightly that failed midway resumes: finished stages come from the cache."""

from __future__ import annotations

import importlib

import pytest

from recsys_core import pipeline
from recsys_core.storage import Lake

# the sharded stages call their steps in their own modules (the package's `recommend` is the
# function of that name, so the modules are looked up by name)
encode = importlib.import_module("recsys_core.pipeline.encode")
recommend = importlib.import_module("recsys_core.pipeline.recommend")

pytestmark = pytest.mark.slow


def test_rerun_after_a_failed_publish_skips_finished_stages(
    harness, small_source, tiny_encoder_dir, tmp_path, monkeypatch
):
    from flows.nightly import nightly
    from flows.params import RunOptions, Source

    calls = {"encode": 0, "encoded": 0, "train": 0, "recommend": 0}
    functions = {
        "encode": "plan_encode", "encoded": "encode_shard", "train": "train",
        "recommend": "publish",
    }  # fmt: skip
    home = {"encode": encode, "encoded": encode, "train": pipeline, "recommend": recommend}
    real = {name: getattr(home[name], fn) for name, fn in functions.items()}

    def counting(name):
        def run(*args, **kwargs):
            calls[name] += 1
            if name == "recommend" and calls[name] == 1:
                raise OSError("disk went away")  # retried by the task, then fails the run
            return real[name](*args, **kwargs)

        return run

    monkeypatch.setattr(encode, "plan_encode", counting("encode"))
    monkeypatch.setattr(encode, "encode_shard", counting("encoded"))
    monkeypatch.setattr(pipeline, "train", counting("train"))
    monkeypatch.setattr(recommend, "publish", counting("recommend"))
    events, items = small_source
    source = Source(events=[str(events)], items=str(items))
    options = RunOptions(
        data_dir=str(tmp_path / "lake"), k=3, encoder=str(tiny_encoder_dir), models=["ease"]
    )
    # the first recommend attempt fails with an I/O error: the task retries and succeeds
    summary = nightly(source=source, options=options)
    assert calls == {"encode": 1, "encoded": 1, "train": 1, "recommend": 2}
    assert summary.publish.rows > 0

    # make the whole publish fail now, then run the night again
    def broken(*args, **kwargs):
        calls["recommend"] += 1
        raise RuntimeError("publish crashed")

    monkeypatch.setattr(recommend, "publish", broken)
    with pytest.raises(RuntimeError, match="publish crashed"):
        nightly(source=source, options=options.model_copy(update={"refresh": True}))
    assert calls["encode"] == 2 and calls["train"] == 2  # refresh: every stage runs again
    assert calls["encoded"] == 1  # though no item text changed, so nothing is encoded again
    version = Lake(tmp_path / "lake").version("recommendations")

    monkeypatch.setattr(recommend, "publish", counting("recommend"))
    before = dict(calls)
    summary = nightly(source=source, options=options)
    # inputs did not change since the last successful encode and train: no item is encoded
    # again and training comes from the cache
    assert calls["encoded"] == before["encoded"] and calls["train"] == before["train"]
    assert calls["recommend"] == before["recommend"] + 1
    assert Lake(tmp_path / "lake").version("recommendations") == version + 1
    assert summary.train.champion_model == "ease"

    # nothing changed since: the published night is kept, nothing is ranked again
    again = nightly(source=source, options=options)
    assert calls["recommend"] == before["recommend"] + 1
    assert again.publish.reused and again.publish.version == version + 1
