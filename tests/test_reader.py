"""Reading published recommendations: warm reader, titles, errors, many users."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from recsys_core import schemas
from recsys_core.errors import InputError
from recsys_core.reader import (
    RecommendationReader,
    read_recommendations,
    read_user_recommendations,
)
from recsys_core.storage import Lake


def night(users: list[str], model: str, k: int = 3) -> pl.DataFrame:
    rows = [
        (user, rank, f"i{rank}", 1.0 / rank, f"i{10 + rank}" if rank > 1 else None, model,
         datetime.now(UTC))
        for user in sorted(users)
        for rank in range(1, k + 1)
    ]  # fmt: skip
    return pl.DataFrame(rows, schema=schemas.RECOMMENDATIONS, orient="row")


def items(ids: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"item_id": ids, "title": [f"Title {i}" for i in ids], "description": [None] * len(ids),
         "categories": [[]] * len(ids), "attributes": [[]] * len(ids), "text": ids,
         "text_hash": ids, "updated_at": [datetime.now(UTC)] * len(ids),
         "quality": [None] * len(ids)},
        schema=schemas.ITEMS,
    )  # fmt: skip


def test_a_warm_reader_sees_every_new_version(tmp_path):
    lake = Lake(tmp_path)
    lake.publish("recommendations", night(["a", "b"], "m/1"), group_by="user_id")
    reader = RecommendationReader(tmp_path)
    assert reader.recommendations(["a"])["model"].unique().to_list() == ["m/1"]
    lake.publish("recommendations", night(["a", "c"], "m/2"), group_by="user_id")
    assert reader.version() == 1
    assert reader.recommendations(["a"])["model"].unique().to_list() == ["m/2"]
    assert reader.recommendations(["b"]).is_empty()  # gone in the new night
    lake.rollback("recommendations", 0)
    assert reader.recommendations(["b"], k=2)["rank"].to_list() == [1, 2]


def test_many_users_come_back_sorted_with_ranks_up_to_k(tmp_path):
    lake = Lake(tmp_path)
    lake.publish("recommendations", night([f"u{i}" for i in range(50)], "m/1", k=5),
                 group_by="user_id", group_rows=20)  # fmt: skip
    rows = read_recommendations(tmp_path, ["u7", "u3", "u40", "nobody"], k=2)
    assert rows.select("user_id", "rank").rows() == [
        ("u3", 1), ("u3", 2), ("u40", 1), ("u40", 2), ("u7", 1), ("u7", 2)
    ]  # fmt: skip


def test_user_recommendations_carry_item_and_reason_titles(tmp_path):
    lake = Lake(tmp_path)
    lake.publish("recommendations", night(["a"], "m/1"), group_by="user_id")
    lake.write("items", items(["i1", "i2", "i3", "i12"]), mode="overwrite")
    rows = read_user_recommendations(tmp_path, "a", k=3)
    assert rows["title"].to_list() == ["Title i1", "Title i2", "Title i3"]
    assert rows["reason_title"].to_list() == [None, "Title i12", None]  # i13 has no title
    # a changed catalog is picked up by the warm reader
    lake.write("items", items(["i1"]).with_columns(title=pl.lit("Renamed")), mode="overwrite")
    assert read_user_recommendations(tmp_path, "a", k=1)["title"].to_list() == ["Renamed"]


def test_unknown_user_and_missing_table_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="recsys nightly"):
        read_recommendations(tmp_path, ["a"])
    Lake(tmp_path).publish("recommendations", night(["a"], "m/1"))
    with pytest.raises(InputError, match="'zed' has no recommendations"):
        read_user_recommendations(tmp_path, "zed")
