"""One run configuration: every option declared once in `recsys_core.settings`, read from its
`RECSYS_*` variable, offered by the CLI commands and Prefect forms of the stages that read it."""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any

import pytest
import typer
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field, ValidationError
from typer.testing import CliRunner

from flows import params
from flows.cli import app
from flows.cli.app import with_options
from flows.options import OFFERED, bounds, describe, offered_options
from flows.runners import ChosenTaskRunner
from recsys_core.encoders.finetune_config import FinetuneConfig
from recsys_core.errors import InputError, exit_status
from recsys_core.models import FitOptions
from recsys_core.settings import GROUPS, OPTION_GROUP, SERVICE_GROUPS, Settings

FORMS = {
    "nightly": params.RunOptions,
    "ingest": params.IngestOptions,
    "encode": params.EncodeOptions,
    "train": params.TrainOptions,
    "recommend": params.RecommendOptions,
    "finetune-encoder": params.EncoderOptions,
    "forget-user": params.DataOptions,
}
OPTIONS = sorted(OPTION_GROUP)


def another_value(name: str) -> tuple[str, Any]:
    """A valid value of option `name` other than its default: (as the environment writes
    it, as the settings hold it)."""
    info = Settings.option(name)
    default = info.get_default(call_default_factory=True)
    kind = info.annotation
    choices = typing.get_args(kind)
    if typing.get_origin(kind) is typing.Literal:
        value = next(c for c in choices if c != default)
        return value, value
    if type(None) in choices:
        kind = next(c for c in choices if c is not type(None))
    low = bounds(info).get("min", 0)
    if kind is bool:
        return ("false", False) if default else ("true", True)
    if kind is int:
        value = max(int(low), 1) + (default or 0) + 1
        value = min(value, int(bounds(info).get("max", value)))
        return str(value), value
    if kind is float:
        value = 0.5 if default != 0.5 else 0.25
        return str(value), value
    if kind is Path:
        return "/tmp/elsewhere", Path("/tmp/elsewhere")
    if typing.get_origin(kind) is tuple:
        return '["ease", "content"]', ("ease", "content")
    return "something-else", "something-else"


# -- one declaration, one name --------------------------------------------------------------
def test_every_option_has_one_group_and_a_description():
    declared = [name for group in GROUPS.values() for name in group.model_fields]
    assert sorted(declared) == OPTIONS  # no name in two groups
    for name in OPTIONS:
        assert Settings.option(name).description, name


@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_is_read_from_its_environment_variable(name, monkeypatch):
    written, held = another_value(name)
    assert Settings().value(name) != held
    monkeypatch.setenv(f"RECSYS_{name.upper()}", written)
    settings = Settings()
    assert settings.value(name) == held
    assert name in getattr(settings, OPTION_GROUP[name]).model_fields_set  # given, not default


def test_options_go_by_flat_name_into_their_group_and_arguments_beat_the_environment(
    monkeypatch,
):
    monkeypatch.setenv("RECSYS_K", "7")
    monkeypatch.setenv("RECSYS_SHARD_USERS", "9")
    settings = Settings(k=5, models=("ease",))
    assert (settings.recommend.k, settings.recommend.shard_users) == (5, 9)
    assert settings.train.models == ("ease",)
    moved = settings.updated(k=6, data_dir=Path("elsewhere"))
    assert (moved.recommend.k, moved.recommend.shard_users, moved.data_dir) == (
        6, 9, Path("elsewhere"),
    )  # fmt: skip
    assert "models" in moved.train.model_fields_set  # asked for, still
    assert "models" not in Settings().train.model_fields_set
    with pytest.raises(ValidationError):
        Settings(kay=5)  # a misspelt option is refused, not ignored


def test_bad_options_are_bad_input_naming_the_option_and_its_variable(monkeypatch):
    monkeypatch.setenv("RECSYS_K", "5000")
    with pytest.raises(ValidationError) as caught:
        Settings()
    code, line = exit_status(caught.value)
    assert code == 2
    assert "k (RECSYS_K)" in line and "5000" in line and "\n" not in line


# -- forms ----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", FORMS)
def test_an_empty_form_gives_the_settings_defaults(command):
    form = FORMS[command]
    assert form().settings() == Settings()
    offered = {"data_dir", *offered_options(command)}
    assert set(form.model_fields) - {"refresh"} == offered


@pytest.mark.parametrize(("command", "name"), [(c, n) for c in FORMS for n in offered_options(c)])
def test_each_form_field_is_its_option_with_the_same_bounds_and_default(command, name):
    form = FORMS[command]
    field = form.model_fields[name]
    info = Settings.option(name)
    assert field.default is None  # unset: the setting's own value applies
    assert field.description == describe(name, info)
    for bound, value in bounds(info).items():
        outside = value - 1 if bound == "min" else value + 1
        with pytest.raises(ValidationError):
            form(**{name: outside})
        with pytest.raises(ValidationError):
            Settings(**{name: outside})
        assert form(**{name: value}).settings().value(name) == value
    _, held = another_value(name)
    given = list(held) if isinstance(held, tuple) else str(held) if isinstance(held, Path) else held
    assert form(**{name: given}).settings().value(name) == held


def test_stages_offer_their_groups_and_no_service_group():
    for command, groups in OFFERED.items():
        assert not set(groups) & set(SERVICE_GROUPS), command
    # the nightly runs every stage; ranking by a text query is `recs --query` alone
    assert set(OFFERED["nightly"]) == set(GROUPS) - set(SERVICE_GROUPS) - {"query"}
    assert OFFERED["recs"] == ("query",)
    assert "k" not in params.IngestOptions.model_fields  # an ingest run is not asked for K
    with pytest.raises(ValidationError):
        params.IngestOptions(k=5)


# -- the CLI --------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [c for c in OFFERED if c != "forget-user"])
def test_each_command_offers_the_options_of_its_groups(command):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    for name in offered_options(command):
        flag = "--" + name.replace("_", "-")
        assert flag in result.output, (command, flag)
        assert f"Env RECSYS_{name.upper()}." in result.output, (command, name)


def test_cli_options_show_the_settings_bounds_and_defaults():
    result = CliRunner().invoke(app, ["recommend", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    assert "Recommendations per user (default 20). Env RECSYS_K." in result.output
    assert "1<=x<=1000" in result.output  # the bounds of the k setting
    refused = CliRunner().invoke(app, ["recommend", "--k", "1001"])
    assert refused.exit_code == 2


def test_a_field_becomes_an_option_whose_value_reaches_the_command():
    class Extra(BaseModel):
        window_days: int | None = Field(None, ge=1, description="Days to look back.")
        models: tuple[str, ...] = Field(("a",), description="Models.")
        verbose: bool = Field(False, description="Say more.")

    seen: dict[str, Any] = {}
    tiny = typer.Typer()

    @tiny.command()
    @with_options("given", Extra.model_fields, extra_flags={"window_days": ("--days",)})
    def show(name: str = "x", *, given: dict[str, Any]) -> None:
        seen.update(name=name, given=given)

    runner = CliRunner()
    assert runner.invoke(tiny, ["--days", "3", "--models", "ease(reg=2, x=1),blend"]).exit_code == 0
    assert seen == {
        "name": "x",
        "given": {"window_days": 3, "models": ("ease(reg=2, x=1)", "blend")},
    }
    assert runner.invoke(tiny, ["--window-days", "2", "--verbose"]).exit_code == 0
    assert seen["given"] == {"window_days": 2, "verbose": True}
    assert runner.invoke(tiny, ["--window-days", "0"]).exit_code == 2  # the field's bound
    assert "Days to look back." in runner.invoke(tiny, ["--help"]).output


# -- defaults elsewhere come from the settings ---------------------------------------------
def test_stage_options_take_their_defaults_from_the_settings():
    settings = Settings()
    assert FitOptions().seed == settings.compute.seed
    assert next(f.default for f in dataclasses.fields(FinetuneConfig) if f.name == "seed") == (
        settings.compute.seed
    )
    assert params.FinetuneOptions().config(settings.updated(seed=7)).seed == 7


def test_the_task_runner_is_chosen_from_the_run_s_settings_on_first_use():
    runner = ChosenTaskRunner()  # what the flows carry since import: nothing chosen yet
    with runner.duplicate() as started:
        assert started.engine is None  # entered before the run's parameters are at hand
        engine = started.started(Settings(task_runner="thread"))
        assert isinstance(engine, ThreadPoolTaskRunner) and started.started() is engine
    assert started.engine is None
    with pytest.raises(InputError, match="spark"), runner.duplicate() as started:
        started.started(Settings(task_runner="spark"))
    with pytest.raises(RuntimeError, match="no flow run"), runner.duplicate() as started:
        started.started()  # outside a flow run there are no run settings to read


def test_pointing_a_command_at_its_data_dir_exports_no_run_setting(tmp_path, monkeypatch):
    """The run gets its data directory in its options, not through RECSYS_DATA_DIR."""
    from flows.cli.runs import point_at_data_dir

    monkeypatch.delenv("RECSYS_DATA_DIR", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))  # kept as it is
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    point_at_data_dir(tmp_path / "lake")
    assert (tmp_path / "lake").is_dir()
    assert "RECSYS_DATA_DIR" not in os.environ


def test_the_readme_lists_every_option_in_its_group():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines() if line[:2] == "| "}
    missing = [
        name
        for name, group in OPTION_GROUP.items()
        if f"`{name.upper()}`" not in rows.get(group, "")
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("written", "models"),
    [
        ("ease,blend", ("ease", "blend")),
        ("ease(reg=300, window=5), content", ("ease(reg=300, window=5)", "content")),
        ('["ease", "content(reg=1)"]', ("ease", "content(reg=1)")),
    ],
)
def test_models_are_written_as_on_the_command_line_or_as_json(written, models, monkeypatch):
    monkeypatch.setenv("RECSYS_MODELS", written)
    assert Settings().train.models == models


@pytest.mark.parametrize("command", ["ingest", "encode", "train", "recommend", "nightly"])
def test_a_bad_variable_is_refused_before_a_run_starts(command, tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_ENCODER_PRECISION", "fp8")
    monkeypatch.setenv("RECSYS_K", "5000")
    data_dir = tmp_path / "lake"
    result = CliRunner().invoke(app, [command, "--data-dir", str(data_dir)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid options: ")
    assert not data_dir.exists()  # refused before the data directory or Prefect was touched
