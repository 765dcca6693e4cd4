"""Publishing recommendations: sharded ranking, one commit per run, consistent reads."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import polars as pl
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from recsys_core import schemas
from recsys_core.context import RunContext
from recsys_core.pipeline import MissingShards, plan_recommend, publish, rank_shard, recommend
from recsys_core.reader import RecommendationReader, read_recommendations
from recsys_core.storage import Lake


def published(lake: Lake) -> pl.DataFrame:
    return lake.read("recommendations").drop("generated_at").sort("user_id", "rank")


def test_publish_is_one_commit_with_run_metadata(trained_lake):
    context = trained_lake
    lake, settings = context.lake, context.settings
    report = recommend(RunContext(settings.updated(k=4), run_id="run-1"))
    table = lake.read("recommendations")
    events = lake.read("events", ["user_id", "item_id"]).unique()
    assert report.version == 0 and lake.version("recommendations") == 0
    assert report.rows == table.height and report.users == events["user_id"].n_unique()
    assert table.group_by("user_id").len()["len"].to_list() == [4] * report.users
    commit = lake.history("recommendations")[0]
    assert commit["run_id"] == "run-1" and commit["model"] == report.model
    assert int(commit["rows"]) == table.height and float(commit["user_coverage"]) == 1.0
    # seen items are never published
    assert table.join(events, on=["user_id", "item_id"], how="inner").is_empty()
    assert table["user_id"].to_list() == sorted(table["user_id"].to_list())


def test_sharded_run_equals_one_shard_and_each_user_sits_in_one_row_group(trained_lake):
    context = trained_lake
    lake = context.lake
    recommend(context.with_settings(shard_users=1_000_000))
    whole = published(lake)
    report = recommend(context.with_settings(shard_users=7))
    assert report.shards > 5 and report.version == 1  # many shards, still one commit
    assert published(lake).equals(whole)
    ranges = []
    for uri in DeltaTable(str(lake.path("recommendations"))).file_uris():
        meta = pq.ParquetFile(uri).metadata
        column = meta.schema.names.index("user_id")
        ranges += [meta.row_group(i).column(column).statistics for i in range(meta.num_row_groups)]
    for user in whole["user_id"].unique():
        assert sum(s.min <= user <= s.max for s in ranges) == 1


def test_unavailable_items_are_never_recommended(trained_lake, tmp_path):
    context = trained_lake
    lake, settings = context.lake, context.settings
    recommend(context)
    popular = published(lake)["item_id"].value_counts(sort=True)["item_id"].head(3).to_list()
    listed = tmp_path / "unavailable.csv"
    pl.DataFrame({"item_id": [*popular, "not-in-catalog"]}).write_csv(listed)
    report = recommend(context.with_settings(unavailable_items=listed))
    after = published(lake)
    assert report.unavailable_items == 4
    assert not set(after["item_id"]) & set(popular)
    assert (
        after.group_by("user_id").len()["len"].min() == settings.recommend.k
    )  # refilled from the rest


def test_a_missing_shard_publishes_nothing(trained_lake):
    context = trained_lake
    lake = context.lake
    recommend(context)
    before = published(lake)
    plan = plan_recommend(context, shard_users=10)
    staged = [rank_shard(context, plan, shard) for shard in plan.shards[:-1]]
    with pytest.raises(MissingShards, match=r"shard\(s\) \[\d+\] returned no result"):
        publish(context, plan, staged)
    assert lake.version("recommendations") == 0
    assert published(lake).equals(before)  # staged files of the failed run stay invisible


def frame_of(night: int, users: int) -> pl.DataFrame:
    """A night's table: `users` users x 3 ranks, every row labelled with the night."""
    rows = [
        (f"u{u:05d}", rank, f"i{rank}", float(night), None, f"night-{night}", datetime.now(UTC))
        for u in range(users)
        for rank in (1, 2, 3)
    ]
    return pl.DataFrame(rows, schema=schemas.RECOMMENDATIONS, orient="row")


def test_readers_never_see_a_partial_table_during_repeated_publishes(tmp_path):
    lake = Lake(tmp_path)
    sizes = {night: 200 + 37 * (night % 5) for night in range(25)}
    lake.publish("recommendations", frame_of(0, sizes[0]), group_by="user_id")
    seen: list[tuple[str, int]] = []
    problems: list[str] = []
    done = threading.Event()

    def read_in_a_loop() -> None:
        reader = RecommendationReader(tmp_path)  # warm, as a service would hold it
        while not done.is_set():
            whole = pl.scan_delta(str(lake.path("recommendations"))).collect()
            labels = whole["model"].unique().to_list()
            night = int(labels[0].split("-")[1]) if len(labels) == 1 else -1
            if len(labels) != 1 or whole.height != 3 * sizes[night]:
                problems.append(f"whole table: {labels} with {whole.height} rows")
            one = reader.recommendations(["u00150"])
            if one["rank"].to_list() != [1, 2, 3] or one["model"].n_unique() != 1:
                problems.append(f"user lookup: {one.select('rank', 'model').rows()}")
            seen.append((labels[0], whole.height))

    thread = threading.Thread(target=read_in_a_loop)
    thread.start()
    try:
        for night in range(1, 25):
            # several files per night, committed together, as the sharded pipeline does
            frame = frame_of(night, sizes[night])
            parts = [frame.slice(i, 150) for i in range(0, frame.height, 150)]
            files = [lake.write_file("recommendations", p, group_by="user_id") for p in parts]
            lake.commit_files("recommendations", files)
            lake.vacuum("recommendations", retention_days=7)
    finally:
        done.set()
        thread.join()
    assert not problems, problems[:5]
    assert len({label for label, _ in seen}) > 3  # the reader really saw several nights
    assert read_recommendations(tmp_path, ["u00001"])["model"].unique().to_list() == ["night-24"]
