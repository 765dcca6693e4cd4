"""Ingestion throughput and peak memory on a synthetic log, against plain polars.

Prints one JSON line: events/s and peak RSS of `ingest` (validation, dedupe, quarantine,
Delta commit, report), and the same file converted CSV -> Parquet by polars alone, in the
same run: eagerly (`pl.read_csv(...).write_parquet(...)`, the plain conversion) and streaming
(`pl.scan_csv(...).sink_parquet(...)`). Ratios are polars' time over ours (1.0 = as fast as
polars), by wall clock and by CPU seconds. Each measurement runs in its own process, so each
peak RSS is its own (it includes the project's imports: torch, MLflow); with `--repeats N`
the phases alternate and the fastest of each counts.

The synthetic file (time-ordered, 1% exact duplicates) is generated once and reused:

    python benchmarks/ingest.py                      # 20M events (about 700 MB of CSV)
    python benchmarks/ingest.py --events 2000000     # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the tiny size the tests run (tests/test_benchmarks.py); {tmp} is a fresh folder
TINY_ARGS = ["--events", "20000", "--users", "500", "--items", "200",
             "--source-dir", "{tmp}/source"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--source-dir", type=Path, default=None, help="where the CSV is kept")
    parser.add_argument("--phase", choices=["ingest", "eager", "streaming"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    source = args.source_dir or Path(tempfile.gettempdir()) / (
        f"recsys-bench/ingest-{args.events}-{args.users}-{args.items}"
    )
    if args.phase:
        print(json.dumps(run_phase(args.phase, source, args.work)))
        return

    generated = ensure_source(source, args.events, args.users, args.items)
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="recsys-bench-ingest-") as work:
        for _ in range(args.repeats):
            for phase in ("eager", "streaming", "ingest"):
                result = child(phase, source, Path(work) / phase, args)
                if phase not in best or result["seconds"] < best[phase]["seconds"]:
                    best[phase] = result
    ours, eager, streaming = best["ingest"], best["eager"], best["streaming"]
    rows = ours["rows_read"]
    print(
        json.dumps(
            {
                "benchmark": "ingest",
                "rows": rows,
                "csv_mb": round((source / "events.csv").stat().st_size / 1e6, 1),
                "events_added": ours["events_added"],
                "duplicates": ours["duplicates"],
                "quarantined": ours["quarantined"],
                "seconds": round(ours["seconds"], 2),
                "events_per_s": round(rows / ours["seconds"]),
                "peak_rss_mb": ours["peak_rss_mb"],
                "polars_eager_csv_to_parquet_s": round(eager["seconds"], 2),
                "polars_eager_peak_rss_mb": eager["peak_rss_mb"],
                "polars_streaming_csv_to_parquet_s": round(streaming["seconds"], 2),
                "polars_streaming_peak_rss_mb": streaming["peak_rss_mb"],
                "ratio_vs_polars_eager": round(eager["seconds"] / ours["seconds"], 3),
                "ratio_vs_polars_streaming": round(streaming["seconds"] / ours["seconds"], 3),
                # CPU seconds (all threads) measure the work itself; wall time on a shared
                # machine also measures the neighbours
                "cpu_s": round(ours["cpu_seconds"], 2),
                "polars_eager_cpu_s": round(eager["cpu_seconds"], 2),
                "polars_streaming_cpu_s": round(streaming["cpu_seconds"], 2),
                "cpu_ratio_vs_polars_eager": round(eager["cpu_seconds"] / ours["cpu_seconds"], 3),
                "cpu_ratio_vs_polars_streaming": round(
                    streaming["cpu_seconds"] / ours["cpu_seconds"], 3
                ),
                "repeats": args.repeats,
                "generated_source_s": generated,
            }
        )
    )


def ensure_source(folder: Path, events: int, users: int, items: int) -> float | None:
    """Write the synthetic CSV once; returns the seconds it took, None when reused."""
    if (folder / "events.csv").exists() and (folder / "items.csv").exists():
        return None
    from recsys_core.data.synth import SynthConfig, write_synthetic

    start = time.perf_counter()
    config = SynthConfig(
        users=users, items=items, events=events, max_words=60, duplicate_fraction=0.01, seed=7
    )
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write_synthetic(config, partial, progress=sys.stderr.isatty())
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return round(time.perf_counter() - start, 1)


def child(phase: str, source: Path, work: Path, args: argparse.Namespace) -> dict:
    """Run one phase in a fresh process, so its peak RSS is its own."""
    command = [sys.executable, __file__, "--phase", phase, "--work", str(work),
               "--source-dir", str(source)]  # fmt: skip
    root = str(Path(__file__).resolve().parents[1])  # import this checkout's recsys_core
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get(
        "PYTHONPATH")]))}  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    shutil.rmtree(work, ignore_errors=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_phase(phase: str, source: Path, work: Path) -> dict:
    import polars as pl

    work.mkdir(parents=True, exist_ok=True)
    events = source / "events.csv"
    if phase != "ingest":
        write = {
            "eager": lambda: pl.read_csv(events).write_parquet(work / "events.parquet"),
            "streaming": lambda: pl.scan_csv(events).sink_parquet(work / "events.parquet"),
        }[phase]
        return _measure(write, lambda: {})

    # imported before the clock starts, as a running pipeline has them already
    from recsys_core.context import RunContext
    from recsys_core.data.sources import SourceSpec
    from recsys_core.pipeline import ingest

    spec = SourceSpec(events=(str(events),), items=str(source / "items.csv"))
    reports = []

    def run() -> None:
        reports.append(ingest(RunContext.of(work / "lake"), spec, progress=False))

    def counts() -> dict:
        report = reports[0]
        assert report.accounted, "rows read must equal stored + duplicates + quarantined"
        return {k: getattr(report, k) for k in ("rows_read", "events_added", "duplicates",
                                                "quarantined")}  # fmt: skip

    return _measure(run, counts)


def _measure(work, details) -> dict:
    cpu = _cpu_seconds()
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    return {
        **details(),
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds() - cpu,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _cpu_seconds() -> float:
    """User plus system CPU time of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
