"""Does a change keep the pipeline's results? The default nightly on MovieLens-100K, fingerprinted.

Runs `recsys nightly --json` (defaults, fixed seed) into a fresh data directory and prints one
JSON line: a sha256 of the published `recommendations` table (every user, rank, item and
score, sorted), the published model, and every candidate's metrics. Refactors must leave all
of them identical:

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]


def fingerprint(data_dir: Path) -> dict:
    command = [str(ROOT / ".venv" / "bin" / "recsys"), "nightly", "--data-dir", str(data_dir),
               "--json"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"recsys nightly failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    table = (
        pl.read_delta(str(data_dir / "recommendations"))
        .select("user_id", "rank", "item_id", "score")
        .sort("user_id", "rank")
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
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="write the fingerprint to this file")
    parser.add_argument("--against", type=Path, help="compare with a saved fingerprint")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recsys-same-") as work:
        result = fingerprint(Path(work) / "lake")
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
