"""A table kept open for repeated reads, as a service that reads it many times wants it."""

from __future__ import annotations

import polars as pl

from recsys_core.storage.delta import open_table, scan_table


class LiveTable:
    """One Delta table held open: `latest` moves it to the newest committed version (an
    incremental read of the transaction log, well under a millisecond), and `scan` reads the
    version it is at, so a read sees exactly one version and a new commit shows up at once.

    Not thread-safe: the owner serializes its reads. Build one with `Lake.live`.

    Args:
        folder: The table's folder.
    """

    def __init__(self, folder: str):
        self._folder = folder
        self._table = open_table(folder)

    @property
    def version(self) -> int:
        """The version the handle is at."""
        return self._table.version()

    def latest(self) -> int:
        """Move to the newest committed version and return it."""
        self._table.update_incremental()
        return self._table.version()

    def scan(self) -> pl.LazyFrame:
        """The table at the version the handle is at."""
        return scan_table(self._table)

    def reopen(self) -> None:
        """Open the table afresh at its newest version (after the files of the version held
        were vacuumed, which an incremental update does not always recover from)."""
        self._table = open_table(self._folder)
