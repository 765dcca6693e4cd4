"""Kill the nightly at random points inside each stage; check that a rerun converges.

Every trial, in a fresh data directory, runs night 1 cleanly, SIGKILLs night 2 at a random
moment inside one stage while a reader keeps reading the recommendations table, and runs
night 2 again; the result must equal a reference directory where both nights ran cleanly
(see recsys_core/testing/faults.py for what is compared).

    python benchmarks/faults.py --trials 3        # trials per stage; prints one JSON line
    python benchmarks/faults.py --trials 1 --stages recommend   # one kill, about a minute
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# the tiny size the tests run (tests/test_benchmarks.py)
TINY_ARGS = ["--trials", "1", "--stages", "recommend"]


def main() -> None:
    from flows.server import free_port
    from flows.stack import Stack
    from recsys_core.testing.faults import run_campaign

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=3, help="kills per stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--stages", default="ingest,encode,train,recommend", help="stages to kill, comma-separated"
    )
    args = parser.parse_args()
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    with tempfile.TemporaryDirectory(prefix="recsys-faults-") as tmp:
        workdir = Path(tmp)
        stack = Stack(workdir / "server", workdir / "run", prefect_port=free_port())
        try:
            stack.start_prefect()
            campaign = run_campaign(args.trials, workdir, stack.api_url, args.seed, stages)
        finally:
            stack.stop("prefect")
    print(json.dumps(campaign.summary()))


if __name__ == "__main__":
    main()
