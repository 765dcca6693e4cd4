"""Event keys: the 64-bit hashes that dedupe and the findings share.

A key is the exact timestamp (microseconds) plus a hash of (user, item, event type); a hash
of the user rides along to count events per user and day, and a hash of the item to find
events whose item is not in the catalog.
"""

from __future__ import annotations

import numpy as np
import polars as pl

SEED = 0x5EED


def key_columns(prefix: str = "") -> list[list[pl.Expr]]:
    """Two steps of columns from the columns named with `prefix` (ingestion computes them
    while reading, from the parsed `_` columns): `_u` (user) and `_i` (item), then `_h`
    (user, item, event type) from those two, so each id is hashed once."""
    return [
        [
            user_hash(pl.col(f"{prefix}user_id")).alias("_u"),
            item_hash(pl.col(f"{prefix}item_id")).alias("_i"),
        ],
        [pl.struct("_u", "_i", pl.col(f"{prefix}event_type")).hash(SEED).alias("_h")],
    ]


def user_hash(user_id: pl.Expr) -> pl.Expr:
    return user_id.hash(SEED)


def item_hash(item_id: pl.Expr) -> pl.Expr:
    return item_id.hash(SEED)


def buckets(hashes: pl.Series, per_row: int) -> np.ndarray:
    """Bucket numbers from the low bits of 64-bit hashes, about `per_row` buckets per hash
    (a power of two; at most 2^24, so a bincount stays within 128 MB)."""
    bits = max(10, min(24, (len(hashes) * per_row).bit_length()))
    return (hashes.to_numpy() & np.uint64((1 << bits) - 1)).astype(np.intp)
