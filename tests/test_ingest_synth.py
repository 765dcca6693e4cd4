"""The synthetic generator (`recsys synth`): structure a model can find, written in chunks."""

from __future__ import annotations

from collections import Counter

import polars as pl
from typer.testing import CliRunner

from flows.cli import app
from recsys_core.data.synth import TOPICS, SynthConfig, iter_event_chunks, synth_items


def test_chunks_are_time_ordered_and_sum_to_the_requested_events():
    config = SynthConfig(users=50, items=40, events=10_000, days=10, chunk_rows=1_500)
    chunks = list(iter_event_chunks(config))
    assert len(chunks) == 7 and max(c.height for c in chunks) <= 1_500
    events = pl.concat(chunks)
    assert events.height == 10_000
    assert events["timestamp"].is_sorted()
    assert events["timestamp"].min() >= config.start
    assert events["timestamp"].max() < config.start + config.days * 86_400


def test_duplicates_are_exact_repeats():
    config = SynthConfig(users=50, items=40, events=5_000, duplicate_fraction=0.1, chunk_rows=2_000)
    events = pl.concat(list(iter_event_chunks(config)))
    assert events.height == 5_000 + 3 * 166  # 10% of each chunk of 1,666 or 1,667 events
    assert events.height - events.unique().height >= 450  # a few repeats of repeats collide


def test_popularity_is_heavy_tailed_and_users_stay_in_their_cluster():
    config = SynthConfig(users=200, items=100, events=20_000, clusters=4, taste=0.9, seed=1)
    events = pl.concat(list(iter_event_chunks(config)))
    counts = events["item_id"].value_counts(sort=True)["count"].to_list()
    assert sum(counts[:10]) > 0.3 * events.height  # 10% of items draw over 30% of events
    cluster = events.with_columns(
        (pl.col("item_id").str.slice(1).cast(pl.Int64) % config.clusters).alias("cluster")
    )
    share = (
        cluster.group_by("user_id", "cluster").len()
        .group_by("user_id").agg((pl.col("len").max() / pl.col("len").sum()).alias("top"))
    )  # fmt: skip
    assert share["top"].median() > 0.8


def test_item_text_uses_its_clusters_words():
    config = SynthConfig(items=16, clusters=4, min_words=40, max_words=60)
    items = synth_items(config)
    topics = list(TOPICS)
    for i, description in enumerate(items["description"]):
        words = Counter(description.split())
        own = sum(words[w] for w in TOPICS[topics[i % 4]])
        others = sum(words[w] for t in topics if t != topics[i % 4] for w in TOPICS[t])
        assert own > 0.5 * sum(words.values()) and others == 0


def test_cli_synth_writes_compressed_jsonl(tmp_path):
    result = CliRunner().invoke(
        app, ["synth", "--users", "20", "--items", "10", "--events", "300", "--out",
              str(tmp_path), "--format", "jsonl", "--compression", "zstd"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    events = pl.read_ndjson(tmp_path / "events.jsonl.zst")
    assert events.height == 300 and events.columns[:3] == ["user_id", "item_id", "timestamp"]
    assert "recsys ingest --events" in result.stdout


def test_cli_synth_rejects_an_unknown_format(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), "--format", "xml"])
    assert result.exit_code == 2
    assert "--format must be one of" in result.stderr


def test_cli_synth_refuses_crossed_word_limits_in_one_line(tmp_path):
    result = CliRunner().invoke(
        app, ["synth", "--out", str(tmp_path), "--min-words", "9", "--max-words", "5"]
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: invalid options: min_words must be at most max_words"
    assert not list(tmp_path.iterdir())  # nothing written
