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
    str | None,
    typer.Option(
        "--encoder",
        help="Hugging Face id, local model folder, or a fine-tuned version "
        "(models:/recsys-encoder/N).",
    ),
]
Device = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]


def _prepare(data_dir: Path) -> None:
    """Point Prefect at the data directory before it is imported (unless a server is set)."""
    root = data_dir.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ["RECSYS_DATA_DIR"] = str(root)


def _options(data_dir: Path, k=None, models=None, encoder=None) -> Any:
    from flows.params import RunOptions

    return RunOptions(
        data_dir=str(data_dir),
        k=k,
        models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
        encoder=encoder,
    )


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
def encode(
    data_dir: DataDir = Path("lake"),
    encoder: Encoder = None,
    device: Device = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=1, help="Texts per batch (64 on CPU, 1024 on CUDA)."),
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option("--max-length", min=8, max=8192, help="Token limit per item text (256)."),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option("--shards", min=1, max=4096, help="Split the work into N encode tasks (1)."),
    ] = None,
) -> None:
    """Embed items whose text (or the encoder) changed since the last run."""

    def run() -> dict:
        _prepare(data_dir)
        from flows.params import RunOptions
        from flows.stages import encode_flow

        extra = {"device": device, "encoder_batch_size": batch_size,
                 "encoder_max_length": max_length, "encode_shards": shards}  # fmt: skip
        options = RunOptions(
            **_options(data_dir, encoder=encoder).model_dump(exclude_none=True),
            **{k: v for k, v in extra.items() if v is not None},
        )
        return encode_flow(options=options)

    typer.echo(json.dumps(_guard(run), indent=2, default=str))


@app.command("finetune-encoder")
def finetune_encoder(
    data_dir: DataDir = Path("lake"),
    encoder: Annotated[
        str | None,
        typer.Option("--encoder", help="Base encoder to start from (default: all-MiniLM-L6-v2)."),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="Train only on this split's training part: global_temporal (what `train` "
            "evaluates on), cold_items, or all (every event).",
        ),
    ] = "global_temporal",
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate",
            help="Score the content model on the split's held-out part with the base and the "
            "fine-tuned encoder (Recall/NDCG@10,20).",
        ),
    ] = False,
    pairs: Annotated[
        int | None, typer.Option("--pairs", min=2, help="Training pairs (2048).")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Passes over the pairs (1).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=2, help="Pairs per step (32).")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop after N steps.")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option("--learning-rate", min=0.0, help="Peak learning rate (3e-5).")
    ] = None,
    max_length: Annotated[
        int | None, typer.Option("--max-length", min=8, help="Token limit while training (128).")
    ] = None,
    window: Annotated[
        int | None,
        typer.Option("--window", min=1, help="Items this many positions apart co-occur (5)."),
    ] = None,
    device: Device = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Also save the Hugging Face folder here.")
    ] = None,
) -> None:
    """Fine-tune the encoder on items users consume together; register it in MLflow as
    models:/recsys-encoder/N for `recsys encode --encoder`."""

    def run() -> dict:
        from flows.params import FinetuneOptions, RunOptions
        from recsys_core.pipeline.finetune import SPLITS

        # usage errors are answered before Prefect starts or anything is written
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
        finetune = FinetuneOptions(
            split=split, evaluate=evaluate, output=str(output) if output else None, pairs=pairs,
            epochs=epochs, batch_size=batch_size, max_steps=max_steps,
            learning_rate=learning_rate, max_length=max_length, window=window,
        )  # fmt: skip
        finetune.config()
        _prepare(data_dir)
        from flows.stages import finetune_encoder_flow

        options = RunOptions(
            **_options(data_dir, encoder=encoder).model_dump(exclude_none=True),
            **({"device": device} if device else {}),
        )
        return finetune_encoder_flow(options=options, finetune=finetune)

    report = _guard(run)
    typer.echo(json.dumps(report, indent=2, default=str))
    typer.echo(
        f"registered {report['reference']}; use it with: recsys encode --data-dir {data_dir} "
        f"--encoder {report['reference']}",
        err=True,
    )


@app.command()
def train(data_dir: DataDir = Path("lake"), models: Models = None, encoder: Encoder = None) -> None:
    """Train and evaluate candidates, log them to MLflow, register and gate the champion."""

    def run() -> dict:
        _prepare(data_dir)
        from flows.stages import train_flow

        return train_flow(options=_options(data_dir, models=models, encoder=encoder))

    report = _guard(run)
    typer.echo(render_candidates(report))


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
    metric = report["metric"]
    names = ["ndcg@10", "recall@10", "ndcg@20", "recall@20"]
    lines = [f"{'model':<14}" + "".join(f"{n:>11}" for n in names) + f"{'fit s':>9}"]
    for c in report["candidates"]:
        values = "".join(f"{c['metrics'][n]:>11.4f}" for n in names)
        lines.append(f"{c['model']:<14}{values}{c['fit_seconds']:>9.2f}")
    lines.append(f"selection metric {metric} on {report['protocol']} holdout")
    lines.append(
        f"champion: {report['champion']} ({report['champion_model']}): {report['decision']}"
    )
    return "\n".join(lines)


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
