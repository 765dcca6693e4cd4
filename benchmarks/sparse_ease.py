"""Sparse EASE against dense EASE where both fit: NDCG@10, fit seconds and peak memory.

The data is MovieLens-100K (the nightly's default source) or a generated log in ML-25M's
shape (`--synthetic EVENTS`: 6.5 users and 2.5 items per 1,000 events, as
`benchmarks/scale.py` generates; 5,000,000 events give 12,500 items), ingested as the nightly
does and split by the nightly's protocol (each user's latest 20% held out). Each model is
fitted on the training part and ranks the whole catalog for a seeded sample of test users.

Models: dense `ease`, `sparse_ease` at each `--neighbors`, and `itemknn` (the stand-in before
sparse EASE). With `--blend`, the blend of the default members that need no item text
(`BLEND_MEMBERS`) is measured twice: with dense EASE members, and as the nightly adapts it
past the memory budget (sparse EASE standing in). Peak memory is the process's peak resident
memory during the fit, and `fit_memory_mb` that peak less the resident memory before it.

Prints one JSON line: per model `ndcg@10`, `fit_seconds`, `peak_rss_mb`, `fit_memory_mb`, and
`ratio_to_dense` (NDCG@10 over dense EASE's). Goal: sparse EASE >= 0.98x dense EASE.

    python benchmarks/sparse_ease.py                               # ML-100K, a minute
    python benchmarks/sparse_ease.py --blend                       # and the two blends
    python benchmarks/sparse_ease.py --synthetic 5000000 --neighbors 256   # 12,500 items
    python benchmarks/sparse_ease.py --synthetic 25000000 --fit-only       # 62,500 items
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
from pathlib import Path

from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.data.splits import make_split
from recsys_core.data.synth import SynthConfig, write_synthetic
from recsys_core.evaluation import evaluate
from recsys_core.models import FitOptions, TrainingData, create
from recsys_core.pipeline import ingest
from recsys_core.pipeline.train import load_interactions
from recsys_core.resources import measured

USERS_PER_EVENT = 6.5e-3  # as benchmarks/scale.py
ITEMS_PER_EVENT = 2.5e-3
# the default blend members that read no item text (content and EASE's text signal need
# `recsys encode`); the text-and-window EASE member is plain EASE here
BLEND_MEMBERS = (
    "ease",
    "ease(history_half_life=5)",
    "itemknn",
    "als(factors=128, regularization=30, alpha=3)",
)
# the tiny size the tests run (tests/test_benchmarks.py)
TINY_ARGS = ["--synthetic", "20000", "--neighbors", "16", "--max-users", "200", "--blend"]


def current_rss_mb() -> float:
    """Resident memory now, in MB (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure(model, split, max_users: int) -> dict:
    """Fit `model` on the split's training part, then NDCG@10 on its test users."""
    gc.collect()
    before = current_rss_mb()
    with measured() as fit:
        model.fit(TrainingData(split.train), FitOptions())
    metrics = evaluate(model, split, (10,), max_users=max_users, seed=0)
    return {
        "ndcg@10": round(metrics["ndcg@10"], 4),
        "fit_seconds": fit["seconds"],
        "peak_rss_mb": fit["peak_rss_mb"],
        "fit_memory_mb": round(fit["peak_rss_mb"] - before, 1),
    }


def load(events: int, work: Path):
    """The training log: ML-100K (events = 0) or a generated one, through ingest."""
    context = RunContext.of(work / "lake")
    source = SourceSpec()
    if events:
        config = SynthConfig(
            users=max(10, round(events * USERS_PER_EVENT)),
            items=max(10, round(events * ITEMS_PER_EVENT)), events=events, clusters=20,
            min_words=0, max_words=12, days=365, seed=0,
        )  # fmt: skip
        events_path, items_path = write_synthetic(config, work / "source")
        source = SourceSpec(events=(str(events_path),), items=str(items_path))
    ingest(context, source)
    return load_interactions(context.lake)


def fit_only(args: argparse.Namespace) -> None:
    """Fit each sparse_ease size on a generated log held in memory; print one JSON line."""
    import polars as pl

    from recsys_core.data.interactions import Interactions
    from recsys_core.data.synth import synth_events

    events = args.synthetic or 25_000_000
    config = SynthConfig(
        users=round(events * USERS_PER_EVENT), items=round(events * ITEMS_PER_EVENT),
        events=events, clusters=20, min_words=0, max_words=12, days=365, seed=0,
    )  # fmt: skip
    frame = synth_events(config).select("user_id", "item_id", "timestamp")
    data = Interactions.from_events(frame.with_columns(value=pl.lit(1.0)))
    del frame
    models = {}
    for k in (int(k) for k in args.neighbors.split(",") if k.strip()):
        model = create(f"sparse_ease(neighbors={k})")
        gc.collect()
        before = current_rss_mb()
        with measured() as fit:
            model.fit(TrainingData(data), FitOptions())
        models[f"sparse_ease(neighbors={k})"] = {
            "fit_seconds": fit["seconds"], "peak_rss_mb": fit["peak_rss_mb"],
            "fit_memory_mb": round(fit["peak_rss_mb"] - before, 1),
            "weights": int(model.weights.nnz),
        }  # fmt: skip
    print(json.dumps({
        "benchmark": "sparse_ease", "data": f"synthetic {events} events, fit only",
        "users": data.n_users, "items": data.n_items, "pairs": int(data.matrix().nnz),
        "models": models, "cpus": os.cpu_count(),
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=0, help="generated events (0: ML-100K)")
    parser.add_argument("--neighbors", default="256", help="comma-separated sparse_ease sizes")
    parser.add_argument("--max-users", type=int, default=5000, help="test users evaluated")
    parser.add_argument("--blend", action="store_true", help="also the blend, dense vs sparse")
    parser.add_argument("--no-dense", action="store_true", help="skip dense EASE")
    parser.add_argument(
        "--fit-only", action="store_true",
        help="fit sparse_ease on all of a generated log, straight from memory (no ingest, no "
        "evaluation): its fit seconds and memory on catalogs too large for dense EASE",
    )  # fmt: skip
    args = parser.parse_args()
    if args.fit_only:
        fit_only(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = load(args.synthetic, Path(tmp))
    split = make_split(data, "user_temporal", None, seed=0)
    models: dict[str, dict] = {}
    specs = [f"sparse_ease(neighbors={int(k)})" for k in args.neighbors.split(",") if k.strip()]
    specs.append("itemknn")
    if not args.no_dense:
        specs.append("ease")
    for spec in specs:
        models[spec] = measure(create(spec), split, args.max_users)
    if args.blend:
        dense = create("blend", {"members": list(BLEND_MEMBERS)})
        sparse, _ = dense.adapted(data.n_items, 1)  # every EASE member over budget
        for label, blend in (("blend (dense EASE)", dense), ("blend (sparse EASE)", sparse)):
            if label.startswith("blend (dense") and args.no_dense:
                continue
            models[label] = measure(blend, split, args.max_users)
            models[label]["members"] = list(blend.config.members)
    reference = {"ease": "ease", "blend": "blend (dense EASE)"}
    for label, figures in models.items():
        base = models.get(reference["blend" if label.startswith("blend") else "ease"])
        if base and label not in reference.values() and base["ndcg@10"] > 0:
            figures["ratio_to_dense"] = round(figures["ndcg@10"] / base["ndcg@10"], 4)
    print(
        json.dumps(
            {
                "benchmark": "sparse_ease",
                "data": f"synthetic {args.synthetic} events" if args.synthetic else "ML-100K",
                "users": data.n_users,
                "items": data.n_items,
                "train_pairs": int(split.train.matrix().nnz),
                "evaluated_users": min(args.max_users, len(split.test_users)),
                "models": models,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
