"""The `recsys` typer app and the option types its commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="recsys",
    help="Nightly recommendations from behavior logs and language-model item embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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
K = Annotated[int | None, typer.Option("--k", min=1, max=1000, help="Recommendations per user.")]
Models = Annotated[str | None, typer.Option("--models", help="Comma-separated candidate models.")]
Encoder = Annotated[
    str | None,
    typer.Option(
        "--encoder",
        help="Hugging Face id, local model folder, or a fine-tuned version "
        "(models:/recsys-encoder/N).",
    ),
]
BotLimit = Annotated[
    int | None,
    typer.Option(
        "--bot-events-per-day",
        min=1,
        help="Report users with more events than this on one day (default 1000, env "
        "RECSYS_BOT_EVENTS_PER_DAY).",
    ),
]
Device = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
Protocol = Annotated[
    str | None,
    typer.Option(
        "--protocol",
        help="Evaluation protocol: user_temporal (default), global_temporal, leave_one_out, "
        "user_random, or (evaluate only) cold_items.",
    ),
]
