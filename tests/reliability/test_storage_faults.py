"""Corrupt inputs, a full disk and a read-only data directory: clear errors, tables intact.

The disk tests mount a small tmpfs of their own (the test runs as root in CI).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec, preflight
from recsys_core.errors import InputError
from recsys_core.pipeline import ingest
from recsys_core.registry.tracking import CHAMPION, Tracker
from recsys_core.settings import Settings
from recsys_core.storage import Lake

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def nightly(data_dir: Path, events: list[Path], items: Path, encoder: Path) -> object:
    args = ["nightly", "--data-dir", str(data_dir), "--items", str(items), "--k", "4",
            "--encoder", str(encoder), "--models", "popularity,ease"]  # fmt: skip
    for path in events:
        args += ["--events", str(path)]
    return CliRunner().invoke(app, args)


def split_source(small_source, folder: Path) -> tuple[Path, Path, Path]:
    events, items = small_source
    folder.mkdir(parents=True, exist_ok=True)
    rows = pl.read_csv(events)
    day1, day2 = folder / "day1.csv", folder / "day2.csv"
    rows.head(1000).write_csv(day1)
    rows.slice(1000).write_csv(day2)
    shutil.copy(items, folder / "items.csv")
    return day1, day2, folder / "items.csv"


def test_corrupt_and_truncated_parquet_inputs_are_input_errors(tmp_path, small_source):
    events, items = small_source
    good = tmp_path / "good.parquet"
    pl.read_csv(events).write_parquet(good)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet at all")
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    lake = Lake(tmp_path / "lake")
    ingest(RunContext.of(lake.root), SourceSpec(events=(str(good),), items=str(items)))
    versions = {t: lake.version(t) for t in ("events", "items", "quarantine")}
    for bad in (garbage, truncated):
        spec = SourceSpec(events=(str(bad),), items=str(items))
        with pytest.raises(InputError, match=bad.name):
            preflight(spec)
        with pytest.raises(InputError, match=bad.name):
            ingest(RunContext.of(lake.root), spec)
        result = CliRunner().invoke(
            app, ["ingest", "--data-dir", str(lake.root), "--events", str(bad), "--items",
                  str(items)],
        )  # fmt: skip
        assert result.exit_code == 2
        assert bad.name in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert {t: lake.version(t) for t in versions} == versions


def test_a_full_disk_fails_clearly_and_keeps_the_previous_night(
    harness, tmp_path, small_source, tiny_encoder_dir
):
    day1, day2, items = split_source(small_source, tmp_path / "source")
    with small_filesystem(tmp_path / "disk", "48m") as disk:
        data_dir = disk / "lake"
        assert nightly(data_dir, [day1], items, tiny_encoder_dir).exit_code == 0
        lake = Lake(data_dir)
        before = lake.read("recommendations")
        events_before = lake.read("events").height
        filler = disk / "filler"
        free = shutil.disk_usage(disk).free
        with filler.open("wb") as fh:  # leave a few KiB: the next night cannot fit
            fh.truncate(0)
            fh.write(b"\0" * (free - 8 * 1024))
        result = nightly(data_dir, [day1, day2], items, tiny_encoder_dir)
        assert result.exit_code == 1, result.output
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith("error: no space left on the device"), result.stderr
        # readers still get the previous night, whole; the champion still loads
        assert lake.read("recommendations").equals(before)
        settings = Settings(data_dir=data_dir)
        Tracker(lake, settings.tracking.experiment, settings.tracking.registered_model).load(
            CHAMPION
        )
        filler.unlink()
        assert nightly(data_dir, [day1, day2], items, tiny_encoder_dir).exit_code == 0
        assert lake.read("events").height == events_before + 500
        assert not lake.read("recommendations").equals(before)


def test_a_read_only_data_directory_is_refused_and_still_readable(
    harness, tmp_path, small_source, tiny_encoder_dir
):
    day1, _, items = split_source(small_source, tmp_path / "source")
    with small_filesystem(tmp_path / "disk", "48m") as disk:
        data_dir = disk / "lake"
        assert nightly(data_dir, [day1], items, tiny_encoder_dir).exit_code == 0
        user = Lake(data_dir).read("recommendations")["user_id"][0]
        view = tmp_path / "read-only-view"
        view.mkdir()
        subprocess.run(["mount", "--bind", str(data_dir), str(view)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
            result = nightly(view, [day1], items, tiny_encoder_dir)
            assert result.exit_code == 2
            assert "not writable" in result.stderr and str(view) in result.stderr
            shown = CliRunner().invoke(app, ["recs", user, "--data-dir", str(view), "--json"])
            assert shown.exit_code == 0, shown.output
        finally:
            subprocess.run(["umount", "-l", str(view)], check=False)
