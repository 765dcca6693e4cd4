"""The nightly flow: ingest -> encode -> train -> recommend, top to bottom."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.params import RunOptions, Source
from flows.stages import encode_step
from tasks import ingest_task, recommend_task, train_task


@flow(name="nightly")
def nightly(source: Source = Source(), options: RunOptions = RunOptions()) -> dict:
    """Ingest new logs, encode changed items, train and gate models, publish recommendations."""
    settings = options.settings()
    ingested = ingest_task(source.spec(), settings)
    encoded = encode_step(settings)
    trained = train_task(settings)
    published = recommend_task(settings)
    summary = {
        "data_dir": str(settings.data_dir),
        "ingest": ingested,
        "encode": encoded,
        "train": trained,
        "publish": published,
    }
    create_markdown_artifact(markdown=summary_markdown(summary), key="nightly-summary")
    return summary


def summary_markdown(summary: dict) -> str:
    ingest, encode, train, publish = (summary[k] for k in ("ingest", "encode", "train", "publish"))
    lines = [
        "# Nightly run",
        f"- events: {ingest['events_added']} added, {ingest['duplicates']} duplicates, "
        f"{ingest['quarantined']} quarantined; {ingest['events_total']} in total",
        f"- items encoded: {encode['encoded']} ({encode['reused']} reused) "
        f"by `{encode['encoder']}`",
        f"- champion: **{train['champion']}** ({train['champion_model']}): {train['decision']}",
        f"- recommendations: {publish['rows']} rows for {publish['users']} users "
        f"(table version {publish['version']})",
        "",
        f"| model | {train['metric']} | recall@10 | fit s |",
        "|---|---|---|---|",
    ]
    for c in train["candidates"]:
        lines.append(
            f"| {c['model']} | {c['metrics'][train['metric']]:.4f} | "
            f"{c['metrics']['recall@10']:.4f} | {c['fit_seconds']} |"
        )
    return "\n".join(lines)
