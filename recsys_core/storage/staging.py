"""Staged files: what a sharded stage writes before its one commit, and who owns them.

Each stage stages under `DATA_DIR/_staging/<stage>/` (from `Lake.staging`), one folder per
plan; a stage whose staged files live elsewhere (recommend writes uncommitted files into
its table's folder) keeps only an owner file per plan there. A plan folder holds an owner
file (host and pid, see `storage.owners`) written before anything else, so other runs leave
a live plan's files alone. A run that was killed, stopped or failed leaves its folder
behind: the next plan may take over the files still useful to it (`Staging.take_over`),
folders with nothing staged go at once, and folders untouched for a day go whatever they
hold.

Every file is written whole or not at all (`write_atomically`), so a reader or a resuming
plan never sees half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys_core.storage.owners import claim, process_alive

STAGING = "_staging"  # under the data directory; one folder per stage
OWNER_FILE = "owner.json"  # in each plan folder: the host and process that will commit it
STALE_SECONDS = 24 * 3600  # plan folders of failed runs untouched this long are removed
# a plan folder of another host counts as a running plan while its files changed this recently
LIVE_SECONDS = 600.0
RESUMED = "resumed"  # subfolder of a plan holding the staged files taken over from dead plans


@dataclass(frozen=True)
class Staging:
    """The staging area of one stage: one folder per plan under `root`.

    Args:
        root: `DATA_DIR/_staging/<stage>` (see `Lake.staging`).
    """

    root: Path

    def plan_dir(self, plan_id: str) -> Path:
        """The folder the plan `plan_id` stages its files in."""
        return self.root / plan_id

    def claim(self, plan_id: str) -> Path:
        """Create the plan's folder with its owner file, so other plans leave it alone.

        Returns:
            The plan's folder.
        """
        folder = self.plan_dir(plan_id)
        claim(folder / OWNER_FILE, plan=plan_id)
        return folder

    def owner_file(self, plan_id: str) -> Path:
        """The owner file of a plan whose staged files live elsewhere (recommend stages its
        shards as uncommitted files of the table): `<root>/<plan_id>.json`."""
        return self.root / f"{plan_id}.json"

    def owner_files(self) -> list[Path]:
        """Every owner file written by `owner_file` plans."""
        return sorted(self.root.glob("*.json"))

    def plans(self) -> list[Path]:
        """Every plan folder, oldest name first."""
        if not self.root.is_dir():
            return []
        return sorted(f for f in self.root.iterdir() if f.is_dir())

    def remove_stale(self, seconds: float = STALE_SECONDS) -> None:
        """Remove plan folders of runs that failed long ago: no commit will ever read them.

        Args:
            seconds: A folder not changed for this long, whose plan is not live, goes.
        """
        cutoff = time.time() - seconds
        for folder in self.plans():
            if folder.stat().st_mtime < cutoff and not plan_is_live(folder):
                shutil.rmtree(folder, ignore_errors=True)

    def remove_empty_dead(self, keep: Path) -> None:
        """Remove plan folders with nothing staged whose run is gone (e.g. stopped before its
        first file): nothing in them can be taken over, so they go now, not after a day.

        A folder without an owner file is left for LIVE_SECONDS: a plan being claimed right
        now creates its folder an instant before its owner file.

        Args:
            keep: This plan's folder.
        """
        for folder in self.plans():
            if folder == keep or any(folder.rglob("*.parquet")):
                continue
            if not (folder / OWNER_FILE).is_file():
                if time.time() - folder.stat().st_mtime < LIVE_SECONDS:
                    continue
            elif plan_is_live(folder):
                continue
            shutil.rmtree(folder, ignore_errors=True)

    def take_over(
        self, into: Path, wanted_in: Callable[[Path], set[str]]
    ) -> tuple[tuple[str, ...], set[str]]:
        """Move the staged files of dead plans that hold rows still wanted into `into`.

        Files are moved, not copied, so two plans never publish the same file; a dead plan's
        folder emptied that way is removed.

        Args:
            into: This plan's folder; the files go to its `resumed` subfolder.
            wanted_in: The keys (e.g. item ids) of the still-wanted rows a staged file holds;
                an empty set for a file of no use (or not a staged file at all).

        Returns:
            The moved files and the keys they cover.
        """
        found: set[str] = set()
        moved: list[str] = []
        dead = [f for f in self.plans() if f != into and not plan_is_live(f)]
        for folder in dead:
            taken = len(moved)
            for file in sorted(folder.rglob("*.parquet")):
                new = wanted_in(file) - found
                if not new:
                    continue
                target = into / RESUMED / f"{len(moved):05d}-{folder.name}-{file.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(file, target)
                except OSError:  # another plan took it first
                    continue
                found |= new
                moved.append(str(target))
            if len(moved) > taken and not any(folder.rglob("*.parquet")):
                shutil.rmtree(folder, ignore_errors=True)
        return tuple(moved), found


def plan_is_live(folder: Path) -> bool:
    """Whether the plan staged in `folder` may still be running (and commit its rows).

    On this host: its process is alive, and is not this one (a plan of this process that
    is not running any more failed or was stopped). On another host (workers sharing the
    data directory), only time tells: a file changed within LIVE_SECONDS.
    """
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return False  # no owner: made by an older version, or the plan never started
    if owner.get("host") == socket.gethostname():
        pid = int(owner.get("pid", 0))
        return pid != os.getpid() and process_alive(pid)
    newest = max((f.stat().st_mtime for f in folder.rglob("*") if f.is_file()), default=0.0)
    return time.time() - newest < LIVE_SECONDS


def write_atomically(frame: pl.DataFrame, target: Path) -> None:
    """Write `frame` as Parquet so that a reader (or a resuming plan) sees the whole file or
    none.

    Args:
        frame: The rows.
        target: The file; its folder is created.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}-{uuid.uuid4().hex[:6]}.partial")
    frame.write_parquet(partial)
    os.replace(partial, target)


def write_part(frame: pl.DataFrame, folder: Path) -> Path:
    """Stage `frame` as the next numbered part file in `folder` (written atomically).

    Args:
        frame: The rows.
        folder: A shard's parts folder; created on the first part.

    Returns:
        The part file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    number = len(list(folder.glob("part-*.parquet")))
    target = folder / f"part-{number:05d}-{uuid.uuid4().hex[:6]}.parquet"
    write_atomically(frame, target)
    return target


def read_parts(files: Iterable[str | Path]) -> list[pl.DataFrame]:
    """The frames of staged files, in file-name order."""
    return [pl.read_parquet(f) for f in sorted(str(f) for f in files)]
