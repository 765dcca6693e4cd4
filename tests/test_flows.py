"""The whole nightly flow under Prefect's test harness, and the CLI's exit-code contract."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from recsys_core.settings import DEFAULT_MODELS
from recsys_core.storage import Lake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def nightly_lake(harness, small_source, tiny_encoder_dir, tmp_path_factory):
    from flows.nightly import nightly
    from flows.params import RunOptions, Source

    events, items = small_source
    data_dir = tmp_path_factory.mktemp("nightly") / "lake"
    summary = nightly(
        source=Source(events=[str(events)], items=str(items)),
        options=RunOptions(data_dir=str(data_dir), k=5, encoder=str(tiny_encoder_dir)),
    )
    return data_dir, summary


def test_nightly_flow_publishes_k_unseen_items_for_every_user(nightly_lake):
    data_dir, summary = nightly_lake
    lake = Lake(data_dir)
    recs = lake.read("recommendations")
    events = lake.read("events", ["user_id", "item_id"]).unique()
    assert recs["user_id"].n_unique() == events["user_id"].n_unique()
    assert recs.group_by("user_id").len()["len"].unique().to_list() == [5]
    assert recs.join(events, on=["user_id", "item_id"], how="inner").is_empty()
    assert summary.publish.rows == recs.height
    assert summary.train.champion == recs["model"][0]
    # the small source has text and short ordered histories: the sequential model joins
    assert {c.model for c in summary.train.candidates} == {*DEFAULT_MODELS, "sasrec"}
    assert summary.encode.encoded == lake.read("items").height


def test_cli_recs_prints_json(nightly_lake):
    data_dir, _ = nightly_lake
    user = Lake(data_dir).read("recommendations")["user_id"][0]
    result = CliRunner().invoke(app, ["recs", user, "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["user_id"] == user
    assert [r["rank"] for r in payload["recommendations"]] == [1, 2, 3, 4, 5]
    assert all(r["title"] for r in payload["recommendations"])


def test_cli_nightly_runs_on_generic_files(harness, small_source, tiny_encoder_dir, tmp_path):
    events, items = small_source
    data_dir = tmp_path / "lake"
    args = [
        "nightly", "--data-dir", str(data_dir), "--events", str(events), "--items", str(items),
        "--k", "3", "--encoder", str(tiny_encoder_dir), "--models", "ease",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Nightly run complete" in result.stdout
    assert Lake(data_dir).read("recommendations")["rank"].max() == 3


def test_cli_nightly_without_a_source_works_on_the_data_it_has(
    nightly_lake, tiny_encoder_dir, tmp_path
):
    """The recovery path: a re-run with no source ingests nothing (never the bundled sample
    on top of the user's data) and goes on with encode, train and recommend."""
    data_dir, _ = nightly_lake
    copy = tmp_path / "lake"
    shutil.copytree(data_dir, copy)
    events = Lake(copy).read("events", ["user_id", "item_id", "timestamp"]).sort(pl.all())
    args = ["nightly", "--data-dir", str(copy), "--k", "5", "--encoder", str(tiny_encoder_dir)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Nightly run complete" in result.stdout and "nothing ingested" in result.stdout
    after = Lake(copy).read("events", ["user_id", "item_id", "timestamp"]).sort(pl.all())
    assert after.equals(events)
    assert Lake(copy).read("recommendations")["rank"].max() == 5


def test_cli_missing_column_exits_2_and_publishes_nothing(tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("uid,item_id,timestamp\n1,2,1700000000\n")
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n2,x\n")
    data_dir = tmp_path / "lake"
    result = CliRunner().invoke(
        app,
        ["nightly", "--data-dir", str(data_dir), "--events", str(events), "--items", str(items)],
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(events) in lines[0] and "'user_id'" in lines[0]
    assert not Lake(data_dir).exists("recommendations")
    assert not Lake(data_dir).exists("events")


def test_cli_missing_file_exits_2(tmp_path):
    result = CliRunner().invoke(
        app, ["ingest", "--data-dir", str(tmp_path), "--events", str(tmp_path / "no.csv"),
              "--items", str(tmp_path / "i.csv")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "no.csv: file not found" in result.stderr


def test_cli_recs_for_unknown_user_or_missing_table_exits_2(nightly_lake, tmp_path):
    data_dir, _ = nightly_lake
    result = CliRunner().invoke(app, ["recs", "nobody", "--data-dir", str(data_dir)])
    assert result.exit_code == 2 and "nobody" in result.stderr
    result = CliRunner().invoke(app, ["recs", "1", "--data-dir", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "recsys nightly" in result.stderr
