"""Accuracy of every model on every evaluation protocol, on MovieLens-100K.

All ratings count as implicit interactions; top-10/20 with full ranking over the catalog,
seen items excluded, no sampled negatives. Every model sees the same splits (seeded), and
the `implicit` library's ALS with its defaults and plain EASE (lambda 500) run side by side
as references. Training time is wall time on this machine (threads: torch's default).

Prints a table per protocol, the checks the project promises, then one JSON line.

    python benchmarks/accuracy.py                      # everything (tens of minutes on 2 cores)
    python benchmarks/accuracy.py --quick              # cheap models only, a few minutes
    python benchmarks/accuracy.py --protocols user_random --models ease,blend
    python benchmarks/accuracy.py --quick --seeds 0,1,2,3,4   # mean over seeds (and spread)
    python benchmarks/accuracy.py --synthetic 3000 --quick    # a generated log, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.data.splits import make_split
from recsys_core.data.synth import SynthConfig, write_synthetic
from recsys_core.evaluation import evaluate
from recsys_core.models import FitOptions, TrainingData, create, registered
from recsys_core.models.blend import DEFAULT_MEMBERS
from recsys_core.pipeline import encode_items, ingest
from recsys_core.pipeline.encode import embedding_matrix, encoder_id
from recsys_core.pipeline.train import load_interactions
from recsys_core.registry.versions import config_key
from recsys_core.settings import DEFAULT_MODELS

PROTOCOLS = ("global_temporal", "user_temporal", "leave_one_out", "user_random", "cold_items")
# label -> model spec: the references, every registered model with its defaults, variants
REFERENCES = {
    "popularity": "popularity",
    "ease (lambda 500)": "ease(reg=500)",
    "implicit ALS (defaults)": "als(factors=100, regularization=0.01, alpha=1.0, iterations=15)",
}
VARIANTS = {
    "ease recency": "ease(history_half_life=5)",
    "ease text+window": "ease(text_weight=30, window=5, window_weight=0.7)",
    "sasrec augmented": 'sasrec(augment="crop,mask,reorder")',
}


def _same(a: str, b: str) -> bool:
    first, second = create(a), create(b)
    return first.name == second.name and first.params() == second.params()


MODELS = {
    **REFERENCES,
    **{
        name: name
        for name in sorted(registered())
        if not any(_same(name, spec) for spec in REFERENCES.values())
    },
    **VARIANTS,
}
# trained by gradient descent in torch: minutes each on a CPU, left out by --quick
HEAVY = {label for label, spec in MODELS.items() if "cuda" in create(spec).capabilities.devices}
GOALS = {  # protocol -> (metric, threshold) for what the nightly publishes
    "user_random": ("ndcg@10", 0.50),
    "user_temporal": ("ndcg@10", 0.21),
}
# the tiny size the tests run (tests/test_benchmarks.py)
TINY_ARGS = ["--synthetic", "3000", "--quick", "--protocols", "user_temporal",
             "--models", "popularity,ease (lambda 500)"]  # fmt: skip
COLD_GOAL = 3.0  # text-capable models: recall@20 over held-out items vs a random ranking


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="a data directory with ML-100K ingested and encoded")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--models", default=None, help="comma-separated labels of MODELS")
    parser.add_argument("--quick", action="store_true", help="skip the trained neural models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds; figures are means over them (splits and models reseeded), "
        "with the spread of NDCG@10 (overrides --seed)",
    )
    parser.add_argument(
        "--synthetic", type=int, default=0,
        help="a generated log of this many events instead of MovieLens-100K",
    )  # fmt: skip
    args = parser.parse_args()
    labels = args.models.split(",") if args.models else list(MODELS)
    if args.quick:
        labels = [m for m in labels if m not in HEAVY]
    with tempfile.TemporaryDirectory() as tmp:
        context = RunContext.of(args.data_dir or Path(tmp) / "lake")
        lake = context.lake
        if not lake.exists("events"):
            source = SourceSpec()
            if args.synthetic:
                config = SynthConfig.sized(args.synthetic)
                events, items = write_synthetic(config, Path(tmp) / "source")
                source = SourceSpec(events=(str(events),), items=str(items))
            ingest(context, source)
        encode_items(context)
        data = load_interactions(lake)
        embeddings = embedding_matrix(lake, data.items, encoder_id(context))
    results: dict[str, dict[str, dict]] = {}
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    for protocol in args.protocols.split(","):
        runs: dict[str, list[dict]] = {label: [] for label in labels}
        for seed in seeds:
            split = make_split(data, protocol, seed=seed)
            options = FitOptions(device="cpu", seed=seed, validation_protocol=protocol)
            n_candidates = data.n_items if split.candidates is None else int(split.candidates.sum())
            for label in labels:
                model = create(MODELS[label])
                start = time.perf_counter()
                model.fit(TrainingData(split.train, embeddings), options)
                seconds = time.perf_counter() - start
                metrics = evaluate(model, split, (10, 20), item_embeddings=embeddings)
                runs[label].append({**metrics, "fit_s": seconds, "text": model.uses_text})
                print(
                    f"{protocol:<16} {label:<24} seed={seed} ndcg@10={metrics['ndcg@10']:.4f} "
                    f"recall@20={metrics['recall@20']:.4f} fit={seconds:.1f}s",
                    flush=True,
                )
        results[protocol] = {label: _mean(rows) for label, rows in runs.items()}
        random_recall = 20 / n_candidates  # a random ranking's expected recall@20
        results[protocol]["random"] = {"recall@20": round(random_recall, 4)}
    print()
    for protocol, rows in results.items():
        print_table(protocol, rows)
    summary = checks(results)
    for line in summary["lines"]:
        print(line)
    print(
        json.dumps(
            {
                "benchmark": "accuracy-synthetic" if args.synthetic else "accuracy-ml100k",
                "events": len(data),
                "users": data.n_users,
                "items": data.n_items,
                "seeds": seeds,
                "nightly_candidates": list(DEFAULT_MODELS),
                "blend_members": list(DEFAULT_MEMBERS),
                "results": {
                    p: {m: {k: v for k, v in r.items() if k in JSON_KEYS} for m, r in rows.items()}
                    for p, rows in results.items()
                },
                "checks": summary["checks"],
            }
        )
    )


def _mean(rows: list[dict]) -> dict:
    """Per-seed metrics -> their means (rounded), and the spread of NDCG@10 over seeds."""
    out = {
        k: round(statistics.fmean(r[k] for r in rows), 4 if k != "fit_s" else 1)
        for k in rows[0]
        if k not in ("users", "text")
    }
    out["text"] = rows[0]["text"]
    if len(rows) > 1:
        out["ndcg@10_sd"] = round(statistics.stdev(r["ndcg@10"] for r in rows), 4)
    return out


JSON_KEYS = ("ndcg@10", "ndcg@10_sd", "recall@10", "recall@20", "map@10", "mrr@10", "hr@10",
             "coverage@10", "novelty@10", "popularity@10", "diversity@10", "fit_s")  # fmt: skip
TABLE = ("ndcg@10", "recall@10", "recall@20", "map@10", "mrr@10", "coverage@10", "novelty@10",
         "diversity@10")  # fmt: skip


def print_table(protocol: str, rows: dict[str, dict]) -> None:
    print(f"== {protocol}")
    spread = any("ndcg@10_sd" in r for r in rows.values())  # several seeds: means, and sd
    columns = ("ndcg@10", "ndcg@10_sd", *TABLE[1:]) if spread else TABLE
    print(f"{'model':<26}" + "".join(f"{m:>13}" for m in columns) + f"{'fit s':>9}")
    for label, r in rows.items():
        if label == "random":
            recall_at = columns.index("recall@20")
            print(f"{'random (expected)':<26}{'':>{13 * recall_at}}{r['recall@20']:>13.4f}")
            continue
        values = "".join(f"{r.get(m, float('nan')):>13.4f}" for m in columns)
        print(f"{label:<26}{values}{r['fit_s']:>9.1f}")
    print()


def published(rows: dict[str, dict], metric: str = "ndcg@10") -> str:
    """The nightly's pick among its default candidates, by the selection metric."""
    nightly = {_key(spec) for spec in DEFAULT_MODELS}
    pool = {
        label: r for label, r in rows.items() if label in MODELS and _key(MODELS[label]) in nightly
    }
    return max(pool, key=lambda label: pool[label][metric]) if pool else ""


def _key(spec: str) -> str:
    model = create(spec)
    return config_key(model.name, model.params())


def checks(results: dict[str, dict[str, dict]]) -> dict:
    out, lines = {}, ["== checks"]
    for protocol, (metric, goal) in GOALS.items():
        if protocol not in results:
            continue
        pick = published(results[protocol], metric)
        if not pick:
            continue
        value = results[protocol][pick][metric]
        ease = results[protocol].get("ease (lambda 500)", {}).get(metric)
        # the gain over the reference on the very same splits
        vs_ease = round(value / ease, 4) if ease else None
        out[protocol] = {"published": pick, metric: value, "goal": goal, "met": value >= goal,
                         "ease": ease, "vs_ease": vs_ease}  # fmt: skip
        ratio = f", {vs_ease:.3f}x EASE" if vs_ease else ""
        lines.append(
            f"{protocol}: published {pick} {metric}={value:.4f} (goal >= {goal}, EASE {ease}"
            f"{ratio}) -> {'met' if value >= goal else 'NOT met'}"
        )
    if "cold_items" in results:
        rows = results["cold_items"]
        random = rows["random"]["recall@20"]
        ratios = {
            label: round(r["recall@20"] / random, 2)
            for label, r in rows.items()
            if label != "random" and r.get("text")
        }
        out["cold_items"] = {
            "random_recall@20": random,
            "ratio": ratios,
            "goal": COLD_GOAL,
            "met": all(v >= COLD_GOAL for v in ratios.values()),
        }
        for label, ratio in ratios.items():
            lines.append(
                f"cold_items: {label} recall@20 = {ratio}x random "
                f"-> {'met' if ratio >= COLD_GOAL else 'NOT met'}"
            )
    if "sasrec" in results.get("user_temporal", {}):
        seconds = results["user_temporal"]["sasrec"]["fit_s"]
        out["sasrec_fit_s"] = seconds
        lines.append(f"sasrec fit on user_temporal: {seconds:.0f}s (goal < 180 s on 2 cores)")
    return {"checks": out, "lines": lines}


if __name__ == "__main__":
    main()
