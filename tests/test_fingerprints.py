"""Stage fingerprints change exactly when a stage's inputs do; the registry reader only reads."""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from recsys_core import schemas
from recsys_core.context import RunContext
from recsys_core.models import registry as model_registry
from recsys_core.pipeline.fingerprints import champion_state, file_digest, stage_fingerprint
from recsys_core.pipeline.recommend import AlreadyPublished, published_report, recommend_inputs
from recsys_core.pipeline.train import train_inputs
from recsys_core.registry.reader import RegistryReader
from recsys_core.registry.tracking import CHAMPION, Tracker
from recsys_core.settings import Settings
from recsys_core.storage import Lake
from tests.test_model_plugins import _write_model

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*")) if root.exists() else []


def _add_event(lake: Lake, user: str = "u1") -> None:
    row = {
        "user_id": user, "item_id": "i1", "timestamp": NOW, "event_type": "view", "value": 1.0,
        "source": "test", "ingested_at": NOW, "quality": None, "event_date": date(2024, 1, 1),
    }  # fmt: skip
    lake.write("events", pl.DataFrame([row], schema=schemas.EVENTS), mode="append")


def _publish(lake: Lake, inputs: str) -> int:
    row = {
        "user_id": "u1", "rank": 1, "item_id": "i1", "score": 1.0, "reason_item_id": None,
        "model": "recsys/1", "generated_at": NOW,
    }  # fmt: skip
    frame = pl.DataFrame([row], schema=schemas.RECOMMENDATIONS)
    metadata = {"model": "recsys/1", "rows": 1, "users": 1, "inputs": inputs}
    return lake.write("recommendations", frame, mode="overwrite", metadata=metadata)


def _register(lake: Lake, settings: Settings, alias: str = CHAMPION) -> str:
    """Register one more version (no files needed to read it) and point `alias` at it."""
    tracker = Tracker(lake, settings.tracking.experiment, settings.tracking.registered_model)
    client, name = tracker.client, settings.tracking.registered_model
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(
        name,
        source=str(lake.root / "nowhere"),
        tags={"model": "ease", "params": '{"l2": 5.0}', "metric_value": "0.5"},
    ).version
    client.set_registered_model_alias(name, alias, version)
    return str(version)


@pytest.fixture
def lake_and_settings(tmp_path) -> tuple[Lake, Settings]:
    lake = Lake(tmp_path / "lake")
    return lake, Settings(data_dir=lake.root)


# -- the registry reader ---------------------------------------------------------------------
def test_reader_on_a_fresh_data_directory_answers_none_and_creates_nothing(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)  # a store MLflow made by default would land here
    uri_before = mlflow.get_tracking_uri()
    lake = Lake(tmp_path / "lake")
    reader = RegistryReader(lake)
    assert not reader.has_store
    assert reader.version_by_alias("recsys", CHAMPION) is None
    assert reader.alias_version("recsys", CHAMPION) is None
    assert reader.registered_versions("recsys") == []
    assert reader.experiment_of_run("0123456789abcdef") is None
    with pytest.raises(LookupError, match="no MLflow store"):
        reader.resolve("models:/recsys/1")
    assert champion_state(RunContext(Settings(data_dir=lake.root))) == "none"
    assert _files(tmp_path) == []
    assert mlflow.get_tracking_uri() == uri_before


def test_reader_reads_versions_and_aliases_without_writing(lake_and_settings):
    lake, settings = lake_and_settings
    first = _register(lake, settings)
    second = _register(lake, settings)
    database = lake.mlflow_dir / "mlflow.db"
    before = (database.stat().st_mtime_ns, database.stat().st_size, _files(lake.root))

    reader = RegistryReader(lake)
    assert reader.registered_versions(settings.tracking.registered_model) == [first, second]
    found = reader.version_by_alias(settings.tracking.registered_model, CHAMPION)
    assert found is not None
    assert (found.version, found.model, found.params) == (second, "ease", {"l2": 5.0})
    assert reader.alias_version(settings.tracking.registered_model, "challenger") is None
    assert reader.alias_version("no-such-model", CHAMPION) is None
    assert reader.resolve(f"models:/{settings.tracking.registered_model}/{first}").version == first
    with pytest.raises(LookupError):
        reader.resolve(f"models:/{settings.tracking.registered_model}/99")
    assert (database.stat().st_mtime_ns, database.stat().st_size, _files(lake.root)) == before


def test_tracker_reads_the_same_version_as_the_reader(lake_and_settings):
    lake, settings = lake_and_settings
    _register(lake, settings)
    tracker = Tracker(lake, settings.tracking.experiment, settings.tracking.registered_model)
    assert tracker.get(CHAMPION) == RegistryReader(lake).version_by_alias(
        settings.tracking.registered_model, CHAMPION
    )


# -- stage fingerprints ---------------------------------------------------------------------
def test_equal_inputs_give_an_equal_fingerprint(lake_and_settings):
    lake, settings = lake_and_settings
    context = RunContext(settings)
    _add_event(lake)
    _register(lake, settings)
    assert train_inputs(context) == train_inputs(RunContext(settings.model_copy()))
    assert recommend_inputs(context) == recommend_inputs(RunContext(settings.model_copy()))
    assert train_inputs(context).startswith("recsys-train-")
    assert recommend_inputs(context).startswith("recsys-recommend-")


def test_a_new_table_version_changes_the_fingerprint(lake_and_settings):
    lake, settings = lake_and_settings
    context = RunContext(settings)
    absent = train_inputs(context), recommend_inputs(context)
    _add_event(lake)
    created = train_inputs(context), recommend_inputs(context)
    _add_event(lake, "u2")
    appended = train_inputs(context), recommend_inputs(context)
    assert len({absent[0], created[0], appended[0]}) == 3
    assert len({absent[1], created[1], appended[1]}) == 3


def test_a_table_made_again_at_the_same_version_changes_the_fingerprint(lake_and_settings):
    lake, settings = lake_and_settings
    context = RunContext(settings)
    _add_event(lake)
    before = train_inputs(context)
    shutil.rmtree(lake.path("events"))
    _add_event(lake)  # version 0 again, but a new table id
    assert lake.version("events") == 0
    assert train_inputs(context) != before


def test_a_changed_setting_changes_the_fingerprint_of_the_stages_that_read_it(
    lake_and_settings,
):
    lake, settings = lake_and_settings
    context = RunContext(settings)
    _add_event(lake)
    more = settings.updated(k=settings.recommend.k + 1)  # read by recommend only
    assert recommend_inputs(RunContext(more)) != recommend_inputs(context)
    assert train_inputs(RunContext(more)) == train_inputs(context)
    other_models = settings.updated(models=("ease",))  # read by train only
    assert train_inputs(RunContext(other_models)) != train_inputs(context)
    assert recommend_inputs(RunContext(other_models)) == recommend_inputs(context)
    for shared in ({"seed": 7}, {"registered_model": "other"}, {"data_dir": lake.root / "x"}):
        changed = RunContext(settings.updated(**shared))
        assert train_inputs(changed) != train_inputs(context), shared
        assert recommend_inputs(changed) != recommend_inputs(context), shared
    quieter = RunContext(settings.updated(bot_events_per_day=5, encode_shards=4))
    assert (train_inputs(quieter), recommend_inputs(quieter)) == (
        train_inputs(context), recommend_inputs(context),
    )  # fmt: skip


def test_a_moved_champion_changes_only_the_recommend_fingerprint(lake_and_settings):
    lake, settings = lake_and_settings
    context = RunContext(settings)
    _add_event(lake)
    train_before, recommend_before = train_inputs(context), recommend_inputs(context)
    version = _register(lake, settings)
    assert champion_state(context) == version
    assert recommend_inputs(context) != recommend_before
    assert recommend_inputs(context) == recommend_inputs(context, champion=version)
    assert recommend_inputs(context, champion="7") != recommend_inputs(context)
    assert train_inputs(context) == train_before


def test_the_unavailable_items_file_contents_change_the_fingerprint(lake_and_settings, tmp_path):
    lake, settings = lake_and_settings
    context = RunContext(settings)
    _add_event(lake)
    unavailable = tmp_path / "unavailable.txt"
    unavailable.write_text("i1\n")
    with_file = settings.updated(unavailable_items=unavailable)
    first = recommend_inputs(RunContext(with_file))
    assert first != recommend_inputs(context)
    assert first.endswith(f"-{file_digest(unavailable)}")
    unavailable.write_text("i1\ni2\n")
    assert recommend_inputs(RunContext(with_file)) != first


def test_stages_with_the_same_tables_have_different_fingerprints(lake_and_settings):
    _, settings = lake_and_settings
    context = RunContext(settings)
    assert stage_fingerprint("a", context, ("events",), ("train",)) != stage_fingerprint(
        "b", context, ("events",), ("train",)
    )


# -- "already published?" -------------------------------------------------------------------
def test_published_report_only_for_a_commit_from_exactly_these_inputs(lake_and_settings):
    lake, settings = lake_and_settings
    context = RunContext(settings)
    _add_event(lake)
    _register(lake, settings)
    assert published_report(context) is None  # nothing published yet
    version = _publish(lake, recommend_inputs(context))
    report = published_report(context)
    assert report == AlreadyPublished(model="recsys/1", rows=1, users=1, version=version)
    assert report.reused
    assert published_report(context.with_settings(k=5)) is None
    _add_event(lake, "u2")  # new events: tonight's inputs differ from the published ones
    assert published_report(context) is None


# -- the code ------------------------------------------------------------------------------
@pytest.fixture
def plugin_folder(tmp_path, monkeypatch):
    """A folder on the Python path holding the plugin model module `throwaway_fp`, named by a
    run's `model_modules`; the module and its registration are undone afterwards."""
    from recsys_core.models import MODELS, registered

    folder = tmp_path / "plugins"
    folder.mkdir()
    _write_model(folder, "throwaway_fp", "throwaway-fp")
    monkeypatch.syspath_prepend(str(folder))
    before = dict(registered())
    model_registry.name_model_modules("throwaway_fp")  # as a run that names it
    yield folder
    _forget_plugin()
    model_registry._named.pop("throwaway_fp", None)
    MODELS.clear()
    MODELS.update(before)


def _forget_plugin() -> None:
    """Unload the plugin, as a new process would not have it yet."""
    sys.modules.pop("throwaway_fp", None)
    model_registry._loaded.discard("throwaway_fp")


def _next_process(folder: Path, source: str | None = None) -> None:
    """What a new process finds: the plugin (edited to `source` when given), imported anew."""
    if source is not None:
        (folder / "throwaway_fp.py").write_text(source)
    _forget_plugin()
    model_registry.discover()


def test_a_plugin_module_s_source_is_part_of_the_fingerprint(lake_and_settings, plugin_folder):
    lake, settings = lake_and_settings
    _add_event(lake)
    context = RunContext(settings)
    first = train_inputs(context)
    _next_process(plugin_folder)
    assert train_inputs(context) == first  # the same code again
    source = (plugin_folder / "throwaway_fp.py").read_text()
    _next_process(plugin_folder, source.replace("weight: float = 0.01", "weight: float = 0.02"))
    assert train_inputs(context) != first
    assert recommend_inputs(context) != recommend_inputs(context.with_settings(k=5))


@pytest.mark.slow
def test_a_fixed_plugin_model_is_trained_again_and_unchanged_code_reuses_the_report(
    harness, trained_lake, plugin_folder, monkeypatch
):
    from prefect import flow

    from recsys_core import pipeline
    from tasks.stages import train_task

    calls = []
    real_train = pipeline.train

    def counting_train(*args, **kwargs):
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train", counting_train)
    settings = trained_lake.with_settings(models=("throwaway-fp",)).settings

    @flow
    def nightly_train() -> pipeline.TrainReport:  # a nightly's train step: cached on its inputs
        return train_task(settings)

    model_registry.discover()
    first = nightly_train()
    assert len(calls) == 1 and first.champion_model in {"ease", "throwaway-fp"}
    _next_process(plugin_folder)
    # same code: the cached report, read back as the same typed report
    assert nightly_train() == first and len(calls) == 1
    source = (plugin_folder / "throwaway_fp.py").read_text()
    _next_process(plugin_folder, source.replace("weight: float = 0.01", "weight: float = 0.02"))
    nightly_train()
    assert len(calls) == 2  # the fixed model is trained, not last week's report reused
