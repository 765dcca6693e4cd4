"""forget-user removes a user's data from every table, old version and model artifact."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.errors import InputError
from recsys_core.pipeline import encode_items, ingest, recommend, train
from recsys_core.pipeline.forget import forget_user
from recsys_core.registry.tracking import CHAMPION, Tracker

SECRET = "forget-me-7f3a9c"


def files_mentioning(root: Path, needle: str) -> list[Path]:
    """Files whose bytes contain `needle`, plus Parquet files holding it in any string cell."""
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if needle.encode() in path.read_bytes():
            found.append(path)
        elif path.suffix == ".parquet":
            table = pq.read_table(path)
            for column in table.column_names:
                values = table.column(column).to_pylist()
                if any(isinstance(v, str) and needle in v for v in values):
                    found.append(path)
                    break
    return found


@pytest.fixture
def lake_with_secret_user(tmp_path, small_source, tiny_encoder_dir):
    events, items = small_source
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(items, source / "items.csv")
    rows = pl.read_csv(events)
    extra = rows.head(12).with_columns(user_id=pl.lit(SECRET))
    pl.concat([rows, extra]).write_csv(source / "events.csv")
    # a broken row of the user lands in quarantine, with the id in its raw text
    with (source / "events.csv").open("a") as fh:
        fh.write(f"{SECRET},i1,not-a-time,view,1.0\n")
    context = RunContext.of(
        tmp_path / "lake", encoder=str(tiny_encoder_dir), models=("ease", "mf(epochs=2)"), k=5,
        experiment="forget", registered_model="forget-model",
    )  # fmt: skip
    ingest(
        context, SourceSpec(events=(str(source / "events.csv"),), items=str(source / "items.csv"))
    )
    encode_items(context)
    train(context)
    recommend(context)
    recommend(context)  # a second version: the first one still holds the user
    return context


def test_forget_user_leaves_no_trace_and_keeps_everyone_else(lake_with_secret_user):
    context = lake_with_secret_user
    lake, settings = context.lake, context.settings
    assert files_mentioning(lake.root, SECRET)  # the data really was there
    others_before = lake.read("recommendations").filter(pl.col("user_id") != SECRET)
    tracker = Tracker(lake, settings.tracking.experiment, settings.tracking.registered_model)
    bundle, _ = tracker.load(CHAMPION)
    some_users = [u for u in bundle.users.ids.to_list() if u != SECRET][:5]
    histories, _ = bundle.histories_for(some_users)
    scores_before = bundle.model.score(histories)

    report = forget_user(context, SECRET)
    assert report.rows_deleted["events"] == 12
    assert report.rows_deleted["recommendations"] == 5
    assert report.rows_deleted["quarantine"] == 1
    assert report.model_files_rewritten >= 2

    leftovers = files_mentioning(lake.root, SECRET)
    assert leftovers == []
    # per-user weights (the mf candidate's user vectors) lose the user's row, and only it
    blanked = 0
    for weights_file in lake.mlflow_dir.rglob("weights.safetensors"):
        vectors = load_file(str(weights_file)).get("user_vectors")
        if vectors is None:
            continue
        users = pl.read_parquet(weights_file.parent / "users.parquet")
        row = users.filter(pl.col("id").str.starts_with("forgotten-"))["index"]
        assert row.len() == 1
        assert not vectors[row[0]].any() and vectors.abs().sum(1).gt(0).sum() == len(vectors) - 1
        blanked += 1
    assert blanked >= 1
    others_after = lake.read("recommendations").filter(pl.col("user_id") != SECRET)
    assert others_after.sort(["user_id", "rank"]).equals(others_before.sort(["user_id", "rank"]))
    bundle_after, _ = tracker.load(CHAMPION)
    assert SECRET not in bundle_after.users.ids.to_list()
    histories, _ = bundle_after.histories_for(some_users)
    torch.testing.assert_close(bundle_after.model.score(histories), scores_before)
    # the tables still work: the next night publishes as usual
    recommend(context)
    assert lake.read("recommendations").filter(pl.col("user_id") == SECRET).is_empty()


def test_forgetting_an_unknown_user_is_an_input_error(lake_with_secret_user):
    context = lake_with_secret_user
    with pytest.raises(InputError, match="no data of user"):
        forget_user(context, "nobody-at-all")
    with pytest.raises(InputError, match="empty"):
        forget_user(context, " ")
