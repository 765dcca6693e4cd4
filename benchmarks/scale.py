"""The default nightly at real scale: generated logs in ML-25M's shape, one size after another.

For each size (events), a log with about 6.5 users and 2.5 items per 1,000 events (ML-25M:
25M events, 162k users, 62k items), power-law item popularity and heavy-tailed user activity
is generated, then `recsys nightly` runs with its defaults into a fresh data directory. Item
texts are short (a title, a category and up to 12 words), like ML-25M's titles, genres and
tags; long-text encoding speed is measured by `benchmarks/encode.py`.

Prints one JSON line: per size and stage (ingest, encode, train, recommend) the wall seconds
and peak RSS (each stage's own peak, from the nightly's summary), the item-item model the
night trained (`item_item_model`: dense `ease`, or the sparse model standing in for it past
the memory budget) and the blend's NDCG@10 (`blend_ndcg@10` on the nightly's held-out part,
`blend_tuning_ndcg@10` on the part it tuned its weights on); `growth_exponent`, the slope of
log(total seconds without encode) on log(events) over the sizes run; `step_exponents`, that
exponent for each step between adjacent sizes, in all and per stage, with the item-item models
on both sides (`max_step_exponent`, the largest); `peak_rss_gb`, the largest stage peak; and
`completed` (1 when every size published k recommendations for every user). Goals on a
2-core, 24 GB machine: every size completes, every step's exponent <= 1.15, peak RSS <= 12 GB
at 25M, the 25M nightly without encode under 15 minutes.

    python benchmarks/scale.py                         # 1M, 5M and 25M events (over an hour)
    python benchmarks/scale.py --sizes 1000000         # one size, a few minutes
    python benchmarks/scale.py --sizes 20000 --k 5 --models popularity,ease   # about a minute
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recsys_core.storage import Lake

ROOT = Path(__file__).resolve().parents[1]
USERS_PER_EVENT = 6.5e-3  # ML-25M: 162,541 users for 25,000,095 ratings
ITEMS_PER_EVENT = 2.5e-3  # ML-25M: 62,423 movies
STAGES = ("ingest", "encode", "train", "recommend")
# the tiny size the tests run (tests/test_benchmarks.py)
TINY_ARGS = ["--sizes", "20000,40000", "--k", "5", "--models", "popularity,ease"]


def run_size(events: int, work: Path, k: int, models: str | None = None) -> dict:
    from recsys_core.data.synth import SynthConfig, write_synthetic

    users, items = round(events * USERS_PER_EVENT), round(events * ITEMS_PER_EVENT)
    source, data_dir = work / f"source-{events}", work / f"lake-{events}"
    shutil.rmtree(data_dir, ignore_errors=True)
    if not (source / "events.csv").exists():
        config = SynthConfig(
            users=users, items=items, events=events, clusters=20, min_words=0, max_words=12,
            days=365, seed=0,
        )  # fmt: skip
        write_synthetic(config, source)
    log(f"{events} events, {users} users, {items} items: nightly into {data_dir}")
    command = [
        *recsys_command(), "nightly", "--data-dir", str(data_dir),
        "--events", str(source / "events.csv"), "--items", str(source / "items.csv"),
        "--k", str(k), "--json", *(["--models", models] if models else []),
    ]  # fmt: skip
    start = time.perf_counter()
    with (work / f"nightly-{events}.log").open("w") as err:
        child = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=err, text=True, env=recsys_env()
        )
        out, _ = child.communicate()
    wall = time.perf_counter() - start
    if child.returncode != 0:
        log(f"nightly exited {child.returncode}; see {work / f'nightly-{events}.log'}")
        return {"events": events, "users": users, "items": items, "completed": 0,
                "exit_code": child.returncode, "wall_seconds": round(wall, 1)}  # fmt: skip
    summary = json.loads(out)
    stages = {
        name: {
            "seconds": summary["stages"][name]["seconds"],
            "peak_rss_gb": round(summary["stages"][name]["peak_rss_mb"] / 1024, 2),
        }
        for name in STAGES
    }
    lake = Lake(data_dir)
    per_user = lake.scan("recommendations").group_by("user_id").len().collect()
    stored_users = lake.scan("events").select("user_id").unique().collect()
    completed = int(per_user.height == stored_users.height and bool((per_user["len"] == k).all()))
    train = summary["train"]
    blend = next((c for c in train["candidates"] if c["model"] == "blend"), None)
    result = {
        "events": events, "users": summary["ingest"]["users_total"],
        "items": summary["ingest"]["items_total"], "stages": stages,
        "seconds_without_encode": round(
            sum(s["seconds"] for n, s in stages.items() if n != "encode"), 1
        ),
        "wall_seconds": round(wall, 1), "completed": completed,
        "champion": train["champion_model"],
        "candidates": {c["model"]: round(c["metrics"]["ndcg@10"], 4) for c in train["candidates"]},
        "evaluated_users": train.get("evaluated_users"), "left_out": train.get("left_out", []),
        "item_item_model": item_item_model(train),
        # the blend's NDCG@10 on the nightly's held-out part (what the champion gate compares)
        # and on the part of its training data it tuned its weights on
        "blend_ndcg@10": round(blend["metrics"]["ndcg@10"], 4) if blend else None,
        "blend_tuning_ndcg@10": (
            round(blend["epochs"][-1]["validation_ndcg@10"], 4)
            if blend and blend.get("epochs") else None
        ),
    }  # fmt: skip
    log(json.dumps(result))
    return result


def item_item_model(train: dict) -> str | None:
    """The item-item model the night trained: dense `ease`, or what stood in for it."""
    for note in train.get("left_out", []):
        if note.startswith("ease:") and note.endswith(" stands in"):
            return note.rpartition("; ")[2].removesuffix(" stands in")
    models = {c["model"] for c in train["candidates"]}
    return "ease" if "ease" in models else None


def recsys_command() -> list[str]:
    """`recsys` of this checkout, run by this interpreter (wherever its environment lives)."""
    return [sys.executable, "-m", "flows.cli"]


def recsys_env() -> dict[str, str]:
    """The environment with this checkout first on the Python path."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def growth_exponent(results: list[dict]) -> float | None:
    """Slope of log(seconds without encode) on log(events) over the completed sizes."""
    done = [r for r in results if r.get("completed")]
    if len(done) < 2:
        return None
    x = np.log([r["events"] for r in done])
    y = np.log([r["seconds_without_encode"] for r in done])
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def step_exponents(results: list[dict]) -> list[dict]:
    """The growth exponent of each step between adjacent completed sizes, log(t2/t1) over
    log(e2/e1), of the total without encode and of each stage (None where a time is 0)."""
    done = [r for r in results if r.get("completed")]
    steps = []
    for small, large in itertools.pairwise(done):
        ratio = math.log(large["events"] / small["events"])

        def exponent(a: float, b: float, ratio: float = ratio) -> float | None:
            return round(math.log(b / a) / ratio, 3) if a > 0 and b > 0 else None

        steps.append({
            "from_events": small["events"], "to_events": large["events"],
            "item_item_models": [small["item_item_model"], large["item_item_model"]],
            "exponent": exponent(small["seconds_without_encode"], large["seconds_without_encode"]),
            "stages": {
                name: exponent(small["stages"][name]["seconds"], large["stages"][name]["seconds"])
                for name in STAGES
            },
        })  # fmt: skip
    return steps


def log(line: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="1000000,5000000,25000000", help="comma-separated event counts"
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="keep sources and lakes here")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--models", default=None, help="candidates (default: the nightly's)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="recsys-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results = [run_size(events, work, args.k, args.models) for events in sizes]
    peaks = [s["peak_rss_gb"] for r in results for s in r.get("stages", {}).values()]
    largest = max(results, key=lambda r: r["events"])
    figures = {
        "benchmark": "scale",
        "sizes": results,
        "growth_exponent": growth_exponent(results),
        "step_exponents": step_exponents(results),
        "max_step_exponent": max(
            (s["exponent"] for s in step_exponents(results) if s["exponent"] is not None),
            default=None,
        ),
        "peak_rss_gb": max(peaks) if peaks else None,
        "completed": int(all(r["completed"] for r in results)),
        "largest_events": largest["events"],
        "largest_minutes_without_encode": (
            round(largest["seconds_without_encode"] / 60, 1) if largest.get("completed") else None
        ),
        "cpus": os.cpu_count(),
    }
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))
    if not math.isfinite(figures["peak_rss_gb"] or 0.0):
        sys.exit(1)


if __name__ == "__main__":
    main()
