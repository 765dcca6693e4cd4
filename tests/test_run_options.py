"""One run configuration: every default declared once in `Settings`, forms and options derived."""

from __future__ import annotations

import dataclasses

import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import ValidationError
from typer.testing import CliRunner

from flows.params import RUN_OPTIONS, RunOptions
from flows.runners import ChosenTaskRunner
from flows.settings_help import setting_bounds, setting_help
from recsys_core.encoders.finetune import FinetuneConfig
from recsys_core.errors import InputError
from recsys_core.models import FitOptions
from recsys_core.pipeline.ingest.report import IngestOptions
from recsys_core.settings import Settings


def test_an_empty_form_gives_the_settings_defaults():
    assert RunOptions().settings() == Settings()
    assert set(RunOptions.model_fields) == {*RUN_OPTIONS, "refresh"}


@pytest.mark.parametrize("name", RUN_OPTIONS)
def test_each_form_field_is_its_setting_with_the_same_bounds_and_default(name):
    field = RunOptions.model_fields[name]
    assert field.default is None  # unset: the setting's own value applies
    assert field.description == setting_help(name)
    default = Settings.model_fields[name].default
    if default is not None and not isinstance(default, tuple):
        assert f"(default {default})" in field.description
    for bound, value in setting_bounds(name).items():
        outside = value - 1 if bound == "min" else value + 1
        with pytest.raises(ValidationError):
            RunOptions(**{name: outside})
        with pytest.raises(ValidationError):
            Settings(**{name: outside})
        assert getattr(RunOptions(**{name: value}).settings(), name) == value


def test_stage_options_take_their_defaults_from_the_settings():
    settings = Settings()
    assert IngestOptions().bot_events_per_day == settings.bot_events_per_day
    assert IngestOptions().max_item_text_chars == settings.max_item_text_chars
    assert FitOptions().seed == settings.seed
    assert next(f.default for f in dataclasses.fields(FinetuneConfig) if f.name == "seed") == (
        settings.seed
    )


def test_cli_options_show_the_settings_bounds_and_defaults():
    from flows.cli import app

    result = CliRunner().invoke(app, ["recommend", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    assert "Recommendations per user (default 20). Env RECSYS_K." in result.output
    assert "1<=x<=1000" in result.output  # the bounds of Settings.k
    refused = CliRunner().invoke(app, ["recommend", "--k", "1001"])
    assert refused.exit_code == 2


def test_the_task_runner_is_chosen_when_a_run_starts(monkeypatch):
    runner = ChosenTaskRunner()  # what the flows carry since import: nothing chosen yet
    monkeypatch.setenv("RECSYS_TASK_RUNNER", "thread")
    with runner.duplicate() as started:
        assert isinstance(started.engine, ThreadPoolTaskRunner)
    assert started.engine is None
    monkeypatch.setenv("RECSYS_TASK_RUNNER", "spark")
    with pytest.raises(InputError, match="spark"), runner.duplicate():
        pass
