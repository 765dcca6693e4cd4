"""What a flow-running command pays for Prefect, on a quiet or a busy machine.

Runs the same `recsys ingest` again and again over a small data directory (after the first
run it only checks that its files are ingested: one flow run with one task), and the same
work through the library in a fresh Python process without Prefect. The overhead of a
command is the difference of the medians. The first command, which may start a Prefect
server, is reported apart. With `--busy N`, N processes spin on the CPU meanwhile, and the
commands that fail are counted. `--checkout` runs another checkout's CLI (e.g. an older
commit) with the same data, for a comparison on the same machine.

    python benchmarks/cli_overhead.py DATA_FOLDER [--commands 5] [--busy 0] [--checkout .]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the tiny size the tests run (tests/test_benchmarks.py)
TINY_ARGS = ["{tmp}/overhead", "--commands", "1"]
sys.path.insert(0, str(ROOT))

LIBRARY_INGEST = """
import sys
from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.pipeline import ingest
ingest(RunContext.of(sys.argv[1]), SourceSpec(events=(sys.argv[2],), items=sys.argv[3]))
"""
SPIN = "while True: pass"


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    lines = done.stderr.strip().splitlines() or [""]
    said = [line for line in lines if line.startswith(("error:", "internal error:"))]
    return time.perf_counter() - start, done.returncode, (said or lines)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="an empty or new folder to work in")
    parser.add_argument("--commands", type=int, default=5, help="commands after the first")
    parser.add_argument("--busy", type=int, default=0, help="CPU-spinning processes meanwhile")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="whose CLI to run")
    args = parser.parse_args()

    from flows.server import die_with_parent, stop_server
    from recsys_core.data.synth import SynthConfig, write_synthetic

    folder = args.folder.resolve()
    shutil.rmtree(folder / "lake", ignore_errors=True)
    events, items = write_synthetic(
        SynthConfig(users=30, items=20, events=300, seed=1), folder / "source"
    )
    lake = folder / "lake"
    checkout = args.checkout.resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "PREFECT_"))}
    env.update(PYTHONPATH=str(checkout), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "flows.cli", "ingest", "--data-dir", str(lake),
               "--events", str(events), "--items", str(items)]  # fmt: skip
    library = [sys.executable, "-c", LIBRARY_INGEST, str(lake), str(events), str(items)]
    # a SIGTERM (e.g. from `timeout`) still stops the spinners and the server below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    spinners = [
        subprocess.Popen([sys.executable, "-c", SPIN], preexec_fn=die_with_parent)
        for _ in range(args.busy)
    ]
    walls, failures, reasons = [], 0, []
    try:
        first, code, last = timed(command, env, checkout)
        failures += code != 0
        if code:
            reasons.append(last)
        for _ in range(args.commands):
            wall, code, last = timed(command, env, checkout)
            walls.append(wall)
            if code:
                failures += 1
                reasons.append(last)
        library_walls = [timed(library, env, checkout)[0] for _ in range(max(3, args.commands))]
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
        stop_server(lake / "prefect")
    median = statistics.median(walls) if walls else float("nan")
    work = statistics.median(library_walls)
    print(json.dumps({
        "checkout": str(checkout),
        "busy_processes": args.busy,
        "cores": os.cpu_count(),
        "commands": 1 + args.commands,
        "failures": failures,
        "failure_lines": sorted(set(reasons))[:3],
        "first_command_s": round(first, 2),
        "command_median_s": round(median, 2),
        "same_work_without_prefect_median_s": round(work, 2),
        "overhead_per_command_s": round(median - work, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
