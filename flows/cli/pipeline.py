"""The pipeline's commands: the nightly run, one command per stage, fine-tuning the encoder,
and evaluating candidates without registering them.

Each command offers the run options of the stages it runs (`flows.options.OFFERED`), derived
from their declarations in `recsys_core.settings`, and passes the given ones to its flow's
options form; what is not given comes from `RECSYS_*` variables, then the defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.cli.app import DataDir, app, run_options, with_options
from flows.cli.exits import guard
from flows.cli.render import render_candidates, render_summary, report_json
from flows.cli.runs import (
    FlowModule,
    checked_options,
    checked_source,
    point_at_data_dir,
    prefect_api,
    start_prefect_server,
)
from flows.params import (
    EncodeOptions,
    EncoderOptions,
    FinetuneOptions,
    IngestOptions,
    RecommendOptions,
    RunOptions,
    Source,
    TrainOptions,
)
from recsys_core.errors import InputError
from recsys_core.settings import DEFAULT_DATA_DIR

if TYPE_CHECKING:
    from flows import nightly as nightly_flows
    from flows import stages as stage_flows
else:  # run on first use, after PREFECT_HOME points at the data directory
    nightly_flows = FlowModule("flows.nightly")
    stage_flows = FlowModule("flows.stages")

if TYPE_CHECKING:  # the reports' modules load torch and polars: the CLI starts without them
    from flows.reporting import NightlySummary
    from recsys_core.pipeline import (
        AlreadyPublished,
        EncodeReport,
        IngestReport,
        PublishReport,
        TrainReport,
    )
    from recsys_core.pipeline.finetune import FinetuneReport

AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
source_options = with_options(
    "source", Source.model_fields, panels=dict.fromkeys(Source.model_fields, "Source")
)
# the short names the encode command has always taken
ENCODE_FLAGS = {
    "encoder_batch_size": ("--batch-size",),
    "encoder_max_length": ("--max-length",),
    "encode_shards": ("--shards",),
    "encoder_precision": ("--precision",),
}


@app.command()
@run_options("nightly")
@source_options
def nightly(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    as_json: AsJson = False,
    *,
    source: dict[str, Any],
    options: dict[str, Any],
) -> None:
    """Run the whole pipeline: ingest, encode, train, recommend, publish.

    With no source, an empty data directory gets the MovieLens-100K sample, and one that
    holds data is run again on the data it has (nothing is ingested).
    """

    def run() -> NightlySummary:
        checked = checked_source(source)
        given = checked_options(options)
        point_at_data_dir(data_dir)
        server = start_prefect_server()  # while the flows are imported
        flow = nightly_flows.nightly  # imports the flows while the server starts
        with prefect_api(server):
            return flow(source=checked, options=RunOptions(data_dir=str(data_dir), **given))

    summary = guard(run)
    typer.echo(report_json(summary) if as_json else render_summary(summary))


@app.command()
@run_options("ingest")
@source_options
def ingest(
    data_dir: DataDir = DEFAULT_DATA_DIR, *, source: dict[str, Any], options: dict[str, Any]
) -> None:
    """Validate and store new events and catalog rows (bad rows go to quarantine).

    With no source, an empty data directory gets the MovieLens-100K sample, and one that
    holds data is left as it is; --sample movielens-100k adds the sample to any.
    """

    def run() -> IngestReport:
        checked = checked_source(source)
        given = checked_options(options)
        point_at_data_dir(data_dir)
        server = start_prefect_server()  # while the flows are imported
        flow = stage_flows.ingest_flow  # imports the flows while the server starts
        with prefect_api(server):
            return flow(source=checked, options=IngestOptions(data_dir=str(data_dir), **given))

    typer.echo(report_json(guard(run)))


@app.command()
@run_options("encode", extra_flags=ENCODE_FLAGS)
def encode(data_dir: DataDir = DEFAULT_DATA_DIR, *, options: dict[str, Any]) -> None:
    """Embed items whose text (or the encoder) changed since the last run.

    A run that is stopped (Ctrl-C, SIGTERM) or killed keeps the rows it staged; the next
    run with the same encoder takes them over and encodes only the rest.
    """

    def run() -> EncodeReport:
        given = checked_options(options)
        point_at_data_dir(data_dir)
        server = start_prefect_server()  # while the flows are imported
        flow = stage_flows.encode_flow  # imports the flows while the server starts
        with prefect_api(server):
            return flow(options=EncodeOptions(data_dir=str(data_dir), **given))

    typer.echo(report_json(guard(run)))


@app.command("finetune-encoder")
@run_options("finetune-encoder")
@with_options(
    "tuning", FinetuneOptions.model_fields,
    panels=dict.fromkeys(FinetuneOptions.model_fields, "Fine-tuning"),
)  # fmt: skip
def finetune_encoder(
    data_dir: DataDir = DEFAULT_DATA_DIR, *, tuning: dict[str, Any], options: dict[str, Any]
) -> None:
    """Fine-tune the encoder on items users consume together; register it in MLflow as
    models:/recsys-encoder/N for `recsys encode --encoder`."""

    def run() -> FinetuneReport:
        from recsys_core.pipeline.finetune import SPLITS

        # usage errors are answered before Prefect starts or anything is written
        finetune = FinetuneOptions(**tuning)
        if finetune.split not in SPLITS:
            raise InputError(f"unknown split {finetune.split!r} (known: {', '.join(SPLITS)})")
        run_settings = EncoderOptions(data_dir=str(data_dir), **checked_options(options))
        finetune.config(run_settings.settings())
        point_at_data_dir(data_dir)
        server = start_prefect_server()  # while the flows are imported
        flow = stage_flows.finetune_encoder_flow  # imports the flows while the server starts
        with prefect_api(server):
            return flow(options=run_settings, finetune=finetune)

    report = guard(run)
    typer.echo(report_json(report))
    typer.echo(
        f"registered {report.reference}; use it with: recsys encode --data-dir {data_dir} "
        f"--encoder {report.reference}",
        err=True,
    )


@app.command()
@run_options("train")
def train(data_dir: DataDir = DEFAULT_DATA_DIR, *, options: dict[str, Any]) -> None:
    """Train and evaluate candidates, log them to MLflow, register and gate the champion."""

    def run() -> TrainReport:
        given = checked_options(options)
        point_at_data_dir(data_dir)
        server = start_prefect_server()  # while the flows are imported
        flow = stage_flows.train_flow  # imports the flows while the server starts
        with prefect_api(server):
            return flow(options=TrainOptions(data_dir=str(data_dir), **given))

    report = guard(run)
    typer.echo(render_candidates(report))


@app.command()
@run_options("evaluate")
def evaluate(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    *,
    options: dict[str, Any],
) -> None:
    """Fit and evaluate candidate models on any protocol (cold_items too) and print the
    metrics table.

    Nothing is registered and no alias moves; runs go to the MLflow experiment
    `<experiment>-evaluation`.
    """

    def run() -> TrainReport:
        given = checked_options(options)
        point_at_data_dir(data_dir)
        from recsys_core.api import evaluate_candidates

        return evaluate_candidates(
            data_dir, options=given, progress=True, log=lambda line: typer.echo(line, err=True)
        )

    report = guard(run)
    typer.echo(report_json(report) if as_json else render_candidates(report))


@app.command()
@run_options("recommend", extra_flags={"unavailable_items": ("--unavailable",)})
def recommend(data_dir: DataDir = DEFAULT_DATA_DIR, *, options: dict[str, Any]) -> None:
    """Publish top-K recommendations for every user from the champion, in one commit."""

    def run() -> PublishReport | AlreadyPublished:
        given = checked_options(options)  # a bad unavailable-items file fails here
        point_at_data_dir(data_dir)
        server = start_prefect_server()  # while the flows are imported
        flow = stage_flows.recommend_flow  # imports the flows while the server starts
        with prefect_api(server):
            return flow(options=RecommendOptions(data_dir=str(data_dir), **given))

    typer.echo(report_json(guard(run)))
