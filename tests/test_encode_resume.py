"""A stopped, failed or killed encode keeps what it staged; the next run takes it over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys_core import cancel
from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.encoders import ItemTextEncoder, build_item_text
from recsys_core.pipeline import commit_encode, encode_items, encode_shard, ingest, plan_encode
from recsys_core.settings import Settings
from recsys_core.storage import Lake
from recsys_core.storage.staging import OWNER_FILE


@pytest.fixture
def source_lake(tmp_path, small_source):
    lake = Lake(tmp_path / "lake")
    events, items = small_source
    ingest(RunContext.of(lake.root), SourceSpec(events=(str(events),), items=str(items)))
    return lake


@pytest.fixture
def settings(source_lake, tiny_encoder_dir, monkeypatch):
    # a part after every batch of 4 texts, so a stop leaves several parts behind
    monkeypatch.setenv("RECSYS_ENCODE_PART_SECONDS", "0")
    return Settings(
        data_dir=source_lake.root, encoder=str(tiny_encoder_dir), encoder_max_length=64,
        encoder_batch_size=4,
    )  # fmt: skip


@pytest.fixture
def encoded_texts(monkeypatch):
    """Every text the encoder runs through the model, in order; can stop after N batches."""
    seen: list[str] = []
    stop_after: dict[str, int] = {}
    real = ItemTextEncoder.encode_batches

    def spy(self, texts, **kwargs):
        for n, batch in enumerate(real(self, texts, **kwargs), start=1):
            seen.extend(texts[i] for i in batch.rows)
            yield batch
            if n == stop_after.get("batches"):
                cancel.request_stop("stopped by the test")

    monkeypatch.setattr(ItemTextEncoder, "encode_batches", spy)
    yield seen, stop_after
    cancel.clear_stop()


def staged_parts(lake: Lake) -> list[Path]:
    return sorted((lake.staging("encode").root).rglob("part-*.parquet"))


def clean_table(tmp_path: Path, lake: Lake, settings: Settings) -> pl.DataFrame:
    """What one uninterrupted run writes for the same catalog."""
    other = Lake(tmp_path / "clean")
    other.write("items", lake.read("items"), mode="overwrite")
    encode_items(RunContext(settings.updated(data_dir=other.root)))
    return other.read("item_embeddings")


def assert_same_table(got: pl.DataFrame, want: pl.DataFrame) -> None:
    keys = ["item_id", "text_hash", "encoder", "truncated"]
    got, want = got.sort("item_id"), want.sort("item_id")
    assert got.select(keys).equals(want.select(keys))
    np.testing.assert_allclose(
        np.stack(got["embedding"].to_numpy()), np.stack(want["embedding"].to_numpy()), atol=1e-5
    )


def test_a_stopped_encode_resumes_with_only_the_remaining_items(
    source_lake, settings, encoded_texts, tmp_path
):
    seen, stop_after = encoded_texts
    stop_after["batches"] = 3
    with pytest.raises(cancel.Stopped, match="stopped by the test"):
        encode_items(RunContext(settings))
    assert not source_lake.exists("item_embeddings")  # nothing staged is visible
    staged = pl.concat([pl.read_parquet(p) for p in staged_parts(source_lake)])
    assert staged.height == 12 == len(seen)  # three batches of 4, each its own part
    first_run = set(seen)

    cancel.clear_stop()
    seen.clear()
    stop_after.clear()
    plan = plan_encode(RunContext(settings))
    assert plan.resumed == 12 and plan.reused == 0
    assert sum(len(s.item_ids) for s in plan.shards) == 28
    assert not set(plan.resumed_items) & {i for s in plan.shards for i in s.item_ids}
    report = commit_encode(
        RunContext(settings), plan, [encode_shard(RunContext(settings), s) for s in plan.shards]
    )
    assert len(seen) == 28 and not set(seen) & first_run  # only the remaining items ran
    assert report.encoded == 40 and report.resumed == 12 and report.reused == 0
    assert len(source_lake.history("item_embeddings")) == 1  # one commit for all of it
    assert source_lake.history("item_embeddings")[0]["resumed"] == "12"
    assert not (source_lake.staging("encode").root).exists() or not any(
        (source_lake.staging("encode").root).iterdir()
    )
    want = clean_table(tmp_path, source_lake, settings)
    assert_same_table(source_lake.read("item_embeddings"), want)


def test_a_killed_run_keeps_its_finished_shards_and_parts(
    source_lake, settings, encoded_texts, tmp_path
):
    seen, stop_after = encoded_texts
    plan = plan_encode(RunContext(settings), shards=3)
    finished = [encode_shard(RunContext(settings), shard) for shard in plan.shards[:2]]
    stop_after["batches"] = 1
    with pytest.raises(cancel.Stopped):
        encode_shard(RunContext(settings), plan.shards[2])
    cancel.clear_stop()
    stop_after.clear()
    # the process that made this plan is gone (killed): a finished child's pid
    child = [sys.executable, "-c", "import os; print(os.getpid())"]
    dead = subprocess.run(child, capture_output=True, text=True, check=True)
    owner = Path(plan.staging_dir) / OWNER_FILE
    owner.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    done = sum(r.rows for r in finished) + 4
    assert len(seen) == done

    seen.clear()
    again = plan_encode(RunContext(settings), shards=2)
    assert again.resumed == done and again.plan_id != plan.plan_id
    assert not Path(plan.staging_dir).exists()  # its files moved into the new plan
    report = commit_encode(
        RunContext(settings), again, [encode_shard(RunContext(settings), s) for s in again.shards]
    )
    assert len(seen) == 40 - done and report.encoded == 40 and report.resumed == done
    want = clean_table(tmp_path, source_lake, settings)
    assert_same_table(source_lake.read("item_embeddings"), want)


def test_a_plan_still_running_elsewhere_is_left_alone(source_lake, settings, encoded_texts):
    _, stop_after = encoded_texts
    stop_after["batches"] = 2
    with pytest.raises(cancel.Stopped):
        encode_items(RunContext(settings))
    cancel.clear_stop()
    staging = next((source_lake.staging("encode").root).iterdir())
    # another process on this host, alive, owns it: it may still commit these rows
    (staging / OWNER_FILE).write_text(
        json.dumps({"host": socket.gethostname(), "pid": os.getppid()})
    )
    plan = plan_encode(RunContext(settings))
    assert plan.resumed == 0 and sum(len(s.item_ids) for s in plan.shards) == 40
    assert len(list(staging.rglob("part-*.parquet"))) == 2


def test_staged_rows_of_changed_text_or_another_encoder_are_not_taken_over(
    source_lake, settings, encoded_texts
):
    _, stop_after = encoded_texts
    stop_after["batches"] = 2
    with pytest.raises(cancel.Stopped):
        encode_items(RunContext(settings))
    cancel.clear_stop()
    stop_after.clear()
    staged = pl.concat([pl.read_parquet(p) for p in staged_parts(source_lake)])
    edited_id = staged["item_id"][0]
    # another encoder (max length 32) finds nothing of its own to take over
    other = plan_encode(RunContext(settings.updated(encoder_max_length=32)))
    assert other.resumed == 0
    items = source_lake.read("items")
    edited = build_item_text(
        items.filter(pl.col("item_id") == edited_id).with_columns(
            description=pl.lit("rewritten since the stopped run")
        )
    )
    source_lake.upsert("items", edited, keys=["item_id"])
    plan = plan_encode(RunContext(settings))
    assert plan.resumed == 7 and edited_id not in plan.resumed_items
    assert edited_id in {i for s in plan.shards for i in s.item_ids}
    report = commit_encode(
        RunContext(settings), plan, [encode_shard(RunContext(settings), s) for s in plan.shards]
    )
    assert report.encoded == 40
    stored = source_lake.read("item_embeddings").filter(pl.col("item_id") == edited_id)
    new_hash = source_lake.read("items").filter(pl.col("item_id") == edited_id)["text_hash"]
    assert stored["text_hash"].to_list() == new_hash.to_list()


def test_a_retried_shard_keeps_the_parts_of_its_failed_attempt(
    source_lake, settings, encoded_texts
):
    seen, stop_after = encoded_texts
    plan = plan_encode(RunContext(settings))
    stop_after["batches"] = 2
    with pytest.raises(cancel.Stopped):
        encode_shard(RunContext(settings), plan.shards[0])
    cancel.clear_stop()
    seen.clear()
    stop_after.clear()
    result = encode_shard(RunContext(settings), plan.shards[0])  # what a Prefect retry does
    assert len(seen) == 32 and result.rows == 40
    assert not staged_parts(source_lake)  # merged into the shard's one file
    assert commit_encode(RunContext(settings), plan, [result]).encoded == 40
