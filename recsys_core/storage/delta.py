"""Delta tables opened so that every reader finds their files on any local path.

deltalake lists a table's data files as percent-encoded URIs (`/tmp/my%20lake/...`), and
polars opens those strings as they are, so `pl.scan_delta` and `pl.read_delta` fail on a
data directory whose path holds a space, `#`, `%` or a non-ASCII letter. `open_table` gives
a `DeltaTable` whose file list is decoded to the paths on disk; `scan_table` hands it to
polars' own Delta scan, which keeps everything that scan does (file skipping by the log's
statistics, partition columns, reading one version).

deltalake itself decodes a table path's `%XX` escapes on reads but not on writes, so a path
holding one cannot be used at all: `paths.check_data_dir` refuses it.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from recsys_core.storage.paths import local_path


class LocalDeltaTable(DeltaTable):
    """A `DeltaTable` on the local disk whose file URIs are the files' real paths."""

    def file_uris(self, *args, **kwargs) -> list[str]:
        """The data files of the version held, as local paths (see `DeltaTable.file_uris`)."""
        return [local_path(uri) for uri in super().file_uris(*args, **kwargs)]


def open_table(folder: str | Path, version: int | None = None) -> LocalDeltaTable:
    """The Delta table in `folder` (at `version`, default the newest).

    Args:
        folder: The table's folder on the local disk.
        version: A version to read instead of the newest.
    """
    return LocalDeltaTable(str(folder), version=version)


def scan_table(table: LocalDeltaTable) -> pl.LazyFrame:
    """A lazy polars scan of the version `table` holds, wherever the table lies.

    Args:
        table: From `open_table`.
    """
    return pl.scan_delta(table)
