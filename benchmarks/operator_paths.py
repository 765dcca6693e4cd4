"""An operator's path, end to end: re-runs, odd paths, broken files, two runs at once,
forgetting a user, and commands on a busy machine.

Every case runs the real CLI (`python -m flows.cli`, this checkout) in a subprocess on a small
generated log, then checks the tables it left:

- `rerun_without_source`: a nightly on the user's files, then `recsys nightly` with no source;
  the second must add nothing (the bundled sample never lands on top of a user's data);
- `odd_paths`: a data directory and input files whose names hold a space, `#`, `%` and
  non-ASCII letters; every valid row must be stored;
- `truncated_gzip`: an events file cut at 60% of its gzip bytes; exit 2, one line naming the
  file, and no table changed (a partial commit is counted per table);
- `milliseconds`: epoch timestamps in milliseconds; every row stored, in seconds;
- `all_quarantined`: a file whose every row is bad; exit 2, and it is not marked ingested;
- `two_nightlies`: two nightlies over one data directory started together; one runs, the
  other exits 2 naming the holder, and one champion version is registered;
- `forget_user`: `recsys forget-user ID --yes`, then every file under the data directory is
  searched for the id (binary); without a terminal and without `--yes` it exits 2.

Then `--commands` commands (nightly, recommend, recs and forget-user in turn) run beside
`--busy` processes spinning on the CPU; failures are counted. The overhead a command pays for
Prefect on a quiet machine comes from `benchmarks/cli_overhead.py`, run first.

    python benchmarks/operator_paths.py FOLDER [--commands 20] [--busy 6]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
# the tiny size the tests run (tests/test_benchmarks.py)
TINY_ARGS = ["{tmp}/operator", "--commands", "2", "--busy", "1", "--overhead-commands", "1"]
sys.path.insert(0, str(ROOT))

SPIN = "while True: pass"
MODELS = "popularity,ease"
# distinctive, so finding it in a binary file means the id itself, not a chance match
FORGET_ID = "zz-forget-me-77"


class Operator:
    """Runs `recsys` commands of this checkout and keeps the counts every case adds to."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "PREFECT_"))
        }
        self.env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", RECSYS_MODELS=MODELS)
        self.counts = {"rows_lost": 0, "rows_doubled": 0, "partial_commits": 0, "ids_left": 0}
        self.cases: dict[str, bool] = {}
        self.notes: dict[str, str] = {}
        self.prefect_homes: set[Path] = set()

    def recsys(
        self, *args: str, data_dir: Path, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        self.prefect_homes.add(data_dir / "prefect")
        command = [sys.executable, "-m", "flows.cli", *args, "--data-dir", str(data_dir)]
        return subprocess.run(
            command, env=self.env, cwd=ROOT, capture_output=True, text=True,
            input=stdin, timeout=1800,
        )  # fmt: skip

    def start(self, *args: str, data_dir: Path) -> subprocess.Popen:
        self.prefect_homes.add(data_dir / "prefect")
        command = [sys.executable, "-m", "flows.cli", *args, "--data-dir", str(data_dir)]
        return subprocess.Popen(
            command, env=self.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def case(self, name: str, passed: bool, note: str = "") -> None:
        self.cases[name] = bool(passed)
        if note and not passed:
            self.notes[name] = note[-300:]

    def stop_servers(self) -> None:
        from flows.server import stop_server

        for home in self.prefect_homes:
            stop_server(home)


def rows(data_dir: Path, table: str) -> int:
    from recsys_core.storage import Lake

    lake = Lake(data_dir)
    return lake.read(table, ["item_id"]).height if lake.exists(table) else 0


def versions(data_dir: Path) -> dict[str, int | None]:
    from recsys_core import schemas
    from recsys_core.storage import Lake

    lake = Lake(data_dir)
    return {table: lake.version(table) for table in schemas.TABLES}


def one_error_line(stderr: str) -> bool:
    said = [line for line in stderr.splitlines() if line.startswith("error:")]
    return len(said) == 1 and "Traceback" not in stderr.split("error:")[0][-2000:]


def source_rows(events: Path) -> int:
    return pl.read_csv(events).height


# -- the cases ------------------------------------------------------------------------------
def rerun_without_source(op: Operator, events: Path, items: Path) -> None:
    data = op.folder / "rerun"
    first = op.recsys("nightly", "--events", str(events), "--items", str(items), data_dir=data)
    before = rows(data, "events")
    second = op.recsys("nightly", data_dir=data)
    after = rows(data, "events")
    op.counts["rows_doubled"] += max(0, after - before)
    op.counts["rows_lost"] += max(0, before - after)
    op.case("rerun_without_source", first.returncode == 0 and second.returncode == 0
            and after == before, first.stderr + second.stderr)  # fmt: skip


def odd_paths(op: Operator, events: Path, items: Path) -> None:
    odd = op.folder / "odd #1 100% für Élodie"
    odd.mkdir(parents=True, exist_ok=True)
    odd_events, odd_items = odd / "events #2 50% é.csv", odd / "items #2 é.csv"
    shutil.copy(events, odd_events)
    shutil.copy(items, odd_items)
    data = odd / "lake"
    done = op.recsys(
        "nightly", "--events", str(odd_events), "--items", str(odd_items), data_dir=data
    )
    stored = rows(data, "events")
    op.counts["rows_lost"] += max(0, source_rows(events) - stored)
    published = rows(data, "recommendations")
    op.case("odd_paths", done.returncode == 0 and stored == source_rows(events) and published > 0,
            done.stderr)  # fmt: skip


def truncated_gzip(op: Operator, events: Path, items: Path) -> None:
    cut = op.folder / "cut" / "events.csv.gz"
    cut.parent.mkdir(parents=True, exist_ok=True)
    whole = gzip.compress(events.read_bytes())
    cut.write_bytes(whole[: int(len(whole) * 0.6)])
    data = op.folder / "cut-lake"
    # over a lake that holds last night's data too: nothing it has may change
    op.recsys("ingest", "--events", str(events), "--items", str(items), data_dir=data)
    before = versions(data)
    done = op.recsys("ingest", "--events", str(cut), "--items", str(items), data_dir=data)
    after = versions(data)
    changed = sum(before[t] != after[t] for t in before)
    op.counts["partial_commits"] += changed
    op.case("truncated_gzip", done.returncode == 2 and changed == 0 and one_error_line(done.stderr)
            and cut.name in done.stderr, done.stderr)  # fmt: skip


def milliseconds(op: Operator, events: Path, items: Path) -> None:
    frame = pl.read_csv(events)
    ms = op.folder / "ms" / "events.csv"
    ms.parent.mkdir(parents=True, exist_ok=True)
    frame.with_columns(pl.col("timestamp") * 1000).write_csv(ms)
    data = op.folder / "ms-lake"
    done = op.recsys("ingest", "--events", str(ms), "--items", str(items), data_dir=data)
    stored = rows(data, "events")
    op.counts["rows_lost"] += max(0, frame.height - stored)
    from recsys_core.storage import Lake

    kept = Lake(data).read("events", ["timestamp"]) if stored else None
    # stored as datetimes: the latest must be the source's latest second, not 1000x later
    right_scale = kept is not None and (
        kept["timestamp"].max().timestamp() == float(frame["timestamp"].max())
    )
    op.case("milliseconds", done.returncode == 0 and stored == frame.height and right_scale,
            done.stderr)  # fmt: skip


def all_quarantined(op: Operator, events: Path, items: Path) -> None:
    bad = op.folder / "bad" / "events.csv"
    bad.parent.mkdir(parents=True, exist_ok=True)
    pl.read_csv(events).with_columns(timestamp=pl.lit("not a time")).write_csv(bad)
    data = op.folder / "bad-lake"
    done = op.recsys("ingest", "--events", str(bad), "--items", str(items), data_dir=data)
    committed = sum(v is not None for v in versions(data).values())
    op.counts["partial_commits"] += committed
    op.case("all_quarantined", done.returncode == 2 and committed == 0, done.stderr)


def two_nightlies(op: Operator, events: Path, items: Path) -> None:
    data = op.folder / "two"
    op.recsys("ingest", "--events", str(events), "--items", str(items), data_dir=data)
    runs = [op.start("nightly", data_dir=data)]
    time.sleep(1.0)
    runs.append(op.start("nightly", data_dir=data))
    outcomes = [(run.wait(timeout=1800), run.communicate()[1]) for run in runs]
    codes = sorted(code for code, _ in outcomes)
    refused = [err for code, err in outcomes if code == 2]
    import mlflow
    from mlflow import MlflowClient

    from recsys_core.storage import Lake

    mlflow.set_tracking_uri(Lake(data).tracking_uri)
    registered = len(MlflowClient().search_model_versions())
    # one ran and one was refused naming the holder, or the second waited its turn
    serial = codes == [0, 0] and registered <= 2
    one_refused = codes == [0, 2] and "pid" in refused[0] and registered == 1
    op.case("two_nightlies", serial or one_refused, " | ".join(err for _, err in outcomes))


def forget_user(op: Operator, data: Path, user: str) -> None:
    done = op.recsys("forget-user", user, "--yes", data_dir=data)
    needle = user.encode()
    left = 0
    for path in data.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                left += needle in path.read_bytes()
            except OSError:
                continue
    op.counts["ids_left"] += left
    asked = op.recsys("forget-user", user, data_dir=data, stdin="")
    op.case("forget_user", done.returncode == 0 and left == 0 and asked.returncode == 2,
            done.stderr + asked.stderr)  # fmt: skip


# -- commands beside busy processes ---------------------------------------------------------
def busy_commands(op: Operator, events: Path, items: Path, commands: int, busy: int) -> dict:
    from flows.server import die_with_parent

    data = op.folder / "busy"
    op.recsys("nightly", "--events", str(events), "--items", str(items), data_dir=data)
    users = pl.read_csv(events, schema_overrides={"user_id": pl.String})["user_id"].unique().sort()
    spinners = [
        subprocess.Popen([sys.executable, "-c", SPIN], preexec_fn=die_with_parent)
        for _ in range(busy)
    ]
    failures, lines, walls = 0, [], []
    try:
        for n in range(commands):
            user = users[n % len(users)]
            kind = ("nightly", "recommend", "recs", "forget-user")[n % 4]
            args = {"nightly": ["nightly"], "recommend": ["recommend"],
                    "recs": ["recs", users[-1 - n % len(users)], "--json"],
                    "forget-user": ["forget-user", user, "--yes"]}[kind]  # fmt: skip
            start = time.perf_counter()
            done = op.recsys(*args, data_dir=data)
            walls.append(time.perf_counter() - start)
            if done.returncode != 0:
                failures += 1
                said = [x for x in done.stderr.splitlines() if "error" in x] or [""]
                lines.append(f"{kind}: {said[-1]}")
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    median = round(sorted(walls)[len(walls) // 2], 1) if walls else None
    return {
        "busy_commands": commands,
        "busy_processes": busy,
        "busy_failures": failures,
        "busy_failure_lines": sorted(set(lines))[:3],
        "busy_command_median_s": median,
    }


def quiet_overhead(folder: Path, commands: int) -> float | None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cli_overhead.py"), str(folder),
         "--commands", str(commands)],
        capture_output=True, text=True, cwd=ROOT, timeout=1800,
    )  # fmt: skip
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)["overhead_per_command_s"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="an empty or new folder to work in")
    parser.add_argument("--commands", type=int, default=20, help="commands beside busy processes")
    parser.add_argument("--busy", type=int, default=6, help="CPU-spinning processes meanwhile")
    parser.add_argument("--overhead-commands", type=int, default=5,
                        help="commands timed on the quiet machine")  # fmt: skip
    args = parser.parse_args()

    from recsys_core.data.synth import SynthConfig, write_synthetic

    folder = args.folder.resolve()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    events, items = write_synthetic(
        SynthConfig(users=60, items=40, events=1500, clusters=4, max_words=20, seed=5),
        folder / "source",
    )
    frame = pl.read_csv(events, schema_overrides={"user_id": pl.String})
    extra = frame.head(6).with_columns(user_id=pl.lit(FORGET_ID))
    pl.concat([frame, extra]).write_csv(events)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    op = Operator(folder)
    start = time.perf_counter()
    overhead = quiet_overhead(folder / "overhead", args.overhead_commands)
    try:
        rerun_without_source(op, events, items)
        odd_paths(op, events, items)
        truncated_gzip(op, events, items)
        milliseconds(op, events, items)
        all_quarantined(op, events, items)
        two_nightlies(op, events, items)
        forget_user(op, folder / "rerun", FORGET_ID)
        busy = busy_commands(op, events, items, args.commands, args.busy)
    finally:
        op.stop_servers()
    print(json.dumps({
        "cases": len(op.cases),
        "cases_passed": sum(op.cases.values()),
        "failed_cases": sorted(name for name, ok in op.cases.items() if not ok),
        **op.counts,
        **busy,
        "quiet_overhead_per_command_s": overhead,
        "seconds": round(time.perf_counter() - start, 1),
        "failure_notes": op.notes,
    }, ensure_ascii=False))  # fmt: skip


if __name__ == "__main__":
    main()
