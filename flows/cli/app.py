"""The `recsys` typer app, and options derived from declarations.

A command's options come from the fields that declare them: the run options of the groups it
offers (`flows.options.OFFERED`, declared in `recsys_core.settings`), the source of a run
(`flows.params.Source`), fine-tuning (`flows.params.FinetuneOptions`). `with_options` adds one
typer option per field, with the field's type, bounds, default and description, and hands the
command the values given on the command line as one dict.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, get_origin

import typer
from pydantic.fields import FieldInfo

from flows.options import bounds, describe, offered_options, without_none
from recsys_core.settings import OPTION_GROUP, Settings, written_list

app = typer.Typer(
    name="recsys",
    help="Nightly recommendations from behavior logs and language-model item embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def flag(name: str) -> str:
    """The command-line name of option `name` (`--bot-events-per-day`)."""
    return "--" + name.replace("_", "-")


def _option(
    name: str, info: FieldInfo, *, extra_flags: tuple[str, ...], env: bool, panel: str | None
) -> inspect.Parameter:
    """A keyword parameter whose annotation is the typer option of field `name`."""
    kind = without_none(info.annotation)
    text = describe(name, info) if kind is not bool else (info.description or "")
    if get_origin(kind) is tuple:  # a list of specs, written with commas
        kind = str
        text += " Comma-separated, e.g. 'ease,blend'."
    if env:
        text += f" Env {Settings.variable(name)}."
    option = typer.Option(
        flag(name), *extra_flags, help=text, rich_help_panel=panel, **bounds(info)
    )
    if kind is bool:
        return inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[bool, option]
        )
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None,
        annotation=Annotated[kind | None, option],
    )  # fmt: skip


def model_specs(models: str) -> list[str]:
    """Split `ease,blend` or `ease(reg=300, history_half_life=5),content` at top-level commas."""
    return written_list(models)


def _from_command_line(info: FieldInfo, value: Any) -> Any:
    """The value as the field takes it: a comma-separated list becomes a tuple."""
    if get_origin(without_none(info.annotation)) is tuple and isinstance(value, str):
        return tuple(written_list(value))
    return value


def with_options(
    into: str,
    fields: Mapping[str, FieldInfo],
    *,
    extra_flags: Mapping[str, tuple[str, ...]] | None = None,
    env: bool = False,
    panels: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command one option per field; the command's parameter `into` receives the
    given ones (left-out options and unset flags are absent) as a dict by field name.

    Args:
        into: The command's parameter that takes the dict.
        fields: The fields, by name (their flags are `--name-with-dashes`).
        extra_flags: More flags of a field, e.g. a short form a command has always had.
        env: The fields are run options; their help names their environment variable.
        panels: The `--help` panel of each field.
    """
    extra_flags = extra_flags or {}
    panels = panels or {}

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != into]
        clash = {p.name for p in own} & fields.keys()
        if clash:
            raise TypeError(f"{command.__name__} declares {sorted(clash)} itself")
        added = [
            _option(name, info, extra_flags=extra_flags.get(name, ()), env=env,
                    panel=panels.get(name))
            for name, info in fields.items()
        ]  # fmt: skip

        @functools.wraps(command)
        def with_given(**values: Any) -> Any:
            given = {}
            for name, info in fields.items():
                value = values.pop(name)
                if value is not None and value is not False:
                    given[name] = _from_command_line(info, value)
            return command(**values, **{into: given})

        parameters = [*own, *added]
        with_given.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        with_given.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_given

    return decorate


def run_options(
    command: str, *, extra_flags: Mapping[str, tuple[str, ...]] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The run options `command` offers, in a `--help` panel per group; the command's
    parameter `options` receives the given ones."""
    fields = offered_options(command)
    panels = {name: f"{OPTION_GROUP[name].capitalize()} options" for name in fields}
    return with_options("options", fields, extra_flags=extra_flags, env=True, panels=panels)


# every command takes it, and needs it before a run starts (to point Prefect at it)
DataDir = Annotated[
    Path,
    typer.Option(
        flag("data_dir"),
        envvar=Settings.variable("data_dir"),
        help=Settings.option("data_dir").description,
    ),
]
