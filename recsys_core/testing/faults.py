"""The kill-and-rerun fault campaign: stages, the nightly driver, trials and their summary.

Every trial, in a fresh data directory:
1. night 1 runs cleanly on day-1 logs (so there is a previous night to fall back to);
2. night 2 (day-1 + day-2 logs) is SIGKILLed at a random moment inside one stage, while a
   reader thread keeps reading the recommendations table;
3. night 2 is run again, unharmed.
The result is compared with a reference directory where both nights ran cleanly: the events
table must hold the same rows (none lost, none twice), the recommendations table must equal
the reference's, the champion must load, and no read may ever have seen a partial table
(every user with exactly K rows, and the user count of a complete night).

`benchmarks/faults.py` runs long campaigns; `tests/reliability/test_kill.py` a short one.
Each night runs in its own process: `python -m recsys_core.testing.faults --data-dir ...`
(the driver), so a SIGKILL takes down the whole run and nothing else.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys_core.storage import Lake

ROOT = Path(__file__).resolve().parents[2]  # the repository: the driver imports `flows`

STAGES = ("ingest", "encode", "train", "recommend")
# stage -> (function that opens it, function that closes it) in recsys_core.pipeline
STAGE_FUNCTIONS = {
    "ingest": ("ingest", "ingest"),
    "encode": ("plan_encode", "commit_encode"),
    "train": ("train", "train"),
    "recommend": ("plan_recommend", "publish"),
}
K = 5


# -- the driver: one nightly run in its own process, announcing each stage ------------------
def drive(args: argparse.Namespace) -> None:
    """Run the nightly flow in this process; append `<stage> <begin|end> <time>` markers."""
    from recsys_core import pipeline

    markers = Path(args.markers)

    def announce(stage: str, function, edges: tuple[str, ...]):
        def run(*a, **kw):
            if "begin" in edges:
                with markers.open("a") as fh:
                    fh.write(f"{stage} begin {time.time()}\n")
            try:
                return function(*a, **kw)
            finally:
                if "end" in edges:
                    with markers.open("a") as fh:
                        fh.write(f"{stage} end {time.time()}\n")

        return run

    def wrap(name: str, stage: str, events: tuple[str, ...]) -> None:
        # the step is replaced where its callers look it up: the package (ingest, train) and
        # the module that defines it (the sharded stages call their steps there)
        function = getattr(pipeline, name)
        announced = announce(stage, function, events)
        setattr(pipeline, name, announced)
        setattr(sys.modules[function.__module__], name, announced)

    for stage, (opens, closes) in STAGE_FUNCTIONS.items():
        if opens == closes:
            wrap(opens, stage, ("begin", "end"))
        else:
            wrap(opens, stage, ("begin",))
            wrap(closes, stage, ("end",))
    from flows.nightly import nightly
    from flows.params import RunOptions, Source

    nightly(
        source=Source(events=args.events, items=args.items),
        options=RunOptions(
            data_dir=args.data_dir, k=K, encoder=args.encoder, models=args.models.split(",")
        ),
    )


# -- the campaign ----------------------------------------------------------------------------
@dataclass
class Night:
    events: list[str]
    items: str


@dataclass
class Outcome:
    stage: str
    killed: bool = False
    converged: bool = False
    rows_lost: int = 0
    rows_duplicated: int = 0
    partial_reads: int = 0
    reads: int = 0
    killed_after_s: float = 0.0
    error: str = ""


@dataclass
class Campaign:
    results: list[Outcome] = field(default_factory=list)

    def summary(self) -> dict:
        per_stage = {
            s: {
                "trials": sum(r.stage == s and r.killed for r in self.results),
                "converged": sum(r.stage == s and r.killed and r.converged for r in self.results),
            }
            for s in STAGES
        }
        return {
            "benchmark": "faults",
            "kill_trials": per_stage,
            "trials": sum(r.killed for r in self.results),
            "converged": sum(r.killed and r.converged for r in self.results),
            "not_killed": sum(not r.killed for r in self.results),
            "rows_lost": sum(r.rows_lost for r in self.results),
            "rows_duplicated": sum(r.rows_duplicated for r in self.results),
            "partial_tables_seen": sum(r.partial_reads for r in self.results),
            "reads": sum(r.reads for r in self.results),
            "errors": [f"{r.stage}: {r.error}" for r in self.results if r.error][:5],
        }


def run_night(data_dir: Path, night: Night, setup: dict, markers: Path) -> subprocess.Popen:
    """Start one nightly run in a subprocess (its own process group)."""
    command = [
        sys.executable, "-m", "recsys_core.testing.faults", "--data-dir", str(data_dir),
        "--items", night.items,
        "--encoder", setup["encoder"], "--models", setup["models"], "--markers", str(markers),
    ]  # fmt: skip
    for path in night.events:
        command += ["--events", path]
    log = markers.with_suffix(".log").open("ab")
    return subprocess.Popen(
        command, env=setup["env"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def stage_windows(markers: Path) -> dict[str, float]:
    """How long each stage ran (stages skipped by the cache have no markers)."""
    times: dict[str, dict[str, float]] = {}
    for line in markers.read_text().splitlines():
        stage, edge, when = line.split()
        times.setdefault(stage, {})[edge] = float(when)
    return {s: max(t.get("end", t["begin"]) - t["begin"], 0.05) for s, t in times.items()}


def table_rows(data_dir: Path, table: str, columns: list[str]) -> pl.DataFrame:
    lake = Lake(data_dir)
    if not lake.exists(table):
        return pl.DataFrame(schema={c: pl.String for c in columns})
    return lake.read(table, columns)


EVENT_KEY = ["user_id", "item_id", "timestamp", "event_type", "value"]
RECS = ["user_id", "rank", "item_id", "score"]


def snapshot(data_dir: Path) -> dict[str, pl.DataFrame]:
    return {
        "events": table_rows(data_dir, "events", EVENT_KEY),
        "recommendations": table_rows(data_dir, "recommendations", RECS).sort(["user_id", "rank"]),
    }


def whole(frame: pl.DataFrame, complete_user_counts: set[int]) -> bool:
    """A read is whole when every user has exactly K rows, as in some complete night."""
    if frame.is_empty():
        return True
    per_user = frame.group_by("user_id").len()
    return per_user["len"].min() == K and per_user.height in complete_user_counts


def kill_and_rerun(stage: str, data_dir: Path, night: Night, previous_users: int,
                   expected: dict[str, pl.DataFrame], duration: float, setup: dict,
                   rng: random.Random) -> Outcome:  # fmt: skip
    """Night `night` killed inside `stage`, checked, run again, compared with `expected`."""
    from recsys_core.context import RunContext
    from recsys_core.registry.tracking import CHAMPION, Tracker

    outcome = Outcome(stage=stage)
    complete = {previous_users, expected["recommendations"]["user_id"].n_unique()}
    stop = threading.Event()
    reads = {"n": 0, "partial": 0}

    def reader() -> None:
        while not stop.is_set():
            try:
                frame = table_rows(data_dir, "recommendations", ["user_id", "rank"])
                reads["partial"] += 0 if whole(frame, complete) else 1
            except Exception:  # a failed read counts as a partial one
                reads["partial"] += 1
            reads["n"] += 1
            time.sleep(0.01)

    watcher = threading.Thread(target=reader, daemon=True)
    watcher.start()
    try:
        tag = f"{data_dir.name}-{stage}-{rng.randrange(1 << 20)}"
        markers = data_dir.parent / f"{tag}.markers"
        proc = run_night(data_dir, night, setup, markers)
        delay = rng.uniform(0, duration)
        while proc.poll() is None:
            if markers.exists() and f"{stage} begin" in markers.read_text():
                time.sleep(delay)
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    outcome.killed = True
                break
            time.sleep(0.005)
        proc.wait()
        outcome.killed_after_s = round(delay, 3)
        tracker = Tracker.of(RunContext.of(data_dir))
        if tracker.get(CHAMPION) is not None:
            tracker.load(CHAMPION)  # the champion's artifacts load even right after a kill
        rerun = run_night(data_dir, night, setup, markers.with_suffix(".rerun.markers"))
        if rerun.wait() != 0:
            raise RuntimeError(f"the rerun failed; see {markers.with_suffix('.rerun.log')}")
        tracker.load(CHAMPION)
    except Exception as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        return outcome
    finally:
        stop.set()
        watcher.join()
        outcome.reads, outcome.partial_reads = reads["n"], reads["partial"]
    got = snapshot(data_dir)
    counts = (
        expected["events"]
        .group_by(EVENT_KEY)
        .len()
        .join(got["events"].group_by(EVENT_KEY).len(), on=EVENT_KEY, how="full", coalesce=True)
        .fill_null(0)
    )
    outcome.rows_lost = int((counts["len"] - counts["len_right"]).clip(lower_bound=0).sum())
    outcome.rows_duplicated = int((counts["len_right"] - counts["len"]).clip(lower_bound=0).sum())
    same = got["recommendations"].equals(expected["recommendations"])
    if not same:
        outcome.error = "recommendations differ from the clean run's"
    outcome.converged = (
        same and outcome.rows_lost == 0 and outcome.rows_duplicated == 0
        and outcome.partial_reads == 0
    )  # fmt: skip
    return outcome


def make_nights(workdir: Path, n_nights: int) -> list[Night]:
    """Night i sees the logs of days 1..i and a catalog where a few items changed or arrived."""
    from recsys_core.data.synth import SynthConfig, synth_events, synth_items

    config = SynthConfig(users=100, items=70, events=3000, clusters=4, max_words=30, seed=11)
    events, items = synth_events(config), synth_items(config)
    src = workdir / "source"
    src.mkdir(parents=True, exist_ok=True)
    bounds = [events["timestamp"].quantile(q) for q in (0.0, 0.6)]
    bounds += [events["timestamp"].quantile(0.6 + 0.4 * i / (n_nights - 1)) for i in
               range(1, n_nights)]  # fmt: skip
    nights, days = [], []
    for i in range(n_nights):
        lo, hi = bounds[i], bounds[i + 1]
        day = events.filter((pl.col("timestamp") >= lo) & (pl.col("timestamp") < hi)
                            if i < n_nights - 1 else pl.col("timestamp") >= lo)  # fmt: skip
        path = src / f"day{i + 1}.csv"
        day.write_csv(path)
        days.append(str(path))
        catalog = items.head(50 + 5 * i).with_columns(
            pl.when(pl.int_range(pl.len()) < i)
            .then(pl.col("description") + f" revised on night {i + 1}")
            .otherwise(pl.col("description"))
            .alias("description")
        )
        catalog_path = src / f"items{i + 1}.csv"
        catalog.write_csv(catalog_path)
        nights.append(Night(list(days), str(catalog_path)))
    return nights


def tiny_encoder(folder: Path) -> str:
    """A small random BERT with the bundled tokenizer: the campaign is about faults, not text."""
    import torch
    from transformers import BertConfig, BertModel

    from recsys_core.encoders import default_encoder_path

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (default_encoder_path() / name).exists():
            shutil.copy(default_encoder_path() / name, folder / name)
    return str(folder)


def run_campaign(
    trials: int,
    workdir: Path,
    api_url: str,
    seed: int = 0,
    stages: tuple[str, ...] = STAGES,
) -> Campaign:
    """`trials` kills per stage of `stages` (one per night after the first) against the
    server at `api_url`; every night's outcome is compared with a clean run of the same
    nights."""
    unknown = set(stages) - set(STAGES)
    if unknown or not stages:
        raise ValueError(f"stages must be some of {', '.join(STAGES)}, given {stages}")
    n_nights = 1 + trials * len(stages)
    nights = make_nights(workdir, n_nights)
    setup = {
        "encoder": tiny_encoder(workdir / "encoder"),
        "models": "popularity,ease",
        "env": {
            **os.environ,
            "PREFECT_API_URL": api_url,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        },
    }
    reference, expected, durations = workdir / "reference", [], []
    for i, night in enumerate(nights):
        markers = workdir / f"reference-{i + 1}.markers"
        if run_night(reference, night, setup, markers).wait() != 0:
            raise RuntimeError(f"clean night {i + 1} failed; see {markers.with_suffix('.log')}")
        expected.append(snapshot(reference))
        durations.append(stage_windows(markers))
    data_dir = workdir / "faulty"
    first = workdir / "faulty-1.markers"
    if run_night(data_dir, nights[0], setup, first).wait() != 0:
        raise RuntimeError(f"night 1 failed; see {first.with_suffix('.log')}")
    rng = random.Random(seed)
    campaign = Campaign()
    for i in range(1, n_nights):
        stage = stages[(i - 1) % len(stages)]
        previous = expected[i - 1]["recommendations"]["user_id"].n_unique()
        duration = durations[i].get(stage, 0.05)
        campaign.results.append(
            kill_and_rerun(stage, data_dir, nights[i], previous, expected[i], duration, setup, rng)
        )
    return campaign


def driver_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the driver's command line (what `run_night` passes)."""
    parser = argparse.ArgumentParser(description="Run one nightly and mark each stage's edges.")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--events", action="append", required=True)
    parser.add_argument("--items", required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--markers", required=True)
    return parser.parse_args(argv)


if __name__ == "__main__":
    drive(driver_arguments())
