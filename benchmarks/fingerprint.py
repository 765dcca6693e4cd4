"""What covering the code costs a stage fingerprint: the source hash, once per process, and
each fingerprint after it.

Prints one JSON line: the `.py` files and bytes hashed (recsys_core, tasks, flows and the
plugin model modules), the first `code_digest()` of the process (models imported, source
hashed), a repeated one (the plugin discovery only), the source hash alone, and a whole
`train_inputs` fingerprint of a small data directory (the median of `--repeat` runs).

    python benchmarks/fingerprint.py --repeat 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

# the tiny size the tests run (tests/test_benchmarks.py)
TINY_ARGS = ["--repeat", "2"]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs of each call")
    args = parser.parse_args()

    start = time.perf_counter()
    from recsys_core.pipeline import fingerprints

    imported = time.perf_counter() - start
    start = time.perf_counter()
    fingerprints.code_digest()
    first = time.perf_counter() - start

    def median(call) -> float:
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def source_alone() -> None:
        fingerprints._source_digest.cache_clear()
        fingerprints._source_digest()

    import polars as pl

    from recsys_core import schemas
    from recsys_core.context import RunContext
    from recsys_core.pipeline.train import train_inputs

    with tempfile.TemporaryDirectory() as work:
        context = RunContext.of(Path(work) / "lake")
        now = datetime(2024, 1, 1, tzinfo=UTC)
        row = {
            "user_id": "u1", "item_id": "i1", "timestamp": now, "event_type": "view",
            "value": 1.0, "source": "bench", "ingested_at": now, "quality": None,
            "event_date": date(2024, 1, 1),
        }  # fmt: skip
        context.lake.write("events", pl.DataFrame([row], schema=schemas.EVENTS), mode="append")
        fingerprint = median(lambda: train_inputs(context))
    repeated = median(fingerprints.code_digest)
    source = median(source_alone)

    root = Path(fingerprints.recsys_core.__file__).resolve().parent.parent
    files = [f for name in fingerprints.SOURCE_PACKAGES for f in (root / name).rglob("*.py")]
    print(
        json.dumps(
            {
                "source_files": len(files),
                "source_bytes": sum(f.stat().st_size for f in files),
                "plugin_modules": len(fingerprints.plugin_modules()),
                "import_ms": _ms(imported),
                "first_code_digest_ms": _ms(first),
                "code_digest_ms": _ms(repeated),
                "source_hash_ms": _ms(source),
                "train_fingerprint_ms": _ms(fingerprint),
            }
        )
    )


if __name__ == "__main__":
    main()
