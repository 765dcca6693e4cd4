"""The data directory: Delta Lake tables plus the MLflow store.

Every write is one Delta commit, so a reader sees either the previous version of a table or
the new one, never a half-written table. Commit metadata records which run wrote what.

Publishing a large table happens in two steps: data files are written into the table's folder
first (`write_file`, by one or many workers; readers do not see files the log does not list),
then one commit adds them all and removes the previous version's files (`commit_files`).
Replaced versions stay readable and restorable (`rollback`) until `vacuum` deletes files
that were replaced longer ago than the retention period.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.transaction import AddAction, create_table_with_add_actions

from recsys_core import schemas
from recsys_core.errors import InputError
from recsys_core.storage.delta import open_table, scan_table
from recsys_core.storage.live import LiveTable
from recsys_core.storage.paths import check_data_dir, local_path
from recsys_core.storage.staging import STAGING, Staging

WriteMode = Literal["append", "overwrite"]

# Rows per Parquet row group when publishing: small enough that reading one row group for a
# single-key lookup is quick, large enough that the file footer stays small.
ROW_GROUP_ROWS = 8_192
LOG_RETENTION = "delta.logRetentionDuration"


@dataclass(frozen=True)
class DataFile:
    """A Parquet file inside a table's folder, written but not yet committed.

    Attributes:
        path: Path relative to the table folder.
        size: Bytes on disk.
        rows: Number of rows.
        row_groups: Number of Parquet row groups.
        stats: Delta statistics JSON (row count, per-column min/max/null count), which readers
            use to skip files.
        modification_time: Milliseconds since the epoch.
    """

    path: str
    size: int
    rows: int
    row_groups: int
    stats: str
    modification_time: int


@dataclass(frozen=True)
class Lake:
    """Paths and table access for one data directory.

    Args:
        root: The data directory (default `./lake`).
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())
        check_data_dir(self.root)

    # -- locations -----------------------------------------------------------------------
    def path(self, table: str) -> Path:
        if table not in schemas.TABLES:
            raise KeyError(f"unknown table {table!r}")
        return self.root / table

    def staging(self, stage: str) -> Staging:
        """Where the sharded stage `stage` stages files before its commit (one folder per
        plan, with its owner; see `storage.staging`)."""
        return Staging(self.root / STAGING / stage)

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.mlflow_dir / "artifacts"

    # -- reads ---------------------------------------------------------------------------
    def exists(self, table: str) -> bool:
        return (self.path(table) / "_delta_log").is_dir()

    def version(self, table: str) -> int | None:
        """Current Delta version of `table`, or None when it does not exist yet."""
        if not self.exists(table):
            return None
        return DeltaTable(str(self.path(table))).version()

    def live(self, table: str) -> LiveTable:
        """`table` held open for repeated reads, each of the newest version (a service's reads).

        Raises:
            InputError: The table does not exist yet.
        """
        self._require(table)
        return LiveTable(str(self.path(table)))

    def scan(self, table: str, version: int | None = None) -> pl.LazyFrame:
        """A lazy scan of a table (optionally an older version).

        Reads through `storage.delta`, so a data directory whose path holds a space, `#`, `%`
        or non-ASCII letters reads like any other (`pl.scan_delta` on the path does not).
        """
        self._require(table)
        return scan_table(open_table(self.path(table), version))

    def read(
        self, table: str, columns: Sequence[str] | None = None, version: int | None = None
    ) -> pl.DataFrame:
        """Read a table (optionally some columns, optionally an older version)."""
        frame = self.scan(table, version=version)
        if columns is not None:
            return frame.select(columns).collect()
        return schemas.check(frame.collect(), schemas.TABLES[table], table=table)

    def read_or_empty(self, table: str, columns: Sequence[str] | None = None) -> pl.DataFrame:
        if self.exists(table):
            return self.read(table, columns)
        empty = pl.DataFrame(schema=schemas.TABLES[table])
        return empty.select(columns) if columns is not None else empty

    def history(self, table: str) -> list[dict]:
        self._require(table)
        return DeltaTable(str(self.path(table))).history()

    def rows_per_partition(self, table: str, column: str) -> dict:
        """Rows per value of the partition column `column`, from the Delta log's file
        statistics (no data is read; a file without statistics makes the table be counted).
        """
        self._require(table)
        delta = DeltaTable(str(self.path(table)))
        actions = pl.DataFrame(delta.get_add_actions(flatten=True))
        if actions.is_empty():
            return {}
        if actions["num_records"].null_count():  # a file without statistics: count its rows
            counted = self.scan(table).group_by(column).len().collect()
            return dict(counted.iter_rows())
        per_value = actions.group_by(f"partition.{column}").agg(pl.col("num_records").sum())
        return {value: int(rows) for value, rows in per_value.iter_rows()}

    # -- writes --------------------------------------------------------------------------
    def write(
        self,
        table: str,
        df: pl.DataFrame,
        *,
        mode: WriteMode,
        metadata: Mapping[str, object] | None = None,
        partition_by: Sequence[str] | None = None,
    ) -> int:
        """Write `df` to `table` as one Delta commit and return the new version.

        Args:
            table: Table name (see `schemas.TABLES`).
            df: Rows to write; conformed to the table's declared schema first.
            mode: `append` adds rows; `overwrite` replaces the table in one commit.
            metadata: Stored in the commit (run id, row counts...); values become strings.
            partition_by: Partition columns, used when the table is created.
        """
        df = schemas.conform(df, schemas.TABLES[table], table=table)
        self.root.mkdir(parents=True, exist_ok=True)
        options: dict[str, object] = {"commit_properties": _commit(metadata)}
        if partition_by:
            options["partition_by"] = list(partition_by)
        df.write_delta(
            str(self.path(table)),
            mode=mode,
            delta_write_options=options,
        )
        return DeltaTable(str(self.path(table))).version()

    def upsert(
        self,
        table: str,
        df: pl.DataFrame,
        *,
        keys: Sequence[str],
        metadata: Mapping[str, object] | None = None,
    ) -> int:
        """Merge `df` into `table` on `keys` in one commit: matched rows are replaced,
        new rows inserted. Creates the table when it does not exist. Returns the version."""
        df = schemas.conform(df, schemas.TABLES[table], table=table)
        if not self.exists(table):
            return self.write(table, df, mode="overwrite", metadata=metadata)
        predicate = " AND ".join(f"t.{key} = s.{key}" for key in keys)
        (
            df.write_delta(
                str(self.path(table)),
                mode="merge",
                delta_merge_options={
                    "predicate": predicate,
                    "source_alias": "s",
                    "target_alias": "t",
                    "commit_properties": _commit(metadata),
                },
            )
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
        return DeltaTable(str(self.path(table))).version()

    # -- publish: files first, then one commit ---------------------------------------------
    def write_file(
        self,
        table: str,
        df: pl.DataFrame,
        *,
        name: str = "part",
        group_by: str | None = None,
        group_rows: int = ROW_GROUP_ROWS,
    ) -> DataFile:
        """Write `df` as one Parquet file inside `table`'s folder, not yet part of the table.

        Readers do not see the file until `commit_files` lists it. Rows keep their order.

        Args:
            table: Table name (see `schemas.TABLES`).
            df: Rows; conformed to the table's declared schema first.
            name: File name prefix (a unique suffix is added).
            group_by: A column the rows are sorted by: row groups then end only where its value
                changes, so all rows of one value sit in one row group and a lookup of one
                value reads one row group.
            group_rows: Target rows per row group.
        """
        df = schemas.conform(df, schemas.TABLES[table], table=table)
        folder = self.path(table)
        folder.mkdir(parents=True, exist_ok=True)
        relative = f"{name}-{uuid.uuid4().hex}.parquet"
        data = df.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(_arrow_schema(table))
        bounds = _row_group_bounds(df[group_by] if group_by else None, df.height, group_rows)
        with pq.ParquetWriter(folder / relative, data.schema, compression="zstd") as writer:
            for start, stop in pairwise(bounds):
                # one call per row group: pyarrow never merges rows across calls
                writer.write_table(data.slice(start, stop - start), row_group_size=stop - start)
        stat = (folder / relative).stat()
        return DataFile(
            path=relative,
            size=stat.st_size,
            rows=df.height,
            row_groups=max(len(bounds) - 1, 0),
            stats=_delta_stats(df),
            modification_time=int(stat.st_mtime * 1000),
        )

    def commit_files(
        self,
        table: str,
        files: Sequence[DataFile],
        *,
        mode: WriteMode = "overwrite",
        metadata: Mapping[str, object] | None = None,
    ) -> int:
        """Make `files` (from `write_file`) the table's content in one commit.

        With `overwrite`, every file of the previous version is removed in the same commit,
        so a reader sees the whole previous version or the whole new one. Returns the version.

        Args:
            table: Table name.
            files: Files written into this table's folder.
            mode: `overwrite` replaces the table; `append` adds the files.
            metadata: Stored in the commit (run id, row counts...); values become strings.
        """
        folder = self.path(table)
        missing = [f.path for f in files if not (folder / f.path).is_file()]
        if missing:
            raise InputError(f"table {table}: data files to commit are missing: {missing[:3]}")
        actions = [
            AddAction(
                path=f.path, size=f.size, partition_values={},
                modification_time=f.modification_time, data_change=True, stats=f.stats,
            )
            for f in files
        ]  # fmt: skip
        schema = DeltaSchema.from_arrow(_arrow_schema(table))
        commit = _commit(metadata)
        if self.exists(table):
            DeltaTable(str(folder)).create_write_transaction(
                actions, mode=mode, schema=schema, commit_properties=commit
            )
        else:
            create_table_with_add_actions(
                str(folder), schema, actions, mode="overwrite", commit_properties=commit
            )
        return DeltaTable(str(folder)).version()

    def publish(
        self,
        table: str,
        df: pl.DataFrame,
        *,
        group_by: str | None = None,
        group_rows: int = ROW_GROUP_ROWS,
        metadata: Mapping[str, object] | None = None,
        retention_days: float | None = None,
    ) -> int:
        """Replace `table` by `df` in one commit, then vacuum; returns the new version.

        Args:
            table: Table name.
            df: The new content, sorted by `group_by` when given.
            group_by: See `write_file`.
            group_rows: Target rows per row group.
            metadata: Stored in the commit.
            retention_days: Vacuum files replaced longer ago than this; None = no vacuum.
        """
        written = self.write_file(table, df, group_by=group_by, group_rows=group_rows)
        version = self.commit_files(table, [written], metadata=metadata)
        if retention_days is not None:
            self.vacuum(table, retention_days=retention_days)
        return version

    def delete_rows(self, table: str, predicate: str) -> int:
        """Delete the rows matching a SQL `predicate`, in one commit; returns how many."""
        self._require(table)
        metrics = DeltaTable(str(self.path(table))).delete(predicate)
        return int(metrics.get("num_deleted_rows", 0))

    def purge_history(self, table: str) -> int:
        """Delete every file and log entry that is not part of the current version, so no
        earlier version (nor its file statistics) can be read again; returns the number of
        data files deleted. The table's log retention is restored afterwards."""
        self._require(table)
        path = str(self.path(table))
        delta = DeltaTable(path)
        removed = delta.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
        previous = delta.metadata().configuration.get(LOG_RETENTION)
        delta.alter.set_table_properties({LOG_RETENTION: "interval 0 days"})
        delta = DeltaTable(path)
        delta.create_checkpoint()
        delta.cleanup_metadata()
        # restore the normal log retention, so later versions keep their history again
        delta.alter.set_table_properties({LOG_RETENTION: previous or "interval 30 days"})
        return len(removed)

    def vacuum(self, table: str, *, retention_days: float) -> list[str]:
        """Delete data files that were replaced more than `retention_days` ago.

        Versions whose files are deleted can no longer be read or restored, so the retention
        period is the rollback window. Files never committed (a failed run's) go too once
        they are older than the retention period. Returns the deleted paths.

        Args:
            table: Table name.
            retention_days: Keep files replaced less than this many days ago.
        """
        if retention_days < 0:
            raise InputError(f"retention must be >= 0 days, got {retention_days}")
        if not self.exists(table):
            return []
        hours = math.ceil(retention_days * 24)
        options = {"retention_hours": hours, "enforce_retention_duration": False}
        folder = self.path(table)
        delta = DeltaTable(str(folder))
        # a dry run first: a vacuum with nothing to delete would still add two log entries
        # (the log keeps listing files an earlier vacuum already deleted)
        expired = delta.vacuum(dry_run=True, **options)
        present = [path for path in expired if (folder / local_path(path)).exists()]
        if present:
            delta.vacuum(dry_run=False, **options)
        return present

    def logged_files(self, table: str) -> set[str]:
        """Paths (relative to the table folder) of every data file that any entry still in
        the table's log adds or removes: the files of every version that can be read or
        restored, and files replaced but not yet vacuumed."""
        log = self.path(table) / "_delta_log"
        paths: set[str] = set()
        for entry in log.glob("*.json"):
            for line in entry.read_text(encoding="utf-8").splitlines():
                action = json.loads(line) if line.strip() else {}
                for kind in ("add", "remove"):
                    if isinstance(action.get(kind), dict):
                        paths.add(local_path(action[kind]["path"]))
        for checkpoint in log.glob("*.checkpoint*.parquet"):
            names = pq.read_schema(checkpoint).names
            kinds = [kind for kind in ("add", "remove") if kind in names]
            actions = pq.read_table(checkpoint, columns=kinds)
            for kind in kinds:
                column = actions.column(kind).combine_chunks()
                column = column.filter(column.is_valid())  # rows of other kinds of action
                paths.update(local_path(p) for p in column.field("path").to_pylist() if p)
        return paths

    def remove_unlogged(
        self, table: str, pattern: str, *, keep: Callable[[Path], bool]
    ) -> list[Path]:
        """Delete the files of `table`'s folder matching `pattern` that no log entry names
        (written by `write_file` but never committed) and that `keep` does not keep.

        Args:
            table: Table name.
            pattern: Glob of the file names to consider, e.g. `run-*-shard-*.parquet`.
            keep: Says which files are still wanted (a live run's files, not yet committed).

        Returns:
            The deleted files.
        """
        if not self.exists(table):
            return []
        folder = self.path(table)
        # listed before the log is read: a file committed meanwhile is in the log by then
        candidates = sorted(folder.glob(pattern))
        logged = self.logged_files(table)
        removed = []
        for file in candidates:
            if file.relative_to(folder).as_posix() in logged or keep(file):
                continue
            file.unlink(missing_ok=True)
            removed.append(file)
        return removed

    def rollback(
        self, table: str, version: int, *, metadata: Mapping[str, object] | None = None
    ) -> int:
        """Make an earlier version the current content again, in one new commit.

        Args:
            table: Table name.
            version: The version to restore (see `history`).
            metadata: Stored in the commit.

        Returns:
            The new version number (the restore is a commit of its own).

        Raises:
            InputError: No such version, or its files were vacuumed.
        """
        self._require(table)
        folder = str(self.path(table))
        current = DeltaTable(folder).version()
        if not 0 <= version <= current:
            raise InputError(f"table {table} has versions 0 to {current}; {version} is not one")
        if version == current:
            return current
        try:
            target = DeltaTable(folder, version=version)
        except Exception as exc:  # its log entry was cleaned up
            raise InputError(f"table {table}: version {version} cannot be loaded: {exc}") from None
        gone = [uri for uri in target.file_uris() if not Path(local_path(uri)).exists()]
        if gone:
            raise InputError(
                f"table {table}: version {version} was vacuumed ({len(gone)} of its data files "
                "are deleted); versions stay restorable for the retention period after they "
                "are replaced"
            )
        info = {"stage": "rollback", "restored_version": version, **(metadata or {})}
        DeltaTable(folder).restore(version, commit_properties=_commit(info))
        return DeltaTable(folder).version()

    def _require(self, table: str) -> None:
        if not self.exists(table):
            raise InputError(
                f"table {table} not found under {self.root} (run `recsys nightly` first)"
            )


def _commit(metadata: Mapping[str, object] | None) -> CommitProperties:
    return CommitProperties(custom_metadata={k: str(v) for k, v in (metadata or {}).items()})


def _arrow_schema(table: str) -> pa.Schema:
    """The declared schema as Arrow types that every Parquet and Delta reader handles.

    Plain `large_string`, not polars' `string_view`: pyarrow datasets and DuckDB filter on
    it without trouble.
    """
    empty = pl.DataFrame(schema=schemas.TABLES[table])
    return empty.to_arrow(compat_level=pl.CompatLevel.oldest()).schema


def _row_group_bounds(keys: pl.Series | None, rows: int, target: int) -> list[int]:
    """Row offsets [0, ..., rows] cutting about `target` rows per group, only where `keys`
    changes value (so one key's rows never straddle two groups)."""
    if rows == 0:
        return [0]
    if keys is None:
        return [*range(0, rows, target), rows]
    starts = (keys != keys.shift(1)).fill_null(True).arg_true().to_numpy()  # each key's first row
    bounds = [0]
    while True:
        i = int(np.searchsorted(starts, bounds[-1] + target))
        if i >= len(starts):
            break
        bounds.append(int(starts[i]))
    return [*bounds, rows]


def _delta_stats(df: pl.DataFrame) -> str:
    """Delta `add` statistics: row count, and min/max/null count per string or number column.

    Other columns (timestamps, lists) get null counts only: statistics are optional per
    column, and a wrong bound would make readers skip rows they need.
    """
    low, high, nulls = {}, {}, {}
    for name, dtype in df.schema.items():
        column = df[name]
        nulls[name] = column.null_count()
        if column.null_count() == df.height:
            continue
        if dtype == pl.String or (dtype.is_numeric() and not column.is_nan().any()):
            low[name], high[name] = column.min(), column.max()
    return json.dumps(
        {"numRecords": df.height, "minValues": low, "maxValues": high, "nullCount": nulls}
    )
