from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import numpy as np
import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from recsys_core import schemas
from recsys_core.errors import InputError
from recsys_core.storage import Lake


def recs(n_users: int, model: str = "m/1") -> pl.DataFrame:
    now = datetime.now(UTC)
    return pl.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(n_users) for _ in range(2)],
            "rank": [1, 2] * n_users,
            "item_id": ["a", "b"] * n_users,
            "score": [0.9, 0.5] * n_users,
            "reason_item_id": [None, "c"] * n_users,
            "model": [model] * (2 * n_users),
            "generated_at": [now] * (2 * n_users),
        }
    )


def test_write_conforms_to_the_schema_and_records_metadata(tmp_path):
    lake = Lake(tmp_path)
    assert lake.version("recommendations") is None
    version = lake.write("recommendations", recs(3), mode="overwrite", metadata={"run_id": "r1"})
    assert version == 0
    table = lake.read("recommendations")
    assert table.schema == schemas.RECOMMENDATIONS
    assert lake.history("recommendations")[0]["run_id"] == "r1"


def test_overwrite_keeps_old_versions_readable(tmp_path):
    lake = Lake(tmp_path)
    lake.write("recommendations", recs(2, "m/1"), mode="overwrite")
    lake.write("recommendations", recs(5, "m/2"), mode="overwrite")
    assert lake.read("recommendations")["model"].unique().to_list() == ["m/2"]
    old = lake.read("recommendations", version=0)
    assert old.height == 4 and old["model"].unique().to_list() == ["m/1"]


def test_upsert_replaces_matched_rows_and_inserts_new_ones(tmp_path):
    lake = Lake(tmp_path)
    base = pl.DataFrame(
        {"source_file": ["a", "b"], "content_hash": ["1", "2"], "kind": ["x", "x"],
         "rows_read": [1, 2], "rows_stored": [1, 2], "duplicates": [0, 0], "quarantined": [0, 0],
         "ingested_at": [datetime.now(UTC)] * 2}
    )  # fmt: skip
    lake.upsert("ingest_manifest", base, keys=["source_file"])
    change = base.with_columns(pl.Series("content_hash", ["9", "3"])).with_columns(
        pl.Series("source_file", ["b", "c"])
    )
    lake.upsert("ingest_manifest", change, keys=["source_file"])
    got = dict(lake.read("ingest_manifest").select("source_file", "content_hash").iter_rows())
    assert got == {"a": "1", "b": "9", "c": "3"}


def test_missing_columns_and_tables_are_input_errors(tmp_path):
    lake = Lake(tmp_path)
    with pytest.raises(InputError, match="missing column"):
        lake.write("recommendations", recs(1).drop("score"), mode="overwrite")
    assert not lake.exists("recommendations")
    with pytest.raises(InputError, match="not found"):
        lake.read("events")
    assert lake.read_or_empty("events").schema == schemas.EVENTS


def recs_of(users: dict[str, int], model: str) -> pl.DataFrame:
    """Rows for users with the given number of recommendations each, sorted by user."""
    now = datetime.now(UTC)
    rows = [
        (user, rank, f"i{rank}", 1.0 / rank, None, model, now)
        for user in sorted(users)
        for rank in range(1, users[user] + 1)
    ]
    return pl.DataFrame(rows, schema=schemas.RECOMMENDATIONS, orient="row")


def row_group_ranges(lake: Lake, table: str) -> list[tuple[str, str]]:
    """(min, max) user_id of every row group of the current version, from Parquet metadata."""
    ranges = []
    for uri in DeltaTable(str(lake.path(table))).file_uris():
        meta = pq.ParquetFile(uri).metadata
        column = meta.schema.names.index("user_id")
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(column).statistics
            ranges.append((stats.min, stats.max))
    return ranges


def test_row_groups_never_split_a_user(tmp_path):
    lake = Lake(tmp_path)
    rng = np.random.default_rng(0)
    users = {f"u{u:04d}": int(rng.integers(1, 9)) for u in range(300)}
    written = lake.write_file("recommendations", recs_of(users, "m/1"), group_by="user_id",
                              group_rows=50)  # fmt: skip
    lake.commit_files("recommendations", [written])
    ranges = row_group_ranges(lake, "recommendations")
    assert len(ranges) == written.row_groups > 10
    for user in users:  # exactly one row group can hold each user
        assert sum(low <= user <= high for low, high in ranges) == 1
    assert all(ranges[i][1] < ranges[i + 1][0] for i in range(len(ranges) - 1))


def test_uncommitted_files_are_invisible(tmp_path):
    lake = Lake(tmp_path)
    lake.publish("recommendations", recs_of({"a": 2}, "m/1"), group_by="user_id")
    lake.write_file("recommendations", recs_of({"b": 3}, "m/2"))
    assert lake.read("recommendations")["model"].unique().to_list() == ["m/1"]
    assert lake.version("recommendations") == 0


def test_commit_of_many_files_is_one_version_with_metadata(tmp_path):
    lake = Lake(tmp_path)
    lake.publish("recommendations", recs_of({"a": 2}, "m/1"))
    files = [
        lake.write_file("recommendations", recs_of({u: 3}, "m/2"), group_by="user_id")
        for u in ("b", "c", "d")
    ]
    version = lake.commit_files("recommendations", files, metadata={"run_id": "r2", "rows": 9})
    assert version == 1
    table = lake.read("recommendations")
    assert table.height == 9 and table["model"].unique().to_list() == ["m/2"]
    assert lake.history("recommendations")[0]["run_id"] == "r2"


def test_rollback_restores_the_previous_rows_exactly(tmp_path):
    lake = Lake(tmp_path)
    first = recs_of({"a": 3, "b": 2}, "m/1")
    lake.publish("recommendations", first, group_by="user_id", metadata={"run_id": "night-1"})
    lake.publish("recommendations", recs_of({"c": 4}, "m/2"), group_by="user_id")
    version = lake.rollback("recommendations", 0)
    assert version == 2
    restored = lake.read("recommendations").sort("user_id", "rank")
    assert restored.equals(first.sort("user_id", "rank"))
    latest = lake.history("recommendations")[0]
    assert latest["operation"] == "RESTORE" and latest["restored_version"] == "0"
    # the replaced night can be restored in turn
    lake.rollback("recommendations", 1)
    assert lake.read("recommendations")["user_id"].unique().to_list() == ["c"]


def test_rollback_to_a_missing_version_is_an_input_error(tmp_path):
    lake = Lake(tmp_path)
    with pytest.raises(InputError, match="not found"):
        lake.rollback("recommendations", 0)
    lake.publish("recommendations", recs_of({"a": 1}, "m/1"))
    with pytest.raises(InputError, match="versions 0 to 0"):
        lake.rollback("recommendations", 3)


def test_vacuum_keeps_versions_inside_the_retention_period_only(tmp_path):
    lake = Lake(tmp_path)
    lake.publish("recommendations", recs_of({"a": 2}, "m/1"), retention_days=7)
    lake.publish("recommendations", recs_of({"b": 2}, "m/2"), retention_days=7)
    files = sorted(p.name for p in lake.path("recommendations").glob("*.parquet"))
    assert len(files) == 2  # version 0 was replaced minutes ago: kept
    assert lake.read("recommendations", version=0)["model"].to_list() == ["m/1", "m/1"]
    deleted = lake.vacuum("recommendations", retention_days=0)
    assert len(deleted) == 1
    assert len(list(lake.path("recommendations").glob("*.parquet"))) == 1
    assert lake.read("recommendations")["model"].unique().to_list() == ["m/2"]
    with pytest.raises(InputError, match="vacuumed"):
        lake.rollback("recommendations", 0)
    assert lake.vacuum("recommendations", retention_days=0) == []  # nothing left to delete


def test_published_table_reads_with_polars_pyarrow_and_duckdb(tmp_path):
    lake = Lake(tmp_path)
    lake.publish("recommendations", recs_of({"1": 3, "2": 3, "10": 2}, "m/1"), group_by="user_id")
    path = str(lake.path("recommendations"))
    one = pl.scan_delta(path).filter(pl.col("user_id") == "2").collect()
    assert one["rank"].to_list() == [1, 2, 3]
    dataset = DeltaTable(path).to_pyarrow_dataset()
    arrow = dataset.to_table(filter=pc.field("user_id") == "10")
    assert arrow.num_rows == 2
    counts = duckdb.sql(
        "select user_id, count(*) as n from dataset where user_id in ('1', '10') "
        "group by user_id order by user_id"
    ).fetchall()
    assert counts == [("1", 3), ("10", 2)]
