"""Does fine-tuning the encoder on co-occurring items help cold-start recommendations?

MovieLens-100K, `cold_items` protocol: a random 20% of the items with events are held out of
training entirely; each user's held-out items must be found among the held-out items only,
by the `content` model (profile = recency-weighted mean of the user's item text vectors).
The same split is scored with the base encoder and with encoders fine-tuned on pairs mined
from the training events only (so no held-out item shapes the encoder), once per seed, since
a short fine-tuning run varies with the pairs it draws.

Prints one JSON line. `recsys finetune-encoder --split cold_items --evaluate` runs the same
comparison for one seed on a data directory and logs it to MLflow.

    python benchmarks/finetune.py                       # 3 seeds, ~10 minutes on 2 CPU cores
    python benchmarks/finetune.py --seeds 42 --pairs 512
    python benchmarks/finetune.py --synthetic 3000 --seeds 42 --pairs 64   # seconds
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.data.splits import cold_items
from recsys_core.data.synth import SynthConfig, write_synthetic
from recsys_core.encoders import ItemTextEncoder
from recsys_core.encoders.finetune import FinetuneConfig, cooccurrence_pairs, finetune
from recsys_core.pipeline import ingest
from recsys_core.pipeline.finetune import content_metrics
from recsys_core.pipeline.train import load_interactions
from recsys_core.storage import Lake

KEEP = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
# the tiny size the tests run (tests/test_benchmarks.py)
TINY_ARGS = ["--synthetic", "3000", "--seeds", "42", "--pairs", "64", "--validation-pairs", "16"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,1,2", help="fine-tuning seeds, comma-separated")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--holdout", type=float, default=0.2, help="share of items held out")
    parser.add_argument("--pairs", type=int, default=None, help="training pairs per run")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default=None, help="base model (default MiniLM)")
    parser.add_argument("--validation-pairs", type=int, default=None)
    parser.add_argument(
        "--synthetic", type=int, default=0,
        help="a generated log of this many events instead of MovieLens-100K",
    )  # fmt: skip
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:  # the bundled ML-100K, as the pipeline stores it
        lake = Lake(Path(tmp) / "lake")
        source = SourceSpec()
        if args.synthetic:
            config = SynthConfig.sized(args.synthetic, min_words=5, max_words=30)
            events, items = write_synthetic(config, Path(tmp) / "source")
            source = SourceSpec(events=(str(events),), items=str(items))
        ingest(RunContext.of(lake.root), source)
        data = load_interactions(lake)
        items = lake.read("items", ["item_id", "text"])
    text_of = dict(zip(items["item_id"], items["text"], strict=True))
    texts = [text_of.get(i, "") for i in data.items.ids.to_list()]
    split = cold_items(data, args.holdout, seed=args.split_seed)

    base = ItemTextEncoder(args.encoder, device=args.device)
    base_metrics = content_metrics(base.encode(texts).embeddings, split)
    config = FinetuneConfig()
    changes = {"pairs": args.pairs, "learning_rate": args.learning_rate,
               "validation_pairs": args.validation_pairs}  # fmt: skip
    config = replace(config, **{k: v for k, v in changes.items() if v is not None})

    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        run_config = replace(config, seed=seed)
        start = time.perf_counter()
        encoder = ItemTextEncoder(args.encoder, max_length=run_config.max_length,
                                  device=args.device)  # fmt: skip
        pairs = cooccurrence_pairs(split.train, run_config)
        epochs, before = finetune(encoder, texts, pairs, run_config)
        seconds = time.perf_counter() - start
        encoder.max_length = base.max_length  # encode as the pipeline does
        metrics = content_metrics(encoder.encode(texts).embeddings, split)
        runs.append(
            {
                "seed": seed,
                **{k: round(metrics[k], 4) for k in KEEP},
                "finetune_seconds": round(seconds, 1),
                "steps": int(epochs[-1]["steps"]),
                "val_loss": [round(before["val_loss"], 3), round(epochs[-1]["val_loss"], 3)],
            }
        )
    mean = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in KEEP}
    print(
        json.dumps(
            {
                "benchmark": "finetune-cold-start",
                "dataset": f"synthetic-{args.synthetic}" if args.synthetic else "ml-100k",
                "protocol": "cold_items",
                "holdout_fraction": args.holdout,
                "split_seed": args.split_seed,
                "cold_items": int(split.candidates.sum()),
                "test_users": len(split.test_users),
                "train_events": len(split.train),
                "base_encoder": base.encoder_id,
                "config": {k: v for k, v in asdict(config).items() if k != "seed"},
                "base": {k: round(base_metrics[k], 4) for k in KEEP},
                "finetuned": runs,
                "finetuned_mean": mean,
                "delta_mean": {k: round(mean[k] - base_metrics[k], 4) for k in KEEP},
                "seeds_better_recall@20": sum(
                    r["recall@20"] > base_metrics["recall@20"] for r in runs
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
