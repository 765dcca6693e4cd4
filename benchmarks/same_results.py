"""Does a change keep the pipeline's results? The default nightly on MovieLens-100K, fingerprinted.

Runs `recsys nightly --json` (defaults, fixed seed) into a fresh data directory and prints one
JSON line: a sha256 of the published `recommendations` table (every user, rank, item and
score, sorted), the published model, and every candidate's metrics. With `--every-model`,
every registered model is also fitted with its defaults on the nightly's tables (the
user_temporal split, seed 42) and fingerprinted: a sha256 of its scores for 200 users and its
NDCG@10. Refactors must leave all of them identical:

    python benchmarks/same_results.py --save /tmp/before.json     # on the old code
    python benchmarks/same_results.py --against /tmp/before.json  # on the new code

With `--against`, `identical` is 1 when the table's hash, the published model and every
candidate's metrics equal the saved ones, else 0 with the differences listed; the exit code
is 1 when they differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from recsys_core.storage import Lake

ROOT = Path(__file__).resolve().parents[1]
# the tiny size the tests run (tests/test_benchmarks.py)
TINY_ARGS = ["--synthetic", "3000", "--models", "popularity,ease"]


def fingerprint(data_dir: Path, source: list[str], options: list[str]) -> dict:
    """Run the nightly of this checkout (by this interpreter) and fingerprint its output."""
    command = [sys.executable, "-m", "flows.cli", "nightly", "--data-dir", str(data_dir),
               "--json", *source, *options]  # fmt: skip
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    start = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"recsys nightly failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    table = (
        Lake(data_dir)
        .scan("recommendations")
        .select("user_id", "rank", "item_id", "score")
        .sort("user_id", "rank")
        .collect()
    )
    digest = hashlib.sha256()
    for column in table.columns:
        digest.update(table[column].cast(pl.String).str.join("\x1f").item().encode())
    candidates = {
        f"{c['model']} {json.dumps(c['params'], sort_keys=True)}": c["metrics"]
        for c in summary["train"]["candidates"]
    }
    return {
        "recommendations_sha256": digest.hexdigest(),
        "rows": table.height,
        "published_model": summary["publish"]["model"],
        "candidates": candidates,
        "seconds": round(time.perf_counter() - start, 1),
    }


def model_fingerprints(data_dir: Path) -> dict[str, dict]:
    """Every registered model with its defaults: a hash of its scores and its NDCG@10."""
    from recsys_core.context import RunContext
    from recsys_core.data.splits import make_split
    from recsys_core.evaluation import evaluate
    from recsys_core.models import FitOptions, TrainingData, create, registered
    from recsys_core.pipeline.encode import embedding_matrix, encoder_id
    from recsys_core.pipeline.train import load_interactions

    context = RunContext.of(data_dir)
    lake = context.lake
    data = load_interactions(lake)
    embeddings = embedding_matrix(lake, data.items, encoder_id(context))
    split = make_split(data, "user_temporal", seed=42)
    histories = split.train.histories(split.test_users[:200])
    found = {}
    for name in sorted(registered()):
        model = create(name)
        start = time.perf_counter()
        model.fit(TrainingData(split.train, embeddings), FitOptions(seed=42))
        scores = model.score(histories).numpy()
        found[name] = {
            "scores_sha256": hashlib.sha256(scores.tobytes()).hexdigest(),
            "ndcg@10": evaluate(model, split, (10,), memory_mb=512)["ndcg@10"],
            "fit_seconds": round(time.perf_counter() - start, 1),
        }
    return found


def differences(before: dict, after: dict) -> list[str]:
    found = [
        f"{key}: {before[key]!r} -> {after[key]!r}"
        for key in ("recommendations_sha256", "rows", "published_model")
        if before[key] != after[key]
    ]
    for name in sorted(set(before["candidates"]) | set(after["candidates"])):
        old, new = before["candidates"].get(name), after["candidates"].get(name)
        if old != new:
            found.append(f"candidate {name}: {old} -> {new}")
    for name in sorted(set(before.get("models", {})) & set(after.get("models", {}))):
        old, new = before["models"][name], after["models"][name]
        for key in ("scores_sha256", "ndcg@10"):
            if old[key] != new[key]:
                found.append(f"model {name} {key}: {old[key]} -> {new[key]}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="write the fingerprint to this file")
    parser.add_argument("--against", type=Path, help="compare with a saved fingerprint")
    parser.add_argument(
        "--every-model", action="store_true", help="also fit and fingerprint every model"
    )
    parser.add_argument(
        "--synthetic", type=int, default=0,
        help="a generated log of this many events (seed 0) instead of MovieLens-100K",
    )  # fmt: skip
    parser.add_argument("--models", default=None, help="candidates (default: the nightly's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recsys-same-") as work:
        source: list[str] = []
        if args.synthetic:
            from recsys_core.data.synth import SynthConfig, write_synthetic

            config = SynthConfig.sized(args.synthetic)
            events, items = write_synthetic(config, Path(work) / "source")
            source = ["--events", str(events), "--items", str(items)]
        options = ["--models", args.models] if args.models else []
        result = fingerprint(Path(work) / "lake", source, options)
        if args.every_model:
            result["models"] = model_fingerprints(Path(work) / "lake")
    if args.save:
        args.save.write_text(json.dumps(result, indent=2) + "\n")
    if args.against:
        found = differences(json.loads(args.against.read_text()), result)
        result = {"identical": int(not found), "differences": found, **result}
    print(json.dumps(result))
    if args.against and not result["identical"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
