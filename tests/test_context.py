"""A run context: its lake and its settings always name the same data directory."""

from __future__ import annotations

import pickle
from pathlib import Path

from recsys_core.context import RunContext
from recsys_core.settings import Settings


def test_the_lake_is_built_from_the_settings_data_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    context = RunContext(Settings(data_dir=Path("lake")), run_id="run-1")
    assert context.lake.root == (tmp_path / "lake").resolve()
    assert context.lake.root == context.settings.data_dir.resolve()
    assert context.lake is context.lake  # one lake per context
    assert context.run_id == "run-1"


def test_of_and_with_settings_keep_lake_and_settings_together(tmp_path):
    context = RunContext.of(tmp_path / "a", k=7, run_id="r")
    assert context.settings.recommend.k == 7 and context.run_id == "r"
    moved = context.with_settings(data_dir=tmp_path / "b")
    assert moved.lake.root == (tmp_path / "b").resolve()
    assert moved.settings.recommend.k == 7 and moved.run_id == "r"
    assert context.lake.root == (tmp_path / "a").resolve()


def test_a_context_pickles_for_workers(tmp_path):
    context = RunContext.of(tmp_path / "lake", run_id="r")
    context.lake  # noqa: B018 - a built lake travels with it
    copy = pickle.loads(pickle.dumps(context))
    assert copy == context
    assert copy.lake.root == context.lake.root


def test_plan_encode_and_encoder_id_resolve_the_encoder_against_one_root(
    tmp_path, monkeypatch, small_source, tiny_encoder_dir
):
    from recsys_core.data.sources import SourceSpec
    from recsys_core.encoders import registry
    from recsys_core.pipeline import encode, ingest

    monkeypatch.chdir(tmp_path)
    context = RunContext.of(Path("lake"), encoder=str(tiny_encoder_dir), encoder_max_length=64)
    events, items = small_source
    ingest(context, SourceSpec(events=(str(events),), items=str(items)))
    roots: list[Path] = []
    real = registry.resolve_encoder

    def recording(source, data_dir):
        roots.append(Path(data_dir))
        return real(source, data_dir)

    monkeypatch.setattr(encode, "resolve_encoder", recording)
    plan = encode.plan_encode(context)
    assert plan.encoder == encode.encoder_id(context)
    assert roots == [context.lake.root, context.lake.root]
    assert context.lake.root == (tmp_path / "lake").resolve()
