"""Vocabulary: external string ids <-> contiguous integer indexes, both ways."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl


class Vocabulary:
    """An ordered set of external ids; index `i` is the `i`-th id.

    Args:
        ids: Distinct external ids, in index order.

    Raises:
        ValueError: An id repeats or is null.
    """

    def __init__(self, ids: Iterable[str] | pl.Series):
        series = pl.Series("id", ids, dtype=pl.String) if not isinstance(ids, pl.Series) else ids
        series = series.cast(pl.String).rename("id")
        if series.null_count():
            raise ValueError("vocabulary ids must not be null")
        if series.n_unique() != len(series):
            raise ValueError("vocabulary ids must be distinct")
        self._ids = series
        self._index = pl.Series("index", np.arange(len(series), dtype=np.int64))

    @classmethod
    def from_values(cls, values: pl.Series | Sequence[str]) -> Vocabulary:
        """Build a sorted vocabulary from values that may repeat."""
        series = pl.Series("id", values, dtype=pl.String)
        return cls(series.drop_nulls().unique().sort())

    def __len__(self) -> int:
        return len(self._ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._ids.equals(other._ids)

    def __hash__(self) -> int:  # pragma: no cover - vocabularies are not dict keys
        return hash(tuple(self._ids.head(16).to_list()))

    @property
    def ids(self) -> pl.Series:
        return self._ids

    def index(self, ids: pl.Series | Sequence[str], *, missing: int = -1) -> np.ndarray:
        """Indexes of `ids`; ids outside the vocabulary get `missing`."""
        series = pl.Series("id", ids, dtype=pl.String)
        return (
            series.replace_strict(self._ids, self._index, default=missing, return_dtype=pl.Int64)
            .fill_null(missing)
            .to_numpy()
        )

    def lookup(self, indexes: np.ndarray | Sequence[int]) -> pl.Series:
        """External ids of `indexes`; negative indexes give null."""
        idx = pl.Series("index", np.asarray(indexes, dtype=np.int64))
        return self._ids.gather(idx.set(idx < 0, None)) if len(idx) else self._ids.clear()

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame({"index": self._index, "id": self._ids})

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> Vocabulary:
        return cls(frame.sort("index")["id"])
