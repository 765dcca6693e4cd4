"""Wall time of each pipeline stage on MovieLens-100K, in a fresh temporary data directory.

Prints one JSON line: seconds per stage, encode items/s, users ranked per second.
Runs the stage functions directly (no Prefect), so the figures are the work itself.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.pipeline import encode_items, ingest, recommend, train


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        context = RunContext.of(Path(tmp) / "lake")
        seconds = {}
        start = time.perf_counter()
        ingested = ingest(context, SourceSpec())
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
                "benchmark": "pipeline-ml100k",
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
