"""The nightly flow: ingest -> encode -> train -> recommend, top to bottom."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment

from flows.locks import exclusive_run
from flows.params import EncodeOptions, RunOptions, Source
from flows.reporting import NightlySummary, publish_artifacts
from flows.runners import ChosenTaskRunner
from flows.stages import encode_step, rank_and_publish
from recsys_core.cancel import stop_on_signals
from recsys_core.context import RunContext
from recsys_core.pipeline.encode import EncodeReport, report_of_run
from recsys_core.resources import measured
from recsys_core.settings import Settings
from tasks import ingest_task, train_task


@flow(name="nightly", task_runner=ChosenTaskRunner())
def nightly(source: Source = Source(), options: RunOptions = RunOptions()) -> NightlySummary:
    """Ingest new logs, encode changed items, train and gate models, publish recommendations.

    Work whose inputs did not change since it last succeeded is not done again (training
    comes from the cache, recommendations already published stay), so running a failed
    night again resumes where it stopped. SIGINT, SIGTERM and a cancel from the Prefect UI
    stop every stage's threads at their next check (`stop_on_signals`). One nightly runs
    over a data directory at a time: another one, from the CLI or a deployment, is refused
    with a line naming the holder (`exclusive_run`).
    """
    with stop_on_signals(), exclusive_run(options.settings().data_dir, "nightly"):
        return _nightly(source, options)


def _nightly(source: Source, options: RunOptions) -> NightlySummary:
    settings = options.settings()
    refresh = {"refresh_cache": True} if options.refresh else {}
    stages: dict[str, dict[str, float]] = {}  # wall seconds and peak RSS of each stage
    with measured() as stages["ingest"]:
        ingested = ingest_task(source.spec(), settings)
    with measured() as stages["encode"]:
        if settings.runtime.encode_deployment:
            encoded = encode_remotely(settings, options)
        else:
            encoded = encode_step(settings)  # only changed items are encoded
    with measured() as stages["train"]:
        trained = train_task.with_options(**refresh)(settings)
    with measured() as stages["recommend"]:
        published = rank_and_publish(settings, refresh=options.refresh)
    summary = NightlySummary(
        data_dir=str(settings.data_dir), ingest=ingested, encode=encoded, train=trained,
        publish=published, stages=stages,
    )  # fmt: skip
    publish_artifacts(summary, settings)
    return summary


def encode_remotely(settings: Settings, options: RunOptions) -> EncodeReport:
    """Run the encode stage as its own deployment (e.g. on the gpu work pool) and wait.

    The data directory is shared with the deployment's workers, so its report is read back
    from the commit the run made (`report_of_run`), not from the run's result storage.
    """
    logger = get_run_logger()
    deployment = settings.runtime.encode_deployment
    logger.info("encoding through deployment %s", deployment)
    # the options the encode form takes, as given to this run (unset ones stay unset)
    given = options.model_dump(include=set(EncodeOptions.model_fields), mode="json")
    run = run_deployment(deployment, parameters={"options": given}, timeout=None)
    if run.state is None or not run.state.is_completed():
        state = run.state.name if run.state else "unknown"
        raise RuntimeError(f"encode deployment run {run.name} ended {state}")
    return report_of_run(
        RunContext(settings).lake, str(run.id), label=f"(deployment {deployment}, run {run.name})"
    )
