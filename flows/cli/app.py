"""The `recsys` typer app and the option types its commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.settings_help import setting_bounds, setting_help

app = typer.Typer(
    name="recsys",
    help="Nightly recommendations from behavior logs and language-model item embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def setting_option(name: str, flag: str, *, form: str = "") -> Any:
    """A typer option that overrides setting `name`: its bounds, description and default come
    from `Settings` (through `flows.settings_help`), so an option is declared once there and
    named once here.

    Args:
        name: The setting.
        flag: The option's name on the command line.
        form: How the value is written on the command line, when that differs from the
            setting's own form (e.g. a comma-separated list).
    """
    written = f" {form}" if form else ""
    described = f"{setting_help(name)}{written} Env RECSYS_{name.upper()}."
    return typer.Option(flag, help=described, **setting_bounds(name))


DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir", envvar="RECSYS_DATA_DIR", help="Data directory with the tables and MLflow."
    ),
]
MovieLens = Annotated[str | None, typer.Option("--movielens", help="A GroupLens MovieLens folder.")]
Events = Annotated[
    list[str] | None,
    typer.Option("--events", help="Generic events: file, folder or glob (repeatable)."),
]
Items = Annotated[str | None, typer.Option("--items", help="Generic item catalog file.")]
K = Annotated[int | None, setting_option("k", "--k")]
Models = Annotated[
    str | None,
    setting_option("models", "--models", form="Comma-separated, e.g. 'ease,blend'."),
]
Encoder = Annotated[str | None, setting_option("encoder", "--encoder")]
BotLimit = Annotated[int | None, setting_option("bot_events_per_day", "--bot-events-per-day")]
Device = Annotated[str | None, setting_option("device", "--device")]
Protocol = Annotated[
    str | None,
    typer.Option(
        "--protocol",
        help="Evaluation protocol: user_temporal (default), global_temporal, leave_one_out, "
        "user_random, or (evaluate only) cold_items.",
    ),
]
