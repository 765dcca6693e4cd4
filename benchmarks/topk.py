"""Top-K for every user against a bare matrix product, and one-user lookups on a big table.

Prints one JSON line:
- ranking: users/s and achieved GFLOP/s of `recsys_core.ranking.top_k` on a factor model
  (one matrix product per chunk, seen-item exclusion, exact top-K with deterministic ties),
  and the ratio of its time to a bare `torch.matmul` over the same chunk shapes, run in the
  same process, interleaved shard by shard so both see the same machine load;
- peak RSS of the process after ranking;
- lookups: p50/p95 latency of `read_user_recommendations` (what `recsys recs` calls) on a
  published table of `--table-rows` rows, warm. The table is built once under `--table-dir`
  and reused by later runs.

    python benchmarks/topk.py                       # 200k users x 50k items x 64, 10M rows
    python benchmarks/topk.py --users 20000 --table-rows 1000000 --table-dir /tmp/small
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import torch
from deltalake import DeltaTable

from recsys_core import schemas
from recsys_core.data.interactions import UserHistories
from recsys_core.models.base import Recommender
from recsys_core.ranking import chunk_size, top_k
from recsys_core.reader import read_user_recommendations
from recsys_core.storage import Lake

# the tiny size the tests run (tests/test_benchmarks.py); {tmp} is a fresh folder
TINY_ARGS = ["--users", "3000", "--items", "800", "--dim", "16", "--table-rows", "20000",
             "--lookups", "20", "--table-dir", "{tmp}/topk"]  # fmt: skip


class StaticFactors(Recommender):
    """Given user and item vectors: the shape of any MF/ALS/embedding model at scoring time."""

    name = "static-factors"
    config_class = dict

    def __init__(self, users: torch.Tensor, items: torch.Tensor):
        super().__init__({})
        self.users, self.items = users, items  # (U, D), (I, D)

    def fit(self, data, options):
        return []

    def factors(self, histories: UserHistories) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users[torch.from_numpy(histories.user_index)], self.items

    def score(self, histories: UserHistories) -> torch.Tensor:
        users, items = self.factors(histories)
        return users @ items.T

    def state_dict(self):
        return {"users": self.users, "items": self.items}

    def load_state_dict(self, state):
        self.users, self.items = state["users"], state["items"]


def random_histories(n_users: int, n_items: int, mean_length: int, seed: int) -> UserHistories:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 2 * mean_length, size=n_users)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    items = rng.integers(0, n_items, size=int(indptr[-1]))
    return UserHistories(
        user_index=np.arange(n_users), indptr=indptr, items=items,
        timestamps=np.zeros(len(items), dtype=np.int64), n_items=n_items,
    )  # fmt: skip


def bare_matmul(users: torch.Tensor, items: torch.Tensor, step: int, out: torch.Tensor) -> None:
    """The reference: the same (step x D) @ (D x I) products, into a reused buffer."""
    for start in range(0, len(users), step):
        chunk = users[start : start + step]
        torch.matmul(chunk, items.T, out=out[: len(chunk)])


def verify(model: StaticFactors, histories: UserHistories, items: np.ndarray, k: int) -> int:
    """Check 50 users against a brute-force ranking; returns how many were checked."""
    rows = np.linspace(0, len(histories) - 1, 50).astype(int)
    for row in rows:
        scores = (model.users[row] @ model.items.T).numpy().copy()
        scores[histories.row(row)] = -np.inf
        expected = np.lexsort((np.arange(len(scores)), -scores))[:k]
        if not np.array_equal(items[row], expected):
            raise AssertionError(f"user {row}: top-k differs from brute force")
    return len(rows)


def rank(args) -> dict:
    generator = torch.Generator().manual_seed(0)
    users = torch.randn(args.users, args.dim, generator=generator)
    items = torch.randn(args.items, args.dim, generator=generator)
    model = StaticFactors(users, items)
    histories = random_histories(args.users, args.items, args.history, seed=1)
    step = chunk_size(args.items, args.memory_mb, matrices=1)  # as top_k sizes factor models
    out = torch.empty(step, args.items)
    # warm both paths (thread pools, first-touch of buffers)
    bare_matmul(users[:step], items, step, out)
    top_k(model, histories.slice(0, min(step, args.users)), args.k, memory_mb=args.memory_mb)
    ours = matmul = 0.0
    results = []
    shard = max(step, 50_000 // step * step)  # a pipeline shard's worth of users per call
    for start in range(0, args.users, shard):
        stop = min(start + shard, args.users)
        t0 = time.perf_counter()
        bare_matmul(users[start:stop], items, step, out)
        t1 = time.perf_counter()
        ranked = top_k(model, histories.slice(start, stop), args.k, memory_mb=args.memory_mb)
        t2 = time.perf_counter()
        matmul, ours = matmul + (t1 - t0), ours + (t2 - t1)
        results.append(ranked.items)
    checked = verify(model, histories, np.concatenate(results), args.k)
    flops = 2.0 * args.users * args.items * args.dim
    return {
        "users": args.users,
        "items": args.items,
        "dim": args.dim,
        "k": args.k,
        "mean_history": round(float(histories.lengths().mean()), 1),
        "threads": torch.get_num_threads(),
        "chunk_users": step,
        "rank_seconds": round(ours, 2),
        "users_per_s": round(args.users / ours),
        "gflops": round(flops / ours / 1e9, 1),
        "matmul_seconds": round(matmul, 2),
        "matmul_gflops": round(flops / matmul / 1e9, 1),
        "ratio_to_matmul": round(matmul / ours, 3),
        "verified_users": checked,
        "peak_rss_mb_ranking": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def build_table(root: Path, rows: int, k: int, n_items: int) -> float | None:
    """Publish a `rows`-row recommendations table (and a catalog) unless one is there."""
    lake = Lake(root)
    if lake.exists("recommendations"):
        actions = pa.table(DeltaTable(str(lake.path("recommendations"))).get_add_actions())
        if pa.compute.sum(actions["num_records"]).as_py() == rows:
            return None
    start = time.perf_counter()
    n_users = rows // k
    rng = np.random.default_rng(2)
    ids = pl.Series("user_id", [f"u{u}" for u in range(n_users)]).sort()
    now = datetime.now(UTC)
    files = []
    for first in range(0, n_users, 100_000):  # one shard file per 100k users, as the pipeline
        part = ids.slice(first, 100_000)
        n = len(part)
        item = pl.Series(rng.integers(0, n_items, n * k)).cast(pl.String)
        reason = pl.Series(rng.integers(0, n_items, n * k)).cast(pl.String)
        frame = pl.DataFrame(
            {
                "user_id": part.gather(np.repeat(np.arange(n), k)),
                "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
                "item_id": "i" + item,
                "score": np.sort(rng.random((n, k), dtype=np.float32), axis=1)[:, ::-1].ravel(),
                "reason_item_id": "i" + reason,
            }
        ).with_columns(model=pl.lit("bench/1"), generated_at=pl.lit(now).cast(schemas.UTC_TIME))
        files.append(lake.write_file("recommendations", frame, group_by="user_id"))
    lake.commit_files("recommendations", files, mode="overwrite", metadata={"rows": rows})
    catalog = pl.DataFrame({"item_id": [f"i{i}" for i in range(n_items)]}).with_columns(
        title=pl.lit("Title ") + pl.col("item_id"), description=pl.lit(None, pl.String),
        categories=pl.lit([], pl.List(pl.String)),
        attributes=pl.lit([], pl.List(pl.Struct({"name": pl.String, "value": pl.String}))),
        text=pl.col("item_id"), text_hash=pl.col("item_id"),
        updated_at=pl.lit(now).cast(schemas.UTC_TIME),
    )  # fmt: skip
    # columns the items schema adds later (quality flags...) stay empty: a clean catalog
    catalog = catalog.with_columns(
        pl.lit(None, dtype).alias(name)
        for name, dtype in schemas.ITEMS.items()
        if name not in catalog.columns
    )
    lake.write("items", catalog, mode="overwrite")
    return round(time.perf_counter() - start, 1)


def lookups(root: Path, rows: int, k: int, count: int) -> dict:
    n_users = rows // k
    rng = np.random.default_rng(3)
    users = [f"u{u}" for u in rng.integers(0, n_users, count)]
    read_user_recommendations(root, users[0], k=k)  # warm: table and catalog opened once
    latencies = []
    for user in users:
        start = time.perf_counter()
        found = read_user_recommendations(root, user, k=k)
        latencies.append(time.perf_counter() - start)
        if found.height != k:
            raise AssertionError(f"user {user}: {found.height} rows, expected {k}")
    ms = np.array(latencies) * 1000
    return {
        "lookups": count,
        "lookup_p50_ms": round(float(np.median(ms)), 2),
        "lookup_p95_ms": round(float(np.percentile(ms, 95)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--history", type=int, default=20, help="mean seen items per user")
    parser.add_argument("--memory-mb", type=int, default=512, help="score-matrix budget")
    parser.add_argument("--table-rows", type=int, default=10_000_000)
    parser.add_argument("--table-dir", type=Path, default=Path("/tmp/recsys-bench-topk"))
    parser.add_argument("--lookups", type=int, default=300)
    args = parser.parse_args()

    figures = {"benchmark": "topk", **rank(args)}
    built = build_table(args.table_dir, args.table_rows, args.k, args.items)
    figures.update(table_rows=args.table_rows, table_build_s=built)
    figures.update(lookups(args.table_dir, args.table_rows, args.k, args.lookups))
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
