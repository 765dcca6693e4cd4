"""Wall time of each pipeline stage on MovieLens-100K, in a fresh temporary data directory.

Prints one JSON line: seconds per stage, encode items/s, users ranked per second.
Runs the stage functions directly (no Prefect), so the figures are the work itself.

    python benchmarks/pipeline.py                     # MovieLens-100K, a few minutes
    python benchmarks/pipeline.py --synthetic 3000    # a generated log of 3,000 events
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.data.synth import SynthConfig, write_synthetic
from recsys_core.pipeline import encode_items, ingest, recommend, train

# the tiny size the tests run (tests/test_benchmarks.py)
TINY_ARGS = ["--synthetic", "3000", "--models", "popularity,ease"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--synthetic", type=int, default=0,
        help="a generated log of this many events instead of MovieLens-100K",
    )  # fmt: skip
    parser.add_argument("--models", default=None, help="candidates (default: the nightly's)")
    args = parser.parse_args()
    options = {"models": tuple(args.models.split(","))} if args.models else {}
    with tempfile.TemporaryDirectory() as tmp:
        source = SourceSpec()
        if args.synthetic:
            events, items = write_synthetic(SynthConfig.sized(args.synthetic), Path(tmp) / "src")
            source = SourceSpec(events=(str(events),), items=str(items))
        context = RunContext.of(Path(tmp) / "lake", **options)
        seconds = {}
        start = time.perf_counter()
        ingested = ingest(context, source)
        seconds["ingest"] = time.perf_counter() - start
        start = time.perf_counter()
        encoded = encode_items(context)
        seconds["encode"] = time.perf_counter() - start
        start = time.perf_counter()
        trained = train(context)
        seconds["train"] = time.perf_counter() - start
        start = time.perf_counter()
        published = recommend(context)
        seconds["recommend"] = time.perf_counter() - start
    print(
        json.dumps(
            {
                "benchmark": "pipeline-ml100k" if not args.synthetic else "pipeline-synthetic",
                "events": ingested.events_added,
                "seconds": {k: round(v, 2) for k, v in seconds.items()},
                "encode_items_per_s": encoded.items_per_second,
                "champion": trained.champion_model,
                "champion_ndcg@10": round(trained.champion_metrics["ndcg@10"], 4),
                "recommend_users_per_s": round(published.users / seconds["recommend"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
