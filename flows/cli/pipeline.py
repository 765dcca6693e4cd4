"""The pipeline's commands: the nightly run, one command per stage, fine-tuning the encoder,
and evaluating candidates without registering them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.app import (
    BotLimit,
    DataDir,
    Device,
    Encoder,
    Events,
    Items,
    K,
    Models,
    MovieLens,
    Protocol,
    app,
    setting_option,
)
from flows.cli.exits import guard
from flows.cli.render import render_candidates, render_summary
from flows.cli.runs import (
    check_models,
    checked_source,
    environment_variable,
    model_specs,
    point_at_data_dir,
    run_options,
)
from recsys_core.errors import InputError


@app.command()
def nightly(
    data_dir: DataDir = Path("lake"),
    movielens: MovieLens = None,
    events: Events = None,
    items: Items = None,
    k: K = None,
    models: Models = None,
    encoder: Encoder = None,
    bot_events_per_day: BotLimit = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the whole pipeline: ingest, encode, train, recommend, publish."""

    def run() -> dict:
        source = checked_source(movielens, events, items)
        check_models(models)
        point_at_data_dir(data_dir)
        from flows.nightly import nightly as nightly_flow

        options = run_options(data_dir, k, models, encoder)
        options.bot_events_per_day = bot_events_per_day
        return nightly_flow(source=source, options=options)

    summary = guard(run)
    typer.echo(json.dumps(summary, indent=2, default=str) if as_json else render_summary(summary))


@app.command()
def ingest(
    data_dir: DataDir = Path("lake"),
    movielens: MovieLens = None,
    events: Events = None,
    items: Items = None,
    bot_events_per_day: BotLimit = None,
) -> None:
    """Validate and store new events and catalog rows (bad rows go to quarantine)."""

    def run() -> dict:
        source = checked_source(movielens, events, items)
        point_at_data_dir(data_dir)
        from flows.stages import ingest_flow

        options = run_options(data_dir)
        options.bot_events_per_day = bot_events_per_day
        return ingest_flow(source=source, options=options)

    typer.echo(json.dumps(guard(run), indent=2, default=str))


@app.command()
def encode(
    data_dir: DataDir = Path("lake"),
    encoder: Encoder = None,
    device: Device = None,
    batch_size: Annotated[int | None, setting_option("encoder_batch_size", "--batch-size")] = None,
    max_length: Annotated[int | None, setting_option("encoder_max_length", "--max-length")] = None,
    shards: Annotated[int | None, setting_option("encode_shards", "--shards")] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            "--precision",
            help="auto (bf16 on CUDA, fp32 elsewhere), fp32, bf16, fp16, or int8 (CPU: faster, "
            "vectors within a cosine of ~0.99 of fp32, kept under their own encoder id). "
            "Env RECSYS_ENCODER_PRECISION.",
        ),
    ] = None,
) -> None:
    """Embed items whose text (or the encoder) changed since the last run.

    A run that is stopped (Ctrl-C, SIGTERM) or killed keeps the rows it staged; the next
    run with the same encoder takes them over and encodes only the rest.
    """

    def run() -> dict:
        if precision is not None:
            from recsys_core.encoders.item_text_encoder import PRECISIONS

            if precision not in PRECISIONS:  # usage errors before anything starts
                raise InputError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        point_at_data_dir(data_dir)
        from flows.params import RunOptions
        from flows.stages import encode_flow

        extra = {"device": device, "encoder_batch_size": batch_size,
                 "encoder_max_length": max_length, "encode_shards": shards}  # fmt: skip
        options = RunOptions(
            **run_options(data_dir, encoder=encoder).model_dump(exclude_none=True),
            **{k: v for k, v in extra.items() if v is not None},
        )
        # RunOptions has no precision field; Settings reads it from the environment
        with environment_variable("RECSYS_ENCODER_PRECISION", precision):
            return encode_flow(options=options)

    typer.echo(json.dumps(guard(run), indent=2, default=str))


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
        point_at_data_dir(data_dir)
        from flows.stages import finetune_encoder_flow

        options = RunOptions(
            **run_options(data_dir, encoder=encoder).model_dump(exclude_none=True),
            **({"device": device} if device else {}),
        )
        return finetune_encoder_flow(options=options, finetune=finetune)

    report = guard(run)
    typer.echo(json.dumps(report, indent=2, default=str))
    typer.echo(
        f"registered {report['reference']}; use it with: recsys encode --data-dir {data_dir} "
        f"--encoder {report['reference']}",
        err=True,
    )


@app.command()
def train(
    data_dir: DataDir = Path("lake"),
    models: Models = None,
    encoder: Encoder = None,
    protocol: Protocol = None,
) -> None:
    """Train and evaluate candidates, log them to MLflow, register and gate the champion."""

    def run() -> dict:
        check_models(models, protocol)
        point_at_data_dir(data_dir)
        from flows.stages import train_flow

        return train_flow(
            options=run_options(data_dir, models=models, encoder=encoder, protocol=protocol)
        )

    report = guard(run)
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
        check_models(models, protocol)
        point_at_data_dir(data_dir)
        from recsys_core.api import evaluate_candidates

        return evaluate_candidates(
            data_dir, models=model_specs(models) if models else None, encoder=encoder,
            protocol=protocol, progress=True, log=lambda line: typer.echo(line, err=True),
        )  # fmt: skip

    report = guard(run)
    typer.echo(json.dumps(report, indent=2, default=str) if as_json else render_candidates(report))


@app.command()
def recommend(
    data_dir: DataDir = Path("lake"),
    k: K = None,
    retention_days: Annotated[
        float | None, setting_option("retention_days", "--retention-days")
    ] = None,
    unavailable: Annotated[
        Path | None,
        typer.Option(
            "--unavailable",
            help="Item ids never to recommend: .txt (one per line) or CSV/JSONL/Parquet with "
            "an item_id column.",
        ),
    ] = None,
    shard_users: Annotated[int | None, setting_option("shard_users", "--shard-users")] = None,
) -> None:
    """Publish top-K recommendations for every user from the champion, in one commit."""

    def run() -> dict:
        if unavailable is not None:
            from recsys_core.pipeline.recommend import read_item_ids

            read_item_ids(unavailable)  # bad input fails before the run starts
        point_at_data_dir(data_dir)
        from flows.stages import recommend_flow

        options = run_options(data_dir, k=k).model_copy(
            update={
                "retention_days": retention_days,
                "unavailable_items": str(unavailable.expanduser().resolve()) if unavailable
                else None,
                "shard_users": shard_users,
            }
        )  # fmt: skip
        return recommend_flow(options=options)

    typer.echo(json.dumps(guard(run), indent=2, default=str))
