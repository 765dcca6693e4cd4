"""Building every user's history from an event log: what the recommend stage does after it
reads the events, and what a night does once per data part.

`recsys synth`'s log (the scale benchmark's shape: power-law users and items, repeated
items, string ids) is turned into each user's distinct items, oldest first, in four ways,
timed in the same process:

- `recommend`: `recsys_core.pipeline.recommend._histories_of`, the recommend stage's call
  (`HistoryTable.of_events`: ids mapped to the model's indexes, unknown items dropped);
- `table_in_order` / `table_shuffled`: `HistoryTable.from_events` on the index columns, with
  the events in time order (as a night's `Interactions` keeps them) and shuffled (a lake's
  files in any order);
- `baseline`: a polars group-by of (user, item) keeping the latest time, then a sort of the
  whole table by (user, time, item): how the histories were built before `HistoryTable`;
- `recommend_baseline`: the recommend stage's call before `HistoryTable`: the events through
  `Interactions.from_events` (its frame sorted by time), then `baseline` on that frame.

Each result is checked against the baseline's, item for item. Prints one JSON line: the
seconds of each (best of `--repeats`), `table_speedup` (baseline over each table) and
`recommend_speedup` (recommend_baseline over recommend).

    python benchmarks/histories.py                       # 25M events, 162,500 users
    python benchmarks/histories.py --events 1000000 --users 6500 --items 2500
"""

from __future__ import annotations

import argparse
import json
import time
import types

import numpy as np
import polars as pl

from recsys_core.data.interactions import HistoryTable, Interactions, epoch_seconds
from recsys_core.data.synth import iter_event_chunks
from recsys_core.data.synth_config import SynthConfig
from recsys_core.data.vocab import Vocabulary
from recsys_core.pipeline.recommend import _histories_of

TINY_ARGS = ["--events", "20000", "--users", "300", "--items", "200", "--repeats", "1"]


def generated_events(n_events: int, n_users: int, n_items: int, seed: int) -> pl.DataFrame:
    """`recsys synth`'s log (the scale benchmark's shape), in time order."""
    config = SynthConfig(users=n_users, items=n_items, events=n_events, seed=seed)
    events = pl.concat(list(iter_event_chunks(config)))
    return events.with_columns(
        pl.from_epoch("timestamp", time_unit="s"), pl.col("value").cast(pl.Float32)
    )


def baseline(users: np.ndarray, items: np.ndarray, times: np.ndarray, n_users: int):
    """The histories by a polars group-by and a sort of the whole table."""
    latest = (
        pl.DataFrame({"user_index": users, "item_index": items, "timestamp": times})
        .group_by("user_index", "item_index")
        .agg(pl.col("timestamp").max())
        .sort(["user_index", "timestamp", "item_index"])
    )
    starts = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(latest["user_index"].to_numpy(), minlength=n_users), out=starts[1:])
    return starts, latest["item_index"].to_numpy(), latest["timestamp"].to_numpy()


def best_of(repeats: int, run) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=25_000_000)
    parser.add_argument("--users", type=int, default=162_500)
    parser.add_argument("--items", type=int, default=62_500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    events = generated_events(args.events, args.users, args.items, args.seed)
    users = Vocabulary.from_values(events["user_id"])
    items = Vocabulary.from_values(events["item_id"])
    # the model knows 90% of the items: the others' events are dropped
    known_items = Vocabulary(items.ids.head(len(items) * 9 // 10))
    model = types.SimpleNamespace(users=users, items=known_items)
    user_index = users.index(events["user_id"])
    item_index = known_items.index(events["item_id"])
    known = item_index >= 0
    columns = (
        user_index[known],
        item_index[known],
        epoch_seconds(events["timestamp"]).to_numpy()[known],
    )
    shuffle = np.random.default_rng(args.seed + 1).permutation(int(known.sum()))
    shuffled = tuple(column[shuffle] for column in columns)
    n_users, n_items = len(users), len(model.items)
    ids = users.ids.to_list()
    _histories_of(events.head(100), ids[:2], model)  # the compiled loop loads once

    seconds, results = {}, {}
    seconds["baseline"], expected = best_of(args.repeats, lambda: baseline(*columns, n_users))
    for name, cols in (("table_in_order", columns), ("table_shuffled", shuffled)):
        seconds[name], table = best_of(
            args.repeats, lambda cols=cols: HistoryTable.from_events(*cols, n_users, n_items)
        )
        results[name] = (table.starts, table.items, table.timestamps)
    seconds["recommend"], histories = best_of(
        args.repeats, lambda: _histories_of(events, ids, model, users=users)
    )
    results["recommend"] = (histories.indptr, histories.items, histories.timestamps)

    def recommend_baseline():
        data = Interactions.from_events(events, users=users, items=model.items)
        frame = data.frame
        return baseline(
            frame["user_index"].to_numpy(),
            frame["item_index"].to_numpy(),
            frame["timestamp"].to_numpy(),
            n_users,
        )

    seconds["recommend_baseline"], results["recommend_baseline"] = best_of(
        args.repeats, recommend_baseline
    )
    for name, got in results.items():
        if not all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True)):
            raise SystemExit(f"{name}: histories differ from the baseline's")

    print(
        json.dumps(
            {
                "benchmark": "histories",
                "events": args.events,
                "users": n_users,
                "items": n_items,
                "distinct_pairs": len(expected[1]),
                "seconds": {name: round(value, 3) for name, value in seconds.items()},
                "table_speedup": {
                    name: round(seconds["baseline"] / seconds[name], 2)
                    for name in ("table_in_order", "table_shuffled")
                },
                "recommend_speedup": round(seconds["recommend_baseline"] / seconds["recommend"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
