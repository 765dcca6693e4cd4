"""The data directory: Delta Lake tables plus the MLflow store.

Every write is one Delta commit, so a reader sees either the previous version of a table or
the new one, never a half-written table. Commit metadata records which run wrote what.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl
from deltalake import CommitProperties, DeltaTable

from recsys_core import schemas
from recsys_core.errors import InputError

WriteMode = Literal["append", "overwrite"]


@dataclass(frozen=True)
class Lake:
    """Paths and table access for one data directory.

    Args:
        root: The data directory (default `./lake`).
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    # -- locations -----------------------------------------------------------------------
    def path(self, table: str) -> Path:
        if table not in schemas.TABLES:
            raise KeyError(f"unknown table {table!r}")
        return self.root / table

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    # -- reads ---------------------------------------------------------------------------
    def exists(self, table: str) -> bool:
        return (self.path(table) / "_delta_log").is_dir()

    def version(self, table: str) -> int | None:
        """Current Delta version of `table`, or None when it does not exist yet."""
        if not self.exists(table):
            return None
        return DeltaTable(str(self.path(table))).version()

    def scan(self, table: str, version: int | None = None) -> pl.LazyFrame:
        self._require(table)
        return pl.scan_delta(str(self.path(table)), version=version)

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

    def _require(self, table: str) -> None:
        if not self.exists(table):
            raise InputError(
                f"table {table} not found under {self.root} (run `recsys nightly` first)"
            )


def _commit(metadata: Mapping[str, object] | None) -> CommitProperties:
    return CommitProperties(custom_metadata={k: str(v) for k, v in (metadata or {}).items()})
