"""Append a stream of frames to a Delta table as one commit, with bounded memory.

`Lake.write` takes one frame; ingestion produces tens of millions of rows in batches. Here
rows are buffered per partition, written as Parquet files into the table folder whenever the
buffer passes `flush_rows`, and committed together at the end through deltalake's
transaction API. Until `commit()` the files are invisible to readers (Delta lists only
committed files), so a run that fails midway leaves the table as it was; its stray files
are removed by `abort()` or a later `vacuum`.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Schema
from deltalake.transaction import AddAction, create_table_with_add_actions

from recsys_core import schemas

# numeric and temporal columns get min/max statistics, so readers can skip files by time
_STATS_DTYPES = (pl.Datetime, pl.Date, pl.Float64, pl.Int64, pl.Int32)


class DeltaAppender:
    """Collect rows for one table and commit them in a single Delta transaction.

    Args:
        path: The table folder (created with the first commit when missing).
        table: Table name in `schemas.TABLES`; rows are conformed to its schema.
        partition_by: Partition columns (must be columns of the schema).
        flush_rows: Buffered rows that trigger writing files.
        dictionary: Columns with few distinct values (a file name, a code, a run's time):
            dictionary-encoded, which is smaller and cheaper to write than plain text.
        no_statistics: Columns without Parquet min/max statistics: text whose bounds never
            let a reader skip a file (ids spread over their whole range, the same few codes
            in every file), and computing them is a good part of the cost of writing. The
            Delta log's statistics (numeric and time columns) are not affected.
    """

    def __init__(
        self,
        path: Path,
        table: str,
        *,
        partition_by: Sequence[str] = (),
        flush_rows: int = 2_000_000,
        dictionary: Sequence[str] = (),
        no_statistics: Sequence[str] = (),
    ) -> None:
        self.path = Path(path)
        self.table = table
        self.schema = schemas.TABLES[table]
        self.partition_by = list(partition_by)
        self.flush_rows = flush_rows
        self.dictionary = [c for c in dictionary if c in self.schema]
        self.statistics = [
            c for c in self.schema if c not in no_statistics and c not in self.partition_by
        ]
        self.rows_added = 0
        self.rows_per_partition: dict[tuple, int] = {}
        self._buffers: dict[tuple, list[pl.DataFrame]] = {}
        self._buffered = 0
        self._actions: list[AddAction] = []
        self._written: list[Path] = []
        # files are written on background threads (pyarrow releases the GIL), so encoding
        # one flush overlaps with reading and checking the next rows; a flush's files are
        # written two at a time, so the next flush rarely waits for this one
        self._writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"{table}-writer")
        self._pending: list[Future] = []

    def add(self, frame: pl.DataFrame) -> None:
        """Buffer `frame` (any column order; extra columns are dropped)."""
        if frame.is_empty():
            return
        if self.partition_by:
            parts = frame.partition_by(self.partition_by, as_dict=True, maintain_order=True)
        else:
            parts = {(): frame}
        self.add_parts(parts)

    def add_parts(self, parts: Mapping[tuple, pl.DataFrame]) -> None:
        """Buffer frames already split by partition: {partition values: rows}."""
        for key, part in parts.items():
            if part.is_empty():
                continue
            part = schemas.conform(part, self.schema, table=self.table)
            self._buffers.setdefault(key, []).append(part)
            self.rows_per_partition[key] = self.rows_per_partition.get(key, 0) + part.height
            self._buffered += part.height
            self.rows_added += part.height
        if self._buffered >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Write every buffered partition as one Parquet file (in the background)."""
        self._wait()
        if not self._buffers:
            return
        parts = [(key, pl.concat(frames, rechunk=False)) for key, frames in self._buffers.items()]
        self._buffers = {}
        self._buffered = 0
        self._pending = [self._writer.submit(self._write_file, key, frame) for key, frame in parts]

    def _wait(self) -> None:
        pending, self._pending = self._pending, []
        wait(pending)  # every file settled, so a failure leaves nothing being written
        for future in pending:
            future.result()  # re-raises a failed write here

    def commit(self, metadata: Mapping[str, object] | None = None) -> int | None:
        """Commit everything added so far as one Delta version; None when nothing was added.

        Args:
            metadata: Stored in the commit (run id, row counts...); values become strings.
        """
        self.flush()
        self._wait()
        self._writer.shutdown()
        if not self._actions:
            return None
        properties = CommitProperties(
            custom_metadata={k: str(v) for k, v in (metadata or {}).items()}
        )
        delta_schema = Schema.from_arrow(pl.DataFrame(schema=self.schema).to_arrow().schema)
        if (self.path / "_delta_log").is_dir():
            DeltaTable(str(self.path)).create_write_transaction(
                self._actions,
                "append",
                delta_schema,
                partition_by=self.partition_by or None,
                commit_properties=properties,
            )
        else:
            create_table_with_add_actions(
                str(self.path),
                delta_schema,
                self._actions,
                mode="append",
                partition_by=self.partition_by or None,
                commit_properties=properties,
            )
        self._actions = []
        self._written = []
        return DeltaTable(str(self.path)).version()

    def abort(self) -> None:
        """Delete the files written by this appender and not committed."""
        with contextlib.suppress(Exception):  # the run is failing already: clean up
            self._wait()
        self._writer.shutdown()
        for path in self._written:
            path.unlink(missing_ok=True)
        self._written = []
        self._actions = []
        self._buffers.clear()
        self._buffered = 0

    def _write_file(self, key: tuple, frame: pl.DataFrame) -> None:
        values = dict(zip(self.partition_by, key, strict=True))
        folder = "/".join(f"{name}={_partition_text(value)}" for name, value in values.items())
        relative = f"{folder}/" if folder else ""
        relative += f"part-{uuid.uuid4().hex}.snappy.parquet"
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        data = frame[[c for c in frame.columns if c not in self.partition_by]]
        # snappy: Delta's default codec, and among the fastest to write; plain Arrow strings
        # (not polars' string views), as `Lake.write_file` writes them
        pq.write_table(
            data.to_arrow(compat_level=pl.CompatLevel.oldest()),
            target,
            compression="snappy",
            use_dictionary=self.dictionary,
            write_statistics=self.statistics,
        )
        self._written.append(target)
        self._actions.append(
            AddAction(
                path=relative,
                size=target.stat().st_size,
                partition_values={k: _partition_text(v) for k, v in values.items()},
                modification_time=int(time.time() * 1000),
                data_change=True,
                stats=_stats(data),
            )
        )


def _partition_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def _stats(frame: pl.DataFrame) -> str:
    """Delta file statistics: row count, and min/max/null counts of numeric and time columns."""
    columns = [c for c, dtype in frame.schema.items() if isinstance(dtype, _STATS_DTYPES)]
    stats: dict[str, object] = {"numRecords": frame.height}
    if columns:
        stats["minValues"] = {c: _json_value(frame[c].min()) for c in columns}
        stats["maxValues"] = {c: _json_value(frame[c].max(), upper=True) for c in columns}
        stats["nullCount"] = {c: frame[c].null_count() for c in frame.columns}
    return json.dumps(stats)


def _json_value(value: object, *, upper: bool = False) -> object:
    if isinstance(value, datetime):
        # Delta's statistics hold milliseconds: round a maximum up, so no reader skips a
        # file whose last microseconds it wants
        if upper and value.microsecond % 1000:
            value += timedelta(microseconds=1000 - value.microsecond % 1000)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    return value
