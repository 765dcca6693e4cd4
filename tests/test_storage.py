from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

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
