"""Quarantine rows of a run: appended in one commit, never doubled by a repeated run."""

from __future__ import annotations

import polars as pl

from recsys_core import schemas
from recsys_core.storage import Lake
from recsys_core.storage.append import DeltaAppender

QUARANTINE_KEY = ["source_file", "row_number", "raw"]


def stored_quarantine(lake: Lake, labels: list[str]) -> pl.DataFrame:
    """Quarantine keys already stored for these files (from a run that died before its
    manifest was written: the files are read again, their bad rows must not be doubled)."""
    empty = pl.DataFrame(schema={k: schemas.QUARANTINE[k] for k in QUARANTINE_KEY})
    if not labels or not lake.exists("quarantine"):
        return empty
    return (
        lake.scan("quarantine")
        .filter(pl.col("source_file").is_in(labels))
        .select(QUARANTINE_KEY)
        .unique()
        .collect()
    )


class NewQuarantine:
    """A quarantine appender that skips rows already stored by an earlier, interrupted run."""

    def __init__(self, appender: DeltaAppender, stored: pl.DataFrame):
        self.appender = appender
        self.stored = stored

    @property
    def rows_added(self) -> int:
        return self.appender.rows_added

    def add(self, frame: pl.DataFrame) -> None:
        if self.stored.height:
            frame = frame.join(self.stored, on=QUARANTINE_KEY, how="anti", nulls_equal=True)
        if frame.height:
            self.appender.add(frame)

    def commit(self, metadata: dict) -> int | None:
        return self.appender.commit(metadata)

    def abort(self) -> None:
        self.appender.abort()
