"""Drop exact duplicate events: within a run and against the stored events of the same dates.

Keys (see `keys`) are held per event date, loaded from the `events` table the first time a
batch touches a date, and spilled to a temporary folder beyond a memory budget, so memory is
bounded by the budget, never by the size of the log or the table.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import psutil

from recsys_core.pipeline.ingest.keys import buckets, key_columns
from recsys_core.storage import Lake

SPILL_PREFIX = "recsys-ingest-keys-"


@contextmanager
def spill_folder() -> Iterator[Path]:
    """A temporary folder for spilled keys, named after this process.

    Folders left behind by ingests that were killed (their process is gone) are removed first,
    so repeated kills do not pile up folders in the temporary directory.
    """
    for old in Path(tempfile.gettempdir()).glob(f"{SPILL_PREFIX}*-*"):
        pid = old.name.removeprefix(SPILL_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{SPILL_PREFIX}{os.getpid()}-") as path:
        yield Path(path)


class SeenKeys:
    """Keys of the events already stored or kept in this run, to drop exact duplicates.

    A key is the exact timestamp (microseconds) plus a 64-bit hash of (user, item, event
    type); two different events collide only if they share the microsecond and the hash
    (about 1 in 10^19 per such pair). A hash of the user rides along to count events per
    user and day. Keys are held per event date: the stored keys of a date are loaded the
    first time a batch touches it (only the dates a run touches are read), and beyond
    `budget_rows` keys the least recently touched dates are spilled to `spill_dir`.

    Args:
        lake: The data directory (its `events` table holds the stored keys).
        spill_dir: A temporary folder for spilled keys.
        budget_rows: Keys kept in memory before spilling.
    """

    BYTES_PER_KEY = 24  # _ts (i64), _h (u64), _u (u64)
    LOAD_ROWS = 2_000_000  # stored events read at a time when their keys are loaded

    def __init__(self, lake: Lake, spill_dir: Path, budget_rows: int) -> None:
        self.lake = lake
        self.spill_dir = spill_dir
        self.budget_rows = budget_rows
        self._keys: dict[date, list[pl.DataFrame]] = {}
        self._rows: dict[date, int] = {}
        self._spilled: dict[date, list[Path]] = {}
        self._loaded: set[date] = set()
        self._last_used: dict[date, int] = {}
        self._batch = 0
        # stored rows per date before this run (from the Delta log), to load keys in groups
        self._stored = (
            lake.rows_per_partition("events", "event_date") if lake.exists("events") else {}
        )

    def keep_new(
        self, events: pl.DataFrame
    ) -> tuple[pl.DataFrame, dict[tuple[date], pl.DataFrame]]:
        """The rows of `events` (with `event_date`, `_h` and `_u`) not seen before, first
        occurrences only, in their order, and the same rows split by event date; their keys
        are remembered."""
        if events.is_empty():
            return events, {}
        self._batch += 1
        keys = pl.DataFrame([events["timestamp"].to_physical().alias("_ts"), events["_h"]])
        hints = _hints(keys)
        dates = _distinct_dates(events["event_date"])
        self._keys_in_memory(dates)
        dropped = _repeats(keys, hints)
        known_dates = [d for d in dates if self._keys.get(d)]
        if known_dates:
            known = pl.concat([f for d in known_dates for f in self._keys[d]], rechunk=False)
            # only rows of those dates can repeat a known key (in a time-ordered log, the
            # rows of the date the previous batch ended in)
            rows = None
            if len(known_dates) < len(dates):
                rows = events["event_date"].is_in(pl.Series(known_dates).implode()).arg_true()
            seen = _seen_before(keys, hints, known, rows)
            dropped = seen if dropped is None else dropped | seen
        if dropped is not None:
            events = events.filter(pl.Series(~dropped))
        parts = split_by_date(events)
        for (day,), part in parts.items():
            timestamps = part["timestamp"].to_physical().alias("_ts")
            self._remember(day, pl.DataFrame([timestamps, part["_h"], part["_u"]]))
        self._spill_if_needed(set(dates))
        # `_h`, `_u` and `_i` stay: dropping them costs a pass; the table's schema leaves them
        return events, parts

    def user_hashes_per_date(self) -> Iterator[tuple[date, pl.Series]]:
        """The user hash `_u` of every key held (loaded, added or spilled), one date at a
        time, in date order: only user hashes are read back (8 bytes a key)."""
        for day in sorted({*self._keys, *self._spilled}):
            spilled = [pl.read_ipc(path, columns=["_u"]) for path in self._spilled.get(day, [])]
            frames = [*self._keys.get(day, []), *spilled]
            yield day, pl.concat([frame["_u"] for frame in frames], rechunk=False)

    def covers(self, dates: Iterable[date]) -> bool:
        """Whether the keys held include every event of `dates` (loaded or added here)."""
        return set(dates) <= self.dates_held()

    def dates_held(self) -> set[date]:
        """The dates whose keys are all held (loaded or added here)."""
        return {*self._loaded, *self._keys, *self._spilled}

    def _keys_in_memory(self, dates: Iterable[date]) -> None:
        """Make the keys of `dates` present in memory: reload spilled ones, load stored ones."""
        to_load = []
        for day in dates:
            self._last_used[day] = self._batch
            for path in self._spilled.pop(day, []):
                self._remember(day, pl.read_ipc(path))
                path.unlink()
            if day not in self._loaded:
                self._loaded.add(day)
                to_load.append(day)
        to_load = [day for day in to_load if day in self._stored]
        group: list[date] = []
        for day in [*to_load, None]:  # a few million stored rows per read, then only keys
            if day is not None:
                group.append(day)
            rows = sum(self._stored[d] for d in group)
            if group and (rows >= self.LOAD_ROWS or day is None):
                self._load(group)
                group = []

    def _load(self, dates: list[date]) -> None:
        ids, key = key_columns()
        stored = (
            self.lake.scan("events")
            .filter(pl.col("event_date").is_in(dates))
            .with_columns(*ids)
            .select("event_date", pl.col("timestamp").cast(pl.Int64).alias("_ts"), *key, "_u")
            .collect(engine="streaming")
        )
        for (day,), part in stored.partition_by("event_date", as_dict=True).items():
            self._remember(day, part.drop("event_date"))

    def _remember(self, day: date, keys: pl.DataFrame) -> None:
        self._keys.setdefault(day, []).append(keys)
        self._rows[day] = self._rows.get(day, 0) + keys.height

    def _spill_if_needed(self, in_use: set[date]) -> None:
        total = sum(self._rows.values())
        if total <= self.budget_rows:
            return
        for day in sorted(self._keys, key=lambda d: self._last_used.get(d, 0)):
            if total <= self.budget_rows // 2:
                break
            if day in in_use:
                continue
            # Arrow IPC: hashes do not compress, and it is written and read back at disk speed
            path = self.spill_dir / f"{day.isoformat()}-{len(self._spilled.get(day, []))}.arrow"
            pl.concat(self._keys.pop(day)).write_ipc(path)
            self._spilled.setdefault(day, []).append(path)
            total -= self._rows.pop(day)


_MIX = 0x9E3779B97F4A7C15  # an odd constant that spreads timestamps over 64 bits


def _hints(keys: pl.DataFrame) -> pl.Series:
    """One 64-bit mix of each exact key (_ts, _h): cheap to compare, but only a hint."""
    timestamps = keys["_ts"].to_numpy().view(np.uint64)
    return pl.Series("_hint", keys["_h"].to_numpy() ^ (timestamps * np.uint64(_MIX)))


def _distinct_dates(dates: pl.Series) -> list[date]:
    if dates.is_sorted():  # a time-ordered log: the runs of one date, without hashing
        return dates.rle().struct.field("value").to_list()
    return dates.unique().to_list()


def _repeats(keys: pl.DataFrame, hints: pl.Series) -> np.ndarray | None:
    """True for each row whose exact (_ts, _h) key occurred earlier in the batch; None when
    no key repeats.

    Counting the hints into buckets (numpy's bincount, far cheaper than a hash table or a
    sort over the batch) finds the rows that may repeat: those sharing a bucket. Among
    them, those whose hint repeats are compared exactly, so a bucket or hint collision
    never drops an event.
    """
    bucket = buckets(hints, per_row=4)  # about 1 row in 5 shares a bucket by chance
    shared = np.flatnonzero((np.bincount(bucket) > 1)[bucket])  # gathers bytes, not counts
    if not len(shared):
        return None
    where = pl.Series(shared, dtype=pl.UInt32)
    where = where.filter(hints.gather(where).is_duplicated())
    if where.is_empty():
        return None
    candidates = keys.select("_ts", "_h")[where]
    later = ~candidates.select(pl.struct("_ts", "_h").is_first_distinct()).to_series()
    if not later.any():
        return None
    mask = np.zeros(keys.height, dtype=bool)
    mask[where.filter(later).to_numpy()] = True
    return mask


def _seen_before(
    keys: pl.DataFrame, hints: pl.Series, known: pl.DataFrame, rows: pl.Series | None = None
) -> np.ndarray:
    """True for each row whose exact key is in `known` (keys of earlier rows and stored
    events of the same dates); only `rows` (indices) are looked at when given.

    The smaller side's hints are the hash set and the other side probes it (so a large
    `known`, as an out-of-order log builds up, costs a scan rather than a hash table per
    batch); the few matches are then confirmed exactly.
    """
    mask = np.zeros(keys.height, dtype=bool)
    probe = hints if rows is None else hints.gather(rows)
    known_hints = _hints(known)
    if len(known_hints) < len(probe):
        where = probe.is_in(known_hints.implode()).arg_true()
    else:
        matched = known_hints.filter(known_hints.is_in(probe.implode()))
        if matched.is_empty():
            return mask
        where = probe.is_in(matched.implode()).arg_true()
    if rows is not None:
        where = rows.gather(where)
    if where.is_empty():
        return mask
    candidates = keys.select("_ts", "_h")[where].with_columns(where.alias("_row"))
    found = known.join(candidates.select("_ts", "_h"), on=["_ts", "_h"], how="semi")
    hits = candidates.join(found.unique(), on=["_ts", "_h"], how="semi")["_row"]
    mask[hits.to_numpy()] = True
    return mask


def split_by_date(frame: pl.DataFrame) -> dict[tuple[date], pl.DataFrame]:
    """{(event_date,): rows} in row order; time-ordered logs are cut into zero-copy slices."""
    dates = frame["event_date"]
    if not dates.is_sorted():
        return frame.partition_by("event_date", as_dict=True, maintain_order=True)
    parts, offset = {}, 0
    for run in dates.rle().to_list():
        parts[(run["value"],)] = frame.slice(offset, run["len"])
        offset += run["len"]
    return parts
