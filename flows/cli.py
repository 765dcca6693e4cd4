"""`recsys`: run the nightly pipeline or one stage, and read recommendations.

Exit codes: 0 ok; 2 bad input or usage (one line naming the file, row or column, and why);
1 internal failure. A failed run publishes nothing.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from recsys_core.errors import InputError

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
    str | None, typer.Option("--encoder", help="Hugging Face id or local model folder.")
]


def _prepare(data_dir: Path) -> None:
    """Point Prefect at the data directory before it is imported (unless a server is set)."""
    root = data_dir.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ["RECSYS_DATA_DIR"] = str(root)


def _options(data_dir: Path, k=None, models=None, encoder=None, protocol=None) -> Any:
    from flows.params import RunOptions

    return RunOptions(
        data_dir=str(data_dir),
        k=k,
        models=_model_specs(models) if models else None,
        encoder=encoder,
        protocol=protocol,
    )


def _model_specs(models: str) -> list[str]:
    """Split `ease,blend` or `ease(reg=300, history_half_life=5),content` at top-level commas."""
    specs, depth, current = [], 0, ""
    for char in models:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            specs.append(current)
            current = ""
        else:
            current += char
    specs.append(current)
    return [s.strip() for s in specs if s.strip()]


def _check_models(models: str | None, protocol: str | None = None) -> None:
    """Refuse unknown models, bad model parameters or an unknown protocol before a run starts."""
    from recsys_core.data.splits import check_protocol
    from recsys_core.models import create

    for spec in _model_specs(models or ""):
        create(spec)
    if protocol is not None:
        check_protocol(protocol)


def _source(movielens, events, items) -> Any:
    from flows.params import Source
    from recsys_core.data.sources import preflight

    source = Source(movielens=movielens, events=list(events or []), items=items)
    preflight(source.spec())  # files and required columns, before any run starts
    return source


def _guard(action: Callable[[], Any]) -> Any:
    """Run `action`, mapping failures onto the exit-code contract."""
    try:
        return action()
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # an internal failure: say what, keep the traceback on request
        if os.environ.get("RECSYS_DEBUG"):
            traceback.print_exc()
        typer.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def nightly(
    data_dir: DataDir = Path("lake"),
    movielens: MovieLens = None,
    events: Events = None,
    items: Items = None,
    k: K = None,
    models: Models = None,
    encoder: Encoder = None,
) -> None:
    """Run the whole pipeline: ingest, encode, train, recommend, publish."""

    def run() -> dict:
        source = _source(movielens, events, items)
        _check_models(models)
        _prepare(data_dir)
        from flows.nightly import nightly as nightly_flow

        return nightly_flow(source=source, options=_options(data_dir, k, models, encoder))

    summary = _guard(run)
    typer.echo(render_summary(summary))


@app.command()
def ingest(
    data_dir: DataDir = Path("lake"),
    movielens: MovieLens = None,
    events: Events = None,
    items: Items = None,
) -> None:
    """Validate and store new events and catalog rows (bad rows go to quarantine)."""

    def run() -> dict:
        source = _source(movielens, events, items)
        _prepare(data_dir)
        from flows.stages import ingest_flow

        return ingest_flow(source=source, options=_options(data_dir))

    typer.echo(json.dumps(_guard(run), indent=2, default=str))


@app.command()
def encode(data_dir: DataDir = Path("lake"), encoder: Encoder = None) -> None:
    """Embed items whose text (or the encoder) changed since the last run."""

    def run() -> dict:
        _prepare(data_dir)
        from flows.stages import encode_flow

        return encode_flow(options=_options(data_dir, encoder=encoder))

    typer.echo(json.dumps(_guard(run), indent=2, default=str))


Protocol = Annotated[
    str | None,
    typer.Option(
        "--protocol",
        help="Evaluation protocol: user_temporal (default), global_temporal, leave_one_out, "
        "user_random, or (evaluate only) cold_items.",
    ),
]


@app.command()
def train(
    data_dir: DataDir = Path("lake"),
    models: Models = None,
    encoder: Encoder = None,
    protocol: Protocol = None,
) -> None:
    """Train and evaluate candidates, log them to MLflow, register and gate the champion."""

    def run() -> dict:
        _check_models(models, protocol)
        _prepare(data_dir)
        from flows.stages import train_flow

        return train_flow(
            options=_options(data_dir, models=models, encoder=encoder, protocol=protocol)
        )

    report = _guard(run)
    typer.echo(render_candidates(report))


@app.command()
def evaluate(
    data_dir: DataDir = Path("lake"),
    protocol: Protocol = None,
    models: Models = None,
    encoder: Encoder = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Fit and evaluate candidate models on any protocol and print the metrics table.

    Nothing is registered and no alias moves; runs go to the MLflow experiment
    `<experiment>-evaluation`.
    """

    def run() -> dict:
        _check_models(models, protocol)
        _prepare(data_dir)
        from recsys_core.pipeline.train import evaluate_models
        from recsys_core.storage import Lake

        settings = _options(data_dir, models=models, encoder=encoder).settings()
        lake = Lake(settings.data_dir)
        return evaluate_models(lake, settings, protocol=protocol, progress=True).as_dict()

    report = _guard(run)
    typer.echo(json.dumps(report, indent=2, default=str) if as_json else render_candidates(report))


@app.command()
def recommend(data_dir: DataDir = Path("lake"), k: K = None) -> None:
    """Publish top-K recommendations for every user from the champion model."""

    def run() -> dict:
        _prepare(data_dir)
        from flows.stages import recommend_flow

        return recommend_flow(options=_options(data_dir, k=k))

    typer.echo(json.dumps(_guard(run), indent=2, default=str))


@app.command()
def recs(
    user_id: Annotated[str, typer.Argument(help="External user id.")],
    data_dir: DataDir = Path("lake"),
    k: Annotated[int, typer.Option("--k", min=1, help="How many to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a user's published recommendations."""
    from recsys_core.reader import read_user_recommendations

    frame = _guard(lambda: read_user_recommendations(data_dir, user_id, k=k))
    if as_json:
        typer.echo(json.dumps({"user_id": user_id, "recommendations": frame.to_dicts()},
                              default=str, indent=2))  # fmt: skip
        return
    typer.echo(f"Recommendations for user {user_id} ({frame['model'][0]}):")
    for row in frame.iter_rows(named=True):
        because = f"  (because of {row['reason_title']})" if row["reason_title"] else ""
        typer.echo(f"{row['rank']:>3}. {row['title'] or row['item_id']}  "
                   f"[{row['score']:.3f}]{because}")  # fmt: skip


def render_candidates(report: dict) -> str:
    """Every candidate's metrics, the protocol and the gate's decision (train and evaluate)."""
    from recsys_core.pipeline.train import format_candidates

    return format_candidates(report)


def render_summary(summary: dict) -> str:
    ingest_r, encode_r, publish = summary["ingest"], summary["encode"], summary["publish"]
    data_dir = summary["data_dir"]
    first_user = publish.get("example_user") or "1"
    return "\n".join(
        [
            "",
            "Nightly run complete",
            f"  events     {ingest_r['events_total']} in total ({ingest_r['events_added']} added, "
            f"{ingest_r['duplicates']} duplicates, {ingest_r['quarantined']} quarantined); "
            f"{ingest_r['users_total']} users, {ingest_r['items_total']} items",
            f"  encoded    {encode_r['encoded']} items ({encode_r['reused']} unchanged) "
            f"with {encode_r['encoder']}",
            "",
            render_candidates(summary["train"]),
            "",
            f"  published  {publish['rows']} recommendations for {publish['users']} users "
            f"from {publish['model']} (version {publish['version']})",
            f"  tables     {data_dir}/{{events,items,item_embeddings,recommendations}}"
            " (Delta Lake)",
            f"  mlflow     {data_dir}/mlflow (make ui, then http://127.0.0.1:5000)",
            f"  try        .venv/bin/recsys recs {first_user} --data-dir {data_dir}",
        ]
    )


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
