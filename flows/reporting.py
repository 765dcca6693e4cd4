"""What a run shows in the Prefect UI: the nightly summary and tables, and the publishing
guardrails. Everything here reads the stages' typed reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from recsys_core.context import RunContext
from recsys_core.pipeline import (
    AlreadyPublished,
    EncodeReport,
    IngestReport,
    PublishReport,
    TrainReport,
)
from recsys_core.pipeline.recommend import Guardrails
from recsys_core.registry.reader import RegistryReader
from recsys_core.settings import Settings

INGEST_MEASURES = (
    "rows_read", "events_added", "duplicates", "quarantined", "unknown_item_events",
    "items_added", "items_updated", "events_total", "users_total", "items_total",
)  # fmt: skip


@dataclass
class NightlySummary:
    """What a nightly run did, stage by stage (`recsys nightly --json` prints it as JSON).

    Attributes:
        data_dir: The data directory.
        ingest: The ingest stage's report.
        encode: The encode stage's report (also when it ran as its own deployment).
        train: The train stage's report (from the cache when its inputs did not change).
        publish: The recommend stage's report, or the night already published from these
            inputs.
        stages: Per stage, wall seconds and peak RSS (`seconds`, `peak_rss_mb`).
    """

    data_dir: str
    ingest: IngestReport
    encode: EncodeReport
    train: TrainReport
    publish: PublishReport | AlreadyPublished
    stages: dict[str, dict[str, float]] = field(default_factory=dict)


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


def summary_markdown(summary: NightlySummary, links: dict[str, str]) -> str:
    """The nightly run as markdown: a line per stage, the candidates and the notes.

    Args:
        summary: The nightly run's reports.
        links: MLflow UI address per run id (`mlflow_run_links`).
    """
    ingest, encode, train, publish = summary.ingest, summary.encode, summary.train, summary.publish
    metric = train.metric
    lines = [
        "# Nightly run",
        "",
        "| stage | result |",
        "|---|---|",
        f"| ingest | {ingest.events_added} events added, {ingest.duplicates} duplicates, "
        f"{ingest.quarantined} quarantined; {ingest.events_total} events, "
        f"{ingest.users_total} users, {ingest.items_total} items in total |",
        f"| encode | {encode.encoded} items encoded, {encode.reused} unchanged, "
        f"by `{encode.encoder}` |",
        f"| train | champion **{train.champion}** ({train.champion_model}): {train.decision} |",
        f"| publish | {publish.rows} recommendations for {publish.users} users from "
        f"{publish.model} (table version {publish.version}) |",
        "",
        f"## Candidates ({metric} on the {train.protocol} holdout)",
        "",
        f"| model | {metric} | recall@10 | fit s | MLflow run |",
        "|---|---|---|---|---|",
    ]
    for c in train.candidates:
        link = links.get(c.run_id)
        run = f"[{c.run_id[:8]}]({link})" if link else c.run_id[:8]
        lines.append(
            f"| {c.model} | {c.metrics[metric]:.4f} | {c.metrics['recall@10']:.4f} | "
            f"{c.fit_seconds} | {run} |"
        )
    if ingest.notes:
        lines += ["", "## Ingest notes", ""]
        lines += [f"- {note}" for note in ingest.notes]
    if train.left_out:
        lines += ["", "## Candidates changed or left out", ""]
        lines += [f"- {note}" for note in train.left_out]
    if 0 < train.evaluated_users < train.test_users:
        lines += [
            "",
            f"Metrics from a seeded sample of {train.evaluated_users} of {train.test_users} "
            "test users.",
        ]
    lines += ["", f"Data directory: `{summary.data_dir}`"]
    return "\n".join(lines)


def publish_artifacts(summary: NightlySummary, settings: Settings) -> None:
    """Markdown summary plus tables of candidates and ingestion counts, for the Prefect UI."""
    train = summary.train
    links = mlflow_run_links(settings, [c.run_id for c in train.candidates])
    create_markdown_artifact(
        key="nightly-summary",
        markdown=summary_markdown(summary, links),
        description="What tonight's run ingested, trained, decided and published.",
    )
    create_table_artifact(
        key="nightly-candidates",
        table=[
            {
                "model": c.model,
                **{name: round(value, 4) for name, value in c.metrics.items()},
                "fit_seconds": c.fit_seconds,
                "mlflow_run": links.get(c.run_id, c.run_id),
                "champion": c.model == train.champion_model,
            }
            for c in train.candidates
        ],
        description=f"Candidates on the {train.protocol} holdout; decision: {train.decision}",
    )
    ingest = summary.ingest
    create_table_artifact(
        key="nightly-ingest",
        table=[{"measure": name, "value": getattr(ingest, name)} for name in INGEST_MEASURES],
        description="Rows read = events added + duplicates + quarantined.",
    )


def guardrails_artifact(guardrails: Guardrails, settings: Settings) -> None:
    """A table in the Prefect UI: tonight's figures against the published table, the
    thresholds, and the verdict (key `recommend-guardrails`).

    Args:
        guardrails: Tonight's comparison (from the publish report, or a held night's error).
        settings: The thresholds (`guard_*` of the recommend group).
    """
    recommend, g = settings.recommend, guardrails
    figures = [
        ("user coverage", g.user_coverage, f">= {recommend.guard_min_user_coverage}"),
        ("catalog ratio", g.catalog_ratio, f">= {recommend.guard_min_catalog_ratio}"),
        ("list overlap (mean)", g.list_overlap_mean, f">= {recommend.guard_min_list_overlap}"),
        ("list overlap (p10, median)", f"{g.list_overlap_p10}, {g.list_overlap_median}", ""),
        ("score median (published -> tonight)",
         f"{g.published_score_median} -> {g.score_median}", ""),
        ("score shift", g.score_shift,
         f"<= {recommend.guard_max_score_shift}"
         + ("" if g.score_shift_checked else " (not checked: new champion)")),
        ("bad scores", g.bad_scores, f"<= {recommend.guard_max_bad_scores}"),
    ]  # fmt: skip
    lines = [
        f"# Publishing guardrails: {g.verdict}",
        "",
        f"Compared with published version {g.published_version} "
        f"({g.published_users} users, top {g.ranks} ranks).",
        "",
        "| figure | tonight | allowed |",
        "|---|---|---|",
        *(f"| {name} | {value} | {limit} |" for name, value, limit in figures),
    ]
    if g.breaches:
        lines += ["", "Breached:", *(f"- {line}" for line in g.breaches)]
    if g.verdict == "held":
        lines += ["", "Nothing was committed; readers keep the published table. "
                  "`--force` publishes anyway."]  # fmt: skip
    create_markdown_artifact(
        key="recommend-guardrails", markdown="\n".join(lines),
        description="Tonight's recommendations against the published table",
    )  # fmt: skip
