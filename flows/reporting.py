"""What a nightly run shows in the Prefect UI: a markdown summary and tables."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from recsys_core.context import RunContext
from recsys_core.registry.reader import RegistryReader
from recsys_core.settings import Settings

INGEST_MEASURES = (
    "rows_read", "events_added", "duplicates", "quarantined", "unknown_item_events",
    "items_added", "items_updated", "events_total", "users_total", "items_total",
)  # fmt: skip


def mlflow_run_links(settings: Settings, run_ids: list[str]) -> dict[str, str]:
    """MLflow UI address of each run id (runs the store no longer has are left out)."""
    reader = RegistryReader(RunContext(settings).lake)
    base = settings.tracking.mlflow_ui_url.rstrip("/")
    links = {}
    for run_id in run_ids:
        experiment = reader.experiment_of_run(run_id)
        if experiment is not None:
            links[run_id] = f"{base}/#/experiments/{experiment}/runs/{run_id}"
    return links


def _cell(value: Any) -> str:
    return "n/a" if value is None else str(value)


def summary_markdown(summary: dict, links: dict[str, str]) -> str:
    ingest, encode, train, publish = (summary[k] for k in ("ingest", "encode", "train", "publish"))
    metric = train["metric"]
    lines = [
        "# Nightly run",
        "",
        "| stage | result |",
        "|---|---|",
        f"| ingest | {ingest['events_added']} events added, {ingest['duplicates']} duplicates, "
        f"{ingest['quarantined']} quarantined; {ingest['events_total']} events, "
        f"{ingest['users_total']} users, {ingest['items_total']} items in total |",
        f"| encode | {_cell(encode.get('encoded'))} items encoded, "
        f"{_cell(encode.get('reused'))} unchanged, by `{encode['encoder']}` |",
        f"| train | champion **{train['champion']}** ({train['champion_model']}): "
        f"{train['decision']} |",
        f"| publish | {publish['rows']} recommendations for {publish['users']} users from "
        f"{publish['model']} (table version {publish['version']}) |",
        "",
        f"## Candidates ({metric} on the {train['protocol']} holdout)",
        "",
        f"| model | {metric} | recall@10 | fit s | MLflow run |",
        "|---|---|---|---|---|",
    ]
    for c in train["candidates"]:
        link = links.get(c.get("run_id", ""))
        run = f"[{c['run_id'][:8]}]({link})" if link else c.get("run_id", "")[:8]
        lines.append(
            f"| {c['model']} | {c['metrics'][metric]:.4f} | {c['metrics']['recall@10']:.4f} | "
            f"{c['fit_seconds']} | {run} |"
        )
    if ingest.get("notes"):
        lines += ["", "## Ingest notes", ""]
        lines += [f"- {note}" for note in ingest["notes"]]
    if train.get("left_out"):
        lines += ["", "## Candidates changed or left out", ""]
        lines += [f"- {note}" for note in train["left_out"]]
    evaluated, test_users = train.get("evaluated_users", 0), train.get("test_users", 0)
    if 0 < evaluated < test_users:
        lines += ["", f"Metrics from a seeded sample of {evaluated} of {test_users} test users."]
    lines += ["", f"Data directory: `{summary['data_dir']}`"]
    return "\n".join(lines)


def publish_artifacts(summary: dict, settings: Settings) -> None:
    """Markdown summary plus tables of candidates and ingestion counts, for the Prefect UI."""
    train = summary["train"]
    links = mlflow_run_links(settings, [c.get("run_id", "") for c in train["candidates"]])
    create_markdown_artifact(
        key="nightly-summary",
        markdown=summary_markdown(summary, links),
        description="What tonight's run ingested, trained, decided and published.",
    )
    create_table_artifact(
        key="nightly-candidates",
        table=[
            {
                "model": c["model"],
                **{name: round(value, 4) for name, value in c["metrics"].items()},
                "fit_seconds": c["fit_seconds"],
                "mlflow_run": links.get(c.get("run_id", ""), c.get("run_id", "")),
                "champion": c["model"] == train["champion_model"],
            }
            for c in train["candidates"]
        ],
        description=f"Candidates on the {train['protocol']} holdout; decision: {train['decision']}",
    )
    ingest = summary["ingest"]
    create_table_artifact(
        key="nightly-ingest",
        table=[
            {"measure": name, "value": ingest[name]} for name in INGEST_MEASURES if name in ingest
        ],
        description="Rows read = events added + duplicates + quarantined.",
    )
