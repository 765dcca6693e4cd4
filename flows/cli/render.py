"""The text the commands print: summaries, the candidates table, versions, recommendations.

The library returns data (typed reports); everything a person reads on the terminal, and the
JSON the `--json` options print, is built here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # polars loads only when a table is rendered, so `recsys --help` stays quick
    import polars as pl

    from flows.reporting import NightlySummary
    from recsys_core.api import Quarantined, Restored
    from recsys_core.pipeline.train import TrainReport

# columns of the candidates table printed by `recsys train`, `evaluate` and `nightly`
TABLE_METRICS = (
    "ndcg@10", "recall@10", "recall@20", "map@10", "mrr@10", "coverage@10", "novelty@10",
    "diversity@10",
)  # fmt: skip


def report_json(report: Any) -> str:
    """A typed report (a dataclass: a stage's report, the nightly summary) as the JSON the
    `--json` options print: its fields as keys, nested reports as objects.

    Args:
        report: A dataclass instance.
    """
    return json.dumps(dataclasses.asdict(report), indent=2, default=str)


def candidates_table(report: TrainReport) -> pl.DataFrame:
    """One row per candidate: model, role, the table metrics, fit time and epochs."""
    import polars as pl

    rows = []
    for c in report.candidates:
        rows.append(
            {
                "model": c.model,
                "role": c.role,
                **{m: round(c.metrics.get(m, float("nan")), 4) for m in TABLE_METRICS},
                "fit_s": c.fit_seconds,
                "epochs": len(c.epochs),
            }
        )
    return pl.DataFrame(rows)


def render_candidates(report: TrainReport) -> str:
    """Every candidate's metrics as aligned text, then the protocol, metric and the gate's
    decision (a train or evaluate report)."""
    from recsys_core.pipeline.train import candidate_label

    labels = [candidate_label({"model": c.model, "params": c.params}) for c in report.candidates]
    width = max([len("model"), *(len(label) for label in labels)]) + 2
    header = f"{'model':<{width}}" + "".join(f"{m:>13}" for m in TABLE_METRICS)
    lines = [header + f"{'fit s':>9}{'epochs':>8}"]
    for row, label in zip(candidates_table(report).iter_rows(named=True), labels, strict=True):
        mark = {"champion": " *", "challenger": " ~"}.get(row["role"], "")
        values = "".join(
            f"{row[m]:>13.4f}" if row[m] == row[m] else f"{'-':>13}" for m in TABLE_METRICS
        )
        lines.append(f"{label + mark:<{width}}{values}{row['fit_s']:>9.2f}{row['epochs']:>8}")
    test_users, evaluated = report.test_users, report.evaluated_users
    sample = f", a sample of {evaluated} evaluated" if 0 < evaluated < test_users else ""
    lines.append(
        f"protocol {report.protocol} ({test_users} test users{sample}, "
        f"{report.users} users, {report.items} items); "
        f"selection metric {report.metric}; * champion, ~ challenger"
    )
    lines += [f"note: {note}" for note in report.left_out]
    if report.champion:
        lines.append(f"champion: {report.champion} ({report.champion_model}): {report.decision}")
        if report.challenger:
            lines.append(f"challenger: {report.challenger} ({report.challenger_model})")
    else:
        lines.append(report.decision)
    return "\n".join(lines)


def render_summary(summary: NightlySummary) -> str:
    """What a nightly run did, stage by stage, and where to look next."""
    ingest_r, encode_r, publish = summary.ingest, summary.encode, summary.publish
    data_dir = summary.data_dir
    first_user = publish.example_user or "1"
    return "\n".join(
        [
            "",
            "Nightly run complete",
            *(f"  note       {note}" for note in ingest_r.notes),
            f"  events     {ingest_r.events_total} in total ({ingest_r.events_added} added, "
            f"{ingest_r.duplicates} duplicates, {ingest_r.quarantined} quarantined); "
            f"{ingest_r.users_total} users, {ingest_r.items_total} items",
            f"  encoded    {encode_r.encoded} items ({encode_r.reused} unchanged) "
            f"with {encode_r.encoder}",
            "",
            render_candidates(summary.train),
            "",
            f"  published  {publish.rows} recommendations for {publish.users} users "
            f"from {publish.model} (version {publish.version})",
            f"  tables     {data_dir}/{{events,items,item_embeddings,recommendations}}"
            " (Delta Lake)",
            f"  mlflow     {data_dir}/mlflow (make ui, then http://127.0.0.1:5000)",
            f"  try        .venv/bin/recsys recs {first_user} --data-dir {data_dir}",
            *(
                [
                    "  stages     "
                    + ", ".join(
                        f"{name} {f['seconds']:.0f} s ({f['peak_rss_mb'] / 1024:.1f} GB peak)"
                        for name, f in summary.stages.items()
                    )
                ]
                if summary.stages
                else []
            ),
        ]
    )


def because(row: dict) -> str:
    """Why one recommendation: the history item behind it, if one stands out."""
    if row.get("reason_item_id") is None:
        return "no single item in your history stands out for this one"
    return f"because you watched {row.get('reason_title') or row['reason_item_id']}"


def render_recommendations(
    frame: pl.DataFrame, user_id: str, *, query: str | None = None, explain: bool = False
) -> str:
    """A user's recommendations, one line each (with the reason under it when `explain`)."""
    model = frame["model"][0] if frame.height else ""
    matching = f" matching {query!r}" if query is not None else ""
    lines = [f"Recommendations for user {user_id}{matching} ({model}):"]
    for row in frame.iter_rows(named=True):
        lines.append(f"{row['rank']:>3}. {row['title'] or row['item_id']}  [{row['score']:.3f}]")
        if explain:
            lines.append(f"     {because(row)}")
    return "\n".join(lines)


def recommendations_json(
    frame: pl.DataFrame, user_id: str, *, query: str | None = None, explain: bool = False
) -> dict:
    """A user's recommendations as the `recs --json` payload (with `because` when `explain`)."""
    rows = frame.to_dicts()
    if explain:
        for row in rows:
            row["because"] = because(row)
    payload = {
        "user_id": user_id,
        "model": frame["model"][0] if frame.height else "",
        "recommendations": rows,
    }
    if query is not None:
        payload["query"] = query
    return payload


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


def render_restored(restored: Restored) -> str:
    """The line `recsys rollback --to` prints: which version is current now and what it holds."""
    return (
        f"recommendations version {restored.version} restored as version "
        f"{restored.new_version}: {restored.rows} rows, {restored.users} users, model "
        f"{', '.join(restored.models) or '-'}"
    )


def render_quarantine(quarantined: Quarantined, data_dir: Path) -> str:
    """Counts per reason, then each shown row with where it came from and the row as read."""
    if not quarantined.reasons:
        return f"no rows quarantined under {data_dir}"
    counts = ", ".join(f"{k} {v}" for k, v in quarantined.reasons.items())
    lines = [f"quarantined rows by reason: {counts}"]
    for row in quarantined.rows:
        lines.append(f"{row['source_file']}:{row['row_number']}  {row['reason']}: {row['detail']}")
        lines.append(f"    {row['raw']}")
    return "\n".join(lines)
