"""`recsys`: run the nightly pipeline or one stage, and read recommendations.

Exit codes: 0 ok; 2 bad input or usage (one line naming the file, row or column, and why);
1 internal failure; 130 stopped by SIGINT (Ctrl-C) or SIGTERM. A failed or stopped run
publishes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from recsys_core.cancel import Stopped, install_signal_handlers
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


def _prepare(data_dir: Path) -> None:
    """Point Prefect at the data directory before it is imported (unless a server is set)."""
    root = data_dir.expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"data directory {root} cannot be created: {exc.strerror}") from None
    if not os.access(root, os.W_OK):
        raise InputError(f"data directory {root} is not writable (read-only or no permission)")
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
    from recsys_core.models.registry import split_top_level

    return [s.strip() for s in split_top_level(models) if s.strip()]


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


STOPPED_EXIT_CODE = 130  # what shells report for a process ended by Ctrl-C


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """Set an environment variable for the block (unless `value` is None), then restore it."""
    if value is None:
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _stopped(exc: Stopped) -> typer.Exit:
    typer.echo(f"stopped: {exc.reason}; nothing was committed", err=True)
    return typer.Exit(STOPPED_EXIT_CODE)


def _guard(action: Callable[[], Any]) -> Any:
    """Run `action`, mapping failures onto the exit-code contract."""
    try:
        return action()
    except Stopped as exc:
        raise _stopped(exc) from None
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # an internal failure: say what, keep the traceback on request
        if os.environ.get("RECSYS_DEBUG"):
            traceback.print_exc()
        problem = storage_problem(exc)
        if problem is not None:
            typer.echo(f"error: {problem}; tables keep their previous version", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


STORAGE_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
}
STORAGE_MESSAGES = {
    "no space left on device": errno.ENOSPC,
    "os error 28": errno.ENOSPC,
    "database or disk is full": errno.ENOSPC,
    "read-only file system": errno.EROFS,
    "os error 30": errno.EROFS,
    "attempt to write a readonly database": errno.EROFS,
}


def storage_problem(exc: BaseException) -> str | None:
    """One line for a failure of the disk rather than of the pipeline, else None.

    Storage errors arrive as OSError from Python and pyarrow, but as plain exceptions with
    the OS message from the Delta Lake (Rust) and sqlite layers, so both are checked, along
    the chain of causes.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in STORAGE_ERRORS:
            where = f" writing {seen.filename}" if seen.filename else ""
            return f"{STORAGE_ERRORS[seen.errno]}{where}"
        text = str(seen).lower()
        for needle, code in STORAGE_MESSAGES.items():
            if needle in text:
                return STORAGE_ERRORS[code]
        seen = seen.__cause__ or seen.__context__
    return None


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
        source = _source(movielens, events, items)
        _check_models(models)
        _prepare(data_dir)
        from flows.nightly import nightly as nightly_flow

        options = _options(data_dir, k, models, encoder)
        options.bot_events_per_day = bot_events_per_day
        return nightly_flow(source=source, options=options)

    summary = _guard(run)
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
        source = _source(movielens, events, items)
        _prepare(data_dir)
        from flows.stages import ingest_flow

        options = _options(data_dir)
        options.bot_events_per_day = bot_events_per_day
        return ingest_flow(source=source, options=options)

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
        _prepare(data_dir)
        from flows.params import RunOptions
        from flows.stages import encode_flow

        extra = {"device": device, "encoder_batch_size": batch_size,
                 "encoder_max_length": max_length, "encode_shards": shards}  # fmt: skip
        options = RunOptions(
            **_options(data_dir, encoder=encoder).model_dump(exclude_none=True),
            **{k: v for k, v in extra.items() if v is not None},
        )
        # RunOptions has no precision field; Settings reads it from the environment
        with _environment("RECSYS_ENCODER_PRECISION", precision):
            return encode_flow(options=options)

    typer.echo(json.dumps(_guard(run), indent=2, default=str))


Protocol = Annotated[
    str | None,
    typer.Option(
        "--protocol",
        help="Evaluation protocol: user_temporal (default), global_temporal, leave_one_out, "
        "user_random, or (evaluate only) cold_items.",
    ),
]


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
        return evaluate_models(
            lake, settings, protocol=protocol, progress=True,
            log=lambda line: typer.echo(line, err=True),
        ).as_dict()  # fmt: skip

    report = _guard(run)
    typer.echo(json.dumps(report, indent=2, default=str) if as_json else render_candidates(report))


@app.command()
def recommend(
    data_dir: DataDir = Path("lake"),
    k: K = None,
    retention_days: Annotated[
        float | None,
        typer.Option(
            "--retention-days",
            min=0,
            max=30,
            help="Days a replaced version stays restorable before vacuum (default 7).",
        ),
    ] = None,
    unavailable: Annotated[
        Path | None,
        typer.Option(
            "--unavailable",
            help="Item ids never to recommend: .txt (one per line) or CSV/JSONL/Parquet with "
            "an item_id column.",
        ),
    ] = None,
    shard_users: Annotated[
        int | None, typer.Option("--shard-users", min=1, help="Users per shard (100000).")
    ] = None,
) -> None:
    """Publish top-K recommendations for every user from the champion, in one commit."""

    def run() -> dict:
        if unavailable is not None:
            from recsys_core.pipeline.recommend import read_item_ids

            read_item_ids(unavailable)  # bad input fails before the run starts
        _prepare(data_dir)
        from flows.stages import recommend_flow

        options = _options(data_dir, k=k).model_copy(
            update={
                "retention_days": retention_days,
                "unavailable_items": str(unavailable.expanduser().resolve()) if unavailable
                else None,
                "shard_users": shard_users,
            }
        )  # fmt: skip
        return recommend_flow(options=options)

    typer.echo(json.dumps(_guard(run), indent=2, default=str))


@app.command()
def recs(
    user_id: Annotated[str, typer.Argument(help="External user id.")],
    data_dir: DataDir = Path("lake"),
    k: Annotated[int, typer.Option("--k", min=1, help="How many to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show the history item behind each one.")
    ] = False,
    query: Annotated[
        str | None,
        typer.Option(
            "--query", help="Rank live by a blend of this text's relevance and the model score."
        ),
    ] = None,
    query_weight: Annotated[
        float | None,
        typer.Option("--query-weight", min=0.0, max=1.0, help="Share of the query (0.5)."),
    ] = None,
) -> None:
    """Show a user's recommendations: the published ones, or live ones for a --query."""

    def run():
        from recsys_core.reader import add_titles, read_user_recommendations

        if query is None:
            return read_user_recommendations(data_dir, user_id, k=k)
        from recsys_core.pipeline.recommend import recommend_for_query
        from recsys_core.storage import Lake

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        settings = _options(data_dir, k=k).settings()
        frame = recommend_for_query(
            Lake(data_dir), settings, user_id, query, k=k, weight=query_weight
        )
        return add_titles(data_dir, frame)

    frame = _guard(run)
    model = frame["model"][0] if frame.height else ""
    if as_json:
        rows = frame.to_dicts()
        if explain:
            for row in rows:
                row["because"] = _because(row)
        payload = {"user_id": user_id, "model": model, "recommendations": rows}
        if query is not None:
            payload["query"] = query
        typer.echo(json.dumps(payload, default=str, indent=2))
        return
    matching = f" matching {query!r}" if query is not None else ""
    typer.echo(f"Recommendations for user {user_id}{matching} ({model}):")
    for row in frame.iter_rows(named=True):
        typer.echo(f"{row['rank']:>3}. {row['title'] or row['item_id']}  [{row['score']:.3f}]")
        if explain:
            typer.echo(f"     {_because(row)}")


def _because(row: dict) -> str:
    if row.get("reason_item_id") is None:
        return "no single item in your history stands out for this one"
    return f"because you watched {row.get('reason_title') or row['reason_item_id']}"


@app.command()
def rollback(
    to: Annotated[
        int | None, typer.Option("--to", min=0, help="The recommendations version to restore.")
    ] = None,
    list_versions: Annotated[
        bool, typer.Option("--list", help="List the versions that can be restored.")
    ] = False,
    data_dir: DataDir = Path("lake"),
) -> None:
    """Restore an earlier night of recommendations (one new commit), or --list versions."""
    from recsys_core.storage import Lake

    lake = Lake(data_dir)
    if list_versions or to is None:
        history = _guard(lambda: lake.history("recommendations"))
        typer.echo(render_versions(history))
        if to is None and not list_versions:
            typer.echo("restore one with: recsys rollback --to VERSION", err=True)
            raise typer.Exit(2)
        return

    def run() -> int:
        return lake.rollback("recommendations", to, metadata={"run_id": "cli"})

    version = _guard(run)
    restored = _guard(lambda: lake.scan("recommendations", version=version).collect())
    typer.echo(
        f"recommendations version {to} restored as version {version}: {restored.height} rows, "
        f"{restored['user_id'].n_unique()} users, model "
        f"{', '.join(sorted(restored['model'].unique().to_list())) or '-'}"
    )


def render_versions(history: list[dict]) -> str:
    """One line per commit, newest first: what each version holds and where it came from."""
    from datetime import UTC, datetime

    lines = [f"{'version':>7}  {'committed (UTC)':<19}  {'operation':<24}  {'model':<14}  rows"]
    for entry in history:
        when = datetime.fromtimestamp(entry.get("timestamp", 0) / 1000, UTC)
        operation = entry.get("operation", "")
        if "restored_version" in entry:
            operation = f"{operation} of {entry['restored_version']}"
        lines.append(
            f"{entry.get('version', ''):>7}  {when:%Y-%m-%d %H:%M:%S}  {operation:<24}  "
            f"{entry.get('model', ''):<14}  {entry.get('rows', '')}"
        )
    return "\n".join(lines)


@app.command("forget-user")
def forget_user(
    user_id: Annotated[str, typer.Argument(help="External user id to forget.")],
    data_dir: DataDir = Path("lake"),
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a user's data everywhere, including old table versions (no rollback past it)."""
    if not yes:
        typer.confirm(
            f"Forget user {user_id!r}: delete their rows and every older version of the "
            "events, recommendations and quarantine tables?",
            abort=True,
        )

    def run() -> dict:
        _prepare(data_dir)
        from flows.privacy import forget_user_flow

        return forget_user_flow(user_id=user_id, options=_options(data_dir))

    typer.echo(json.dumps(_guard(run), indent=2, default=str))


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder for events.* and items.*.")],
    users: Annotated[int, typer.Option("--users", min=1, help="Number of users.")] = 1000,
    items: Annotated[int, typer.Option("--items", min=1, help="Number of items.")] = 500,
    events: Annotated[int, typer.Option("--events", min=0, help="Number of events.")] = 50_000,
    clusters: Annotated[int, typer.Option("--clusters", min=1, help="Taste clusters.")] = 8,
    days: Annotated[int, typer.Option("--days", min=1, help="Days the events span.")] = 180,
    duplicate_fraction: Annotated[
        float,
        typer.Option("--duplicate-fraction", min=0.0, max=0.99, help="Extra exact repeats."),
    ] = 0.0,
    fmt: Annotated[
        str, typer.Option("--format", help="csv, jsonl or parquet.", case_sensitive=False)
    ] = "csv",
    compression: Annotated[
        str, typer.Option("--compression", help="none, gzip or zstd (csv and jsonl).")
    ] = "none",
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    min_words: Annotated[
        int, typer.Option("--min-words", min=0, help="Fewest words of an item description.")
    ] = 10,
    max_words: Annotated[
        int, typer.Option("--max-words", min=0, help="Most words of an item description.")
    ] = 300,
) -> None:
    """Write a synthetic log and catalog in the generic format.

    Power-law popularity, user taste clusters and item text whose words follow the clusters,
    so a model can learn from both; written in chunks, so 20M events need little memory.
    """
    from recsys_core.data.synth import COMPRESSIONS, FORMATS, SynthConfig, write_synthetic

    def run() -> tuple[Path, Path]:
        if fmt.lower() not in FORMATS or compression.lower() not in COMPRESSIONS:
            raise InputError(
                f"--format must be one of {', '.join(FORMATS)} and --compression one of "
                f"{', '.join(COMPRESSIONS)}"
            )
        try:
            config = SynthConfig(
                users=users, items=items, events=events, clusters=clusters, days=days,
                duplicate_fraction=duplicate_fraction, seed=seed, min_words=min_words,
                max_words=max_words,
            )  # fmt: skip
            return write_synthetic(
                config, out, fmt=fmt.lower(), compression=compression.lower(),
                progress=sys.stderr.isatty(),
            )  # fmt: skip
        except ValueError as exc:
            raise InputError(str(exc)) from None

    events_path, items_path = _guard(run)
    typer.echo(f"wrote {events_path} and {items_path}")
    typer.echo(f"ingest with: recsys ingest --events {events_path} --items {items_path}")


@app.command()
def quarantine(
    data_dir: DataDir = Path("lake"),
    reason: Annotated[str | None, typer.Option("--reason", help="Only this reason code.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Rows to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the rows ingestion set aside, newest first, with their reasons."""
    import polars as pl

    from recsys_core.storage import Lake

    def run() -> tuple[dict, list[dict]]:
        lake = Lake(data_dir)
        if not lake.exists("quarantine"):
            return {}, []
        table = lake.scan("quarantine")
        counts = table.group_by("reason").len().sort("len", descending=True).collect()
        if reason:
            table = table.filter(pl.col("reason") == reason)
        order = ["ingested_at", "source_file", "row_number"]
        rows = table.sort(order, descending=[True, False, False]).head(limit).collect()
        return dict(counts.iter_rows()), rows.to_dicts()

    counts, rows = _guard(run)
    if as_json:
        typer.echo(json.dumps({"reasons": counts, "rows": rows}, default=str, indent=2))
        return
    if not counts:
        typer.echo(f"no rows quarantined under {data_dir}")
        return
    typer.echo("quarantined rows by reason: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for row in rows:
        typer.echo(f"{row['source_file']}:{row['row_number']}  {row['reason']}: {row['detail']}")
        typer.echo(f"    {row['raw']}")


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
            f"  encoded    {encode_r.get('encoded', 'n/a')} items "
            f"({encode_r.get('reused', 'n/a')} unchanged) "
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
            *(
                [
                    "  stages     "
                    + ", ".join(
                        f"{name} {f['seconds']:.0f} s ({f['peak_rss_mb'] / 1024:.1f} GB peak)"
                        for name, f in summary["stages"].items()
                    )
                ]
                if summary.get("stages")
                else []
            ),
        ]
    )


def main() -> None:
    """Entry point of `recsys`: Ctrl-C and SIGTERM stop the run at the next check of every
    thread and exit with code 130 (a second one kills at once)."""
    install_signal_handlers()
    try:
        app()
    except Stopped as exc:  # stopped outside a command's guard (while starting or printing)
        typer.echo(f"stopped: {exc.reason}; nothing was committed", err=True)
        sys.exit(STOPPED_EXIT_CODE)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
