"""The text `recsys` prints, built from the data the library returns."""

from __future__ import annotations

import json

import polars as pl

from flows.cli.render import (
    because,
    recommendations_json,
    render_candidates,
    render_quarantine,
    render_recommendations,
    render_restored,
    render_summary,
    report_json,
)
from flows.reporting import NightlySummary
from recsys_core.api import Quarantined, Restored
from recsys_core.pipeline import (
    AlreadyPublished,
    CandidateResult,
    EncodeReport,
    IngestReport,
    PublishReport,
    TrainReport,
)


def test_render_candidates_marks_champion_and_challenger():
    metrics = {"ndcg@10": 0.3, "recall@10": 0.2}
    report = TrainReport(
        metric="ndcg@10", protocol="user_temporal", test_users=5, users=9, items=40,
        champion="m/2", champion_model="ease", decision="kept", challenger="m/3",
        challenger_model="popularity",
        candidates=[
            CandidateResult(model="ease", params={"reg": 500.0}, metrics=metrics,
                            fit_seconds=0.5, role="champion"),
            CandidateResult(model="popularity", params={}, metrics=metrics, fit_seconds=0.1,
                            role="challenger"),
            CandidateResult(model="ease", params={"reg": 100.0}, metrics=metrics,
                            fit_seconds=0.5, epochs=[{"loss": 1.0}]),
        ],
    )  # fmt: skip
    lines = render_candidates(report).splitlines()
    assert lines[1].startswith("ease *") and lines[2].startswith("popularity ~")
    assert lines[3].startswith("ease(reg=100.0)")  # non-default params tell rows apart
    assert "-" in lines[1].split()  # metrics not computed show as a dash
    assert lines[-2] == "champion: m/2 (ease): kept" and lines[-1] == "challenger: m/3 (popularity)"


def _recommendations() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "rank": [1, 2],
            "item_id": ["i1", "i2"],
            "title": ["Alien", None],
            "score": [0.91234, 0.5],
            "reason_item_id": ["i9", None],
            "reason_title": [None, None],
            "model": ["recsys/3", "recsys/3"],
        }
    )


def test_recommendations_fall_back_to_item_ids_and_explain_each_one():
    lines = render_recommendations(
        _recommendations(), "u1", query="space", explain=True
    ).splitlines()
    assert lines[0] == "Recommendations for user u1 matching 'space' (recsys/3):"
    assert lines[1] == "  1. Alien  [0.912]" and lines[3] == "  2. i2  [0.500]"
    assert lines[2] == "     because you watched i9"  # no title: the reason's id
    assert "no single item" in lines[4]
    payload = recommendations_json(_recommendations(), "u1", explain=True)
    assert payload["model"] == "recsys/3" and "query" not in payload
    assert [r["because"] for r in payload["recommendations"]] == [
        because(r) for r in _recommendations().to_dicts()
    ]


def test_restored_and_quarantine_lines():
    restored = Restored(version=1, new_version=3, rows=40, users=2, models=[])
    assert render_restored(restored) == (
        "recommendations version 1 restored as version 3: 40 rows, 2 users, model -"
    )
    assert render_quarantine(Quarantined(), "lake") == "no rows quarantined under lake"
    row = {"source_file": "e.csv", "row_number": 7, "reason": "bad_timestamp", "detail": "x",
           "raw": "a,b"}  # fmt: skip
    shown = render_quarantine(Quarantined({"bad_timestamp": 1}, [row]), "lake").splitlines()
    assert shown == [
        "quarantined rows by reason: bad_timestamp 1",
        "e.csv:7  bad_timestamp: x",
        "    a,b",
    ]


def _summary(publish) -> NightlySummary:
    return NightlySummary(
        data_dir="lake",
        ingest=IngestReport(source="events.csv", events_added=5, events_total=5, users_total=2,
                            items_total=3),
        encode=EncodeReport(encoder="tiny", items_total=3, encoded=2, reused=1),
        train=TrainReport(metric="ndcg@10", protocol="user_temporal", champion="recsys/1",
                          champion_model="ease", decision="first champion"),
        publish=publish,
        stages={"ingest": {"seconds": 1.0, "peak_rss_mb": 2048.0}},
    )  # fmt: skip


def test_nightly_json_keeps_the_keys_of_its_contract():
    # `recsys nightly --json` is read by scripts: its keys are the reports' fields, so a
    # renamed field must fail here rather than change the output
    payload = json.loads(report_json(_summary(PublishReport(model="recsys/1", rows=4, users=2))))
    assert list(payload) == ["data_dir", "ingest", "encode", "train", "publish", "stages"]
    assert list(payload["encode"]) == [
        "encoder", "items_total", "encoded", "reused", "truncated", "empty_text", "seconds",
        "items_per_second", "shards", "version", "resumed",
    ]  # fmt: skip
    assert list(payload["publish"]) == [
        "model", "users", "rows", "users_with_k", "user_coverage", "catalog_coverage", "shards",
        "unavailable_items", "version", "vacuumed_files", "seconds", "example_user", "guardrails",
    ]  # fmt: skip
    assert payload["publish"]["guardrails"]["verdict"] == "first night"
    assert {"champion", "champion_model", "candidates", "decision"} <= set(payload["train"])
    assert {"events_added", "events_total", "notes", "users_total"} <= set(payload["ingest"])
    kept = json.loads(report_json(_summary(AlreadyPublished("recsys/1", 4, 2, 7))))
    assert kept["publish"] == {"model": "recsys/1", "rows": 4, "users": 2, "version": 7,
                               "reused": True}  # fmt: skip


def test_the_summary_text_reads_the_typed_reports():
    lines = render_summary(_summary(AlreadyPublished("recsys/1", 4, 2, 7))).splitlines()
    assert "  encoded    2 items (1 unchanged) with tiny" in lines
    assert "  published  4 recommendations for 2 users from recsys/1 (version 7)" in lines
    assert "  try        .venv/bin/recsys recs 1 --data-dir lake" in lines  # no example user
    assert "  stages     ingest 1 s (2.0 GB peak)" in lines
