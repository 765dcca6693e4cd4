"""Data directories and input files whose names hold spaces, `#`, `%` and non-ASCII letters
work end to end: every table is read through storage's own reader."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from recsys_core.errors import InputError
from recsys_core.storage import Lake
from tests.test_storage import recs_of

# a space, '#', '%' not followed by hex digits, and letters outside ASCII
ODD = "Daten #1 100% für Élodie"


def test_every_table_operation_works_under_an_odd_path(tmp_path):
    lake = Lake(tmp_path / ODD / "lake")
    lake.publish("recommendations", recs_of({"a": 2, "b": 1}, "m/1"), group_by="user_id")
    files = [lake.write_file("recommendations", recs_of({u: 2}, "m/2")) for u in ("c", "d")]
    assert lake.commit_files("recommendations", files) == 1
    assert lake.read("recommendations")["user_id"].unique().sort().to_list() == ["c", "d"]
    assert lake.read("recommendations", version=0).height == 3
    assert lake.scan("recommendations").filter(pl.col("user_id") == "d").collect().height == 2
    live = lake.live("recommendations")
    lake.publish("recommendations", recs_of({"e": 4}, "m/3"))
    assert live.latest() == 2 and live.scan().collect()["user_id"].unique().to_list() == ["e"]
    assert lake.rollback("recommendations", 1) == 3  # its files are found, so not "vacuumed"
    assert lake.read("recommendations")["model"].unique().to_list() == ["m/2"]
    assert len(lake.vacuum("recommendations", retention_days=0)) == 2  # versions 0 and 2
    assert lake.read("recommendations").height == 4
    lake.write("recommendations", recs_of({"f": 1}, "m/4"), mode="append")
    assert lake.read("recommendations").height == 5

    manifest = pl.DataFrame(
        {"source_file": ["a"], "content_hash": ["1"], "kind": ["events"], "rows_read": [1],
         "rows_stored": [1], "duplicates": [0], "quarantined": [0]}
    ).with_columns(ingested_at=pl.lit(None, pl.Datetime("us", "UTC")))  # fmt: skip
    lake.upsert("ingest_manifest", manifest, keys=["source_file"])
    lake.upsert("ingest_manifest", manifest.with_columns(content_hash=pl.lit("2")),
                keys=["source_file"])  # fmt: skip
    assert lake.read("ingest_manifest")["content_hash"].to_list() == ["2"]


def test_a_data_dir_with_a_percent_escape_is_refused_with_one_line(tmp_path):
    # deltalake decodes `%41` when it reads a table back, so such a table would be lost
    with pytest.raises(InputError, match="'%41'"):
        Lake(tmp_path / "sale%41")
    for command in (["ingest"], ["recs", "u1"]):  # refused before Prefect starts
        result = CliRunner().invoke(app, [*command, "--data-dir", str(tmp_path / "sale%41")])
        assert result.exit_code == 2, result.output
        assert "'%41'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "sale%41").exists()


@pytest.mark.slow
def test_nightly_and_recs_on_an_odd_data_dir_with_odd_input_names(
    harness, small_source, tiny_encoder_dir, tmp_path
):
    events, items = small_source
    inputs = tmp_path / f"in {ODD}"
    inputs.mkdir()
    odd_events = shutil.copy(events, inputs / "events #2 50% é.csv")
    odd_items = shutil.copy(items, inputs / "items #2 50% é.csv")
    data_dir = tmp_path / ODD / "lake"
    args = [
        "nightly", "--data-dir", str(data_dir), "--events", str(odd_events),
        "--items", str(odd_items), "--k", "3", "--encoder", str(tiny_encoder_dir),
        "--models", "popularity",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lake = Lake(data_dir)
    stored = lake.read("recommendations")
    assert stored["user_id"].n_unique() == pl.read_csv(events)["user_id"].n_unique()
    user = stored["user_id"][0]
    shown = CliRunner().invoke(app, ["recs", user, "--data-dir", str(data_dir), "--json"])
    assert shown.exit_code == 0, shown.output
    assert [r["rank"] for r in json.loads(shown.stdout)["recommendations"]] == [1, 2, 3]
    # MLflow kept its database and the champion's artifacts inside the data directory
    assert (data_dir / "mlflow" / "mlflow.db").is_file()
    assert any((data_dir / "mlflow" / "artifacts").rglob("*.safetensors"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ODD, inputs.name])
    assert [p.name for p in (tmp_path / ODD).iterdir()] == ["lake"]
    # a second ingest of the same files reads the stored tables back and adds nothing
    again = CliRunner().invoke(
        app, ["ingest", "--data-dir", str(data_dir), "--events", str(odd_events),
              "--items", str(odd_items)],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert lake.read("events").height == pl.read_csv(events).height
