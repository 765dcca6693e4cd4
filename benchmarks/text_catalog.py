"""A real catalog with real text: every model, the default nightly and simple peers on one split.

Takes any folder in the generic format (`events.*` and `items.*`; Amazon Office Products is the
reference) and, per protocol and seed, on the same split in one process:

- the default nightly: the pipeline's own stages (ingest, encode, train, recommend) run with
  their defaults on the training part into a temporary data directory; its published
  `recommendations` table is scored against the held-out items;
- every registered model with its default config, and the nightly's default candidates (as its
  train report lists them, so candidates that adapt to the data are measured as they ran);
- peers: EASE over a lambda grid (chosen on a further held-out last item of the training part),
  implicit ALS (64 factors, the library's other defaults), popularity, text alone (cosine of
  item text vectors to the user's last item), and EASE (lambda 50) + 2 x that cosine, each
  standardized per user over unseen items.

Protocols: `leave_one_out` (each user's last item is the test) and `cold_items` (a random 10% of
items held out of training entirely, ranked among the cold items only, as
`recsys_core.data.splits.cold_items` defines it; a random ranking is the floor). Ranking is over
every candidate item, each user's training items excluded (`recsys_core.ranking.top_k`);
metrics are the project's (`recsys_core.evaluation`): NDCG@10, Recall@10, MRR@10, and NDCG@10 on
the long tail (test items in the less popular half of the catalog by training users).

The query task (leave_one_out): each test user's query is built from the held-out item's own
text, never its title: its most specific category (`category`), or its brand and that category
(`brand+category`). The nightly's champion ranks with the query blended in
(`recsys_core.ranking.query`) at weight 0 (the model alone), 1 (the text alone) and the default.

Prints a table per protocol and one JSON line of figures.

    python benchmarks/text_catalog.py ../shared/datasets/amazon-office           # both protocols
    python benchmarks/text_catalog.py DIR --seeds 0,1 --protocols leave_one_out
    python benchmarks/text_catalog.py DIR --encoder /path/to/all-mpnet-base-v2   # any HF folder
    python benchmarks/text_catalog.py DIR --finetune        # also with a fine-tuned encoder
    python benchmarks/text_catalog.py --tiny                # generated data, tiny encoder (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys_core.context import RunContext
from recsys_core.data.interactions import Interactions
from recsys_core.data.sources import SourceSpec
from recsys_core.data.splits import Split, make_split
from recsys_core.evaluation import ranking_metrics, relevance_matrix
from recsys_core.models import FitOptions, Recommender, TrainingData, create, registered
from recsys_core.models.base import history_rows
from recsys_core.pipeline import encode_items, ingest, recommend, train
from recsys_core.pipeline.encode import embedding_matrix, encoder_id
from recsys_core.pipeline.train import load_interactions
from recsys_core.ranking import QueryBlend, encode_queries, top_k
from recsys_core.ranking.topk import topk_deterministic
from recsys_core.registry.versions import config_key
from recsys_core.settings import Settings

# the tiny size the tests run (tests/test_benchmarks.py)
TINY_ARGS = ["--tiny"]
PROTOCOLS = ("leave_one_out", "cold_items")
K = 10
EASE_GRID = (10.0, 50.0, 100.0, 250.0, 500.0)
FUSION_REG, FUSION_TEXT = 50.0, 2.0  # EASE lambda and weight of the text z-score in the fusion
ALS_PEER = "als(factors=64, regularization=0.01, alpha=1.0, iterations=15)"
QUERY_KINDS = ("category", "brand+category")
TABLE = ("ndcg@10", "recall@10", "mrr@10", "tail_ndcg@10")
GOALS = {
    "nightly_vs_best_peer": 1.10,
    "tail_vs_ease": 1.5,
    "cold_vs_random": 5.0,
    "cold_vs_content": 1.3,
    "query_blend_vs_both": 1.10,
}


# -- data --------------------------------------------------------------------------------------
@dataclass
class Catalog:
    """The folder ingested and encoded once: what every split and model reads."""

    events: Path
    items: Path
    lake_dir: Path
    data: Interactions
    embeddings: torch.Tensor
    encoder: str | None  # the --encoder source (None = bundled MiniLM)
    encoder_id: str
    encode_seconds: float
    meta: pl.DataFrame  # item_id, text, categories, brand (aligned with data.items)


def find_file(folder: Path, stem: str) -> Path:
    """The one `stem.*` file (csv, jsonl, parquet, compressed or not) of a generic folder."""
    found = sorted(p for p in folder.glob(f"{stem}.*") if p.suffix != ".md")
    if not found:
        raise SystemExit(f"{folder}: no {stem}.* file (the generic format: events.*, items.*)")
    return found[0]


def load_catalog(folder: Path, encoder: str | None, work: Path) -> Catalog:
    """Ingest and encode `folder` with the pipeline's own stages into `work/lake`."""
    events, items = find_file(folder, "events"), find_file(folder, "items")
    context = RunContext.of(work / "lake", encoder=encoder)
    ingest(context, SourceSpec(events=(str(events),), items=str(items)))
    start = time.perf_counter()
    encode_items(context)
    seconds = time.perf_counter() - start
    lake = context.lake
    data = load_interactions(lake)
    identity = encoder_id(context)
    embeddings = embedding_matrix(lake, data.items, identity)
    if embeddings is None:
        raise SystemExit(f"{items}: no item has text to encode")
    stored = lake.read("items", ["item_id", "text", "categories", "attributes"])
    brand = (
        stored["attributes"]
        .list.eval(pl.element().filter(pl.element().struct.field("name") == "brand"))
        .list.first()
        .struct.field("value")
    )
    meta = pl.DataFrame({"item_id": data.items.ids}).join(
        stored.select("item_id", "text", "categories", brand.alias("brand")),
        on="item_id",
        how="left",
        maintain_order="left",
    )
    return Catalog(events, items, lake.root, data, embeddings, encoder, identity, seconds, meta)


def tiny_source(folder: Path) -> Path:
    """A generated catalog in the generic format: 60 users, 40 items in 4 taste clusters."""
    from recsys_core.data.synth import SynthConfig, write_synthetic

    config = SynthConfig(users=60, items=40, events=1500, clusters=4, max_words=30, seed=3)
    write_synthetic(config, folder)
    return folder


def tiny_encoder(folder: Path) -> Path:
    """A 2-layer, 32-wide random BERT with the bundled tokenizer: encodes in milliseconds."""
    from transformers import BertConfig, BertModel

    from recsys_core.encoders.item_text_encoder import default_encoder_path

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (default_encoder_path() / name).exists():
            shutil.copy(default_encoder_path() / name, folder / name)
    return folder


# -- one split ---------------------------------------------------------------------------------
class Judge:
    """Ranks and scores every method on one split: the same users, exclusions and metrics."""

    def __init__(self, split: Split, embeddings: torch.Tensor):
        self.split = split
        self.embeddings = embeddings
        self.users = split.test_users
        self.histories = split.train.histories(self.users)
        n_users, n_items = split.train.n_users, split.train.n_items
        self.relevant = relevance_matrix(split.test, self.users, n_users, n_items)
        self.blocked = None if split.candidates is None else ~split.candidates
        # never ranked: the user's training items, and items outside the candidates
        self.hidden = torch.zeros(len(self.users), n_items, dtype=torch.bool)
        if len(self.histories.items):
            self.hidden[history_rows(self.histories), torch.from_numpy(self.histories.items)] = 1
        if self.blocked is not None:
            self.hidden |= torch.from_numpy(self.blocked)
        # the long tail: the less popular half of the catalog by training users
        counts = split.train.item_counts()
        order = np.argsort(counts, kind="stable")
        self.tail = np.zeros(n_items, dtype=bool)
        self.tail[order[: n_items // 2]] = True
        if split.candidates is not None:  # every cold item has no training users: no tail
            self.tail[:] = False
        tail_relevant = self.relevant.multiply(self.tail[None, :]).tocsr()
        tail_relevant.eliminate_zeros()  # multiply keeps the non-tail entries as stored zeros
        self.tail_rows = np.flatnonzero(np.diff(tail_relevant.indptr) > 0)
        self.tail_relevant = tail_relevant[self.tail_rows]

    def rank_model(self, model: Recommender, query: QueryBlend | None = None) -> np.ndarray:
        """(U, K) top items of a fitted model through the project's ranker."""
        return top_k(model, self.histories, K, exclude_items=self.blocked, query=query).items

    def rank_scores(self, scores: torch.Tensor) -> np.ndarray:
        """(U, K) top items of a (U, I) score matrix, hidden items excluded, ties to lower index."""
        return topk_deterministic(scores.masked_fill(self.hidden, -torch.inf), K)[1].numpy()

    def metrics(self, ranked: np.ndarray) -> dict[str, float]:
        out = ranking_metrics(ranked, self.relevant, (K,))
        found = {k: out[f"{k}@{K}"] for k in ("ndcg", "recall", "mrr")}
        row = {f"{k}@{K}": v for k, v in found.items()}
        if len(self.tail_rows):
            tail = ranking_metrics(ranked[self.tail_rows], self.tail_relevant, (K,))
            row[f"tail_ndcg@{K}"] = tail[f"ndcg@{K}"]
        return row

    def random_metrics(self) -> dict[str, float]:
        """Expected metrics of a uniformly random ranking of each user's candidates."""
        n_rel = np.diff(self.relevant.indptr).astype(np.float64)
        n_cand = (~self.hidden).sum(1).numpy().astype(np.float64)
        discounts = 1.0 / np.log2(np.arange(2, K + 2))
        slots = np.minimum(n_cand, K).astype(int)
        dcg = n_rel / n_cand * np.cumsum(discounts)[slots - 1]
        ideal = np.cumsum(discounts)[np.minimum(n_rel, K).astype(int) - 1]
        recall = slots / n_cand
        # MRR: sum over ranks r <= K of P(first hit at r) / r, for r relevant among n
        mrr = np.zeros_like(n_rel)
        miss = np.ones_like(n_rel)
        for r in range(1, K + 1):
            left = n_cand - (r - 1)
            hit = np.where(left > 0, n_rel / np.maximum(left, 1), 0.0)
            mrr += miss * hit / r
            miss *= 1.0 - hit
        row = {f"ndcg@{K}": dcg / ideal, f"recall@{K}": recall, f"mrr@{K}": mrr}
        out = {k: float(v.mean()) for k, v in row.items()}
        if len(self.tail_rows):
            out[f"tail_ndcg@{K}"] = float((dcg / ideal)[self.tail_rows].mean())
        return out

    def last_item_cosine(self) -> torch.Tensor:
        """(U, I) cosine of every item's text vector to the user's latest training item."""
        last = self.histories.items[self.histories.indptr[1:] - 1]  # every test user has one
        vectors = torch.nn.functional.normalize(self.embeddings.float(), dim=-1)
        return vectors[torch.from_numpy(last)] @ vectors.T

    def standardized(self, scores: torch.Tensor) -> torch.Tensor:
        """Per-user z-scores over the items the user may be recommended."""
        shown = (~self.hidden).float()
        count = shown.sum(1, keepdim=True).clamp_min(1)
        mean = (scores * shown).sum(1, keepdim=True) / count
        var = (((scores - mean) * shown) ** 2).sum(1, keepdim=True) / count
        std = var.sqrt()
        return (scores - mean) / torch.where(std > 0, std, 1.0)


def fit(
    spec: str,
    train_part: Interactions,
    catalog: Catalog,
    seed: int,
    protocol: str,
    embeddings: torch.Tensor | None = None,
) -> tuple[Recommender, float]:
    model = create(spec)
    vectors = catalog.embeddings if embeddings is None else embeddings
    options = FitOptions(device="cpu", seed=seed, validation_protocol=protocol)
    start = time.perf_counter()
    model.fit(TrainingData(train_part, vectors), options)
    return model, time.perf_counter() - start


def spec_of(name: str, params: dict) -> str:
    from recsys_core.models.registry import format_spec

    return format_spec(name, params)


def key_of(spec: str) -> str:
    model = create(spec)
    return config_key(model.name, model.params())


# -- the nightly -------------------------------------------------------------------------------
def run_nightly(
    catalog: Catalog, split: Split, seed: int, work: Path, protocol: str, reuse_embeddings: bool
) -> dict:
    """The default nightly's stages on the training part; returns its report and the table."""
    # a folder per run: MLflow keeps its store's connection for the process's lifetime
    folder = work / f"nightly-{split.protocol}-{seed}"
    folder.mkdir(parents=True)
    train_part = split.train
    frame = train_part.frame
    events = pl.DataFrame(
        {
            "user_id": train_part.users.lookup(frame["user_index"].to_numpy()),
            "item_id": train_part.items.lookup(frame["item_index"].to_numpy()),
            "timestamp": frame["timestamp"],
            "value": frame["value"],
        }
    )
    events_file = folder / "events.csv"
    events.write_csv(events_file)
    context = RunContext.of(folder / "lake", protocol=protocol, seed=seed, encoder=catalog.encoder)
    if reuse_embeddings:  # the same catalog and encoder: nothing left to encode
        shutil.copytree(catalog.lake_dir / "item_embeddings", folder / "lake" / "item_embeddings")
    seconds = {}
    start = time.perf_counter()
    ingest(context, SourceSpec(events=(str(events_file),), items=str(catalog.items)))
    seconds["ingest"] = time.perf_counter() - start
    for name, stage in (("encode", encode_items), ("train", train), ("recommend", recommend)):
        start = time.perf_counter()
        report = stage(context)
        seconds[name] = time.perf_counter() - start
        if name == "train":
            trained = report
    table = context.lake.read("recommendations", ["user_id", "rank", "item_id"])
    champion = next(c for c in trained.candidates if c.role == "champion")
    return {
        "table": table,
        "candidates": [(c.model, c.params, c.metrics.get("ndcg@10")) for c in trained.candidates],
        "champion": spec_of(champion.model, champion.params),
        "champion_label": trained.champion,
        "left_out": trained.left_out,
        "seconds": seconds,
    }


def table_ranked(table: pl.DataFrame, judge: Judge, data: Interactions) -> np.ndarray:
    """(U, K) published items of the judge's users, best first; -1 where the table has none."""
    ranked = np.full((len(judge.users), K), -1, dtype=np.int64)
    top = table.filter(pl.col("rank") <= K)
    users = data.users.index(top["user_id"])
    row_of = np.full(data.n_users, -1, dtype=np.int64)
    row_of[judge.users] = np.arange(len(judge.users))
    rows = row_of[np.maximum(users, 0)]
    keep = (users >= 0) & (rows >= 0)
    items = data.items.index(top["item_id"])
    ranked[rows[keep], top["rank"].to_numpy()[keep] - 1] = items[keep]
    return ranked


# -- peers -------------------------------------------------------------------------------------
def ease_on_validation(
    judge: Judge, catalog: Catalog, seed: int, protocol: str
) -> tuple[float, dict[float, float]]:
    """The EASE lambda of the grid with the best NDCG@10 on a further held-out last item."""
    inner = make_split(judge.split.train, "leave_one_out", seed=seed)
    inner_judge = Judge(inner, catalog.embeddings)
    found = {}
    for reg in EASE_GRID:
        model, _ = fit(f"ease(reg={reg})", inner.train, catalog, seed, protocol)
        found[reg] = inner_judge.metrics(inner_judge.rank_model(model))[f"ndcg@{K}"]
    return max(found, key=found.get), found


def peers(
    judge: Judge,
    catalog: Catalog,
    seed: int,
    protocol: str,
    results: dict,
    embeddings: torch.Tensor | None = None,
    suffix: str = "",
) -> None:
    """Fit and score the peers into `results` (label -> metrics with fit_s)."""
    train_part = judge.split.train
    if not suffix:
        start = time.perf_counter()
        reg, _ = ease_on_validation(judge, catalog, seed, protocol)
        tuning = time.perf_counter() - start
        model, seconds = fit(f"ease(reg={reg})", train_part, catalog, seed, protocol)
        results["peer: EASE (lambda on validation)"] = {
            **judge.metrics(judge.rank_model(model)),
            "fit_s": seconds + tuning,
            "lambda": reg,
        }
        for label, spec in (
            ("peer: implicit ALS (64)", ALS_PEER),
            ("peer: popularity", "popularity"),
        ):
            model, seconds = fit(spec, train_part, catalog, seed, protocol)
            results[label] = {**judge.metrics(judge.rank_model(model)), "fit_s": seconds}
    saved = judge.embeddings
    if embeddings is not None:
        judge.embeddings = embeddings
    start = time.perf_counter()
    cosine = judge.last_item_cosine()
    results[f"peer: text, cosine to last item{suffix}"] = {
        **judge.metrics(judge.rank_scores(cosine)),
        "fit_s": time.perf_counter() - start,
        "text": True,
    }
    ease, seconds = fit(f"ease(reg={FUSION_REG})", train_part, catalog, seed, protocol)
    start = time.perf_counter()
    fused = judge.standardized(ease.score(judge.histories).float()) + FUSION_TEXT * (
        judge.standardized(cosine)
    )
    results[f"peer: EASE(50) + 2 x text z{suffix}"] = {
        **judge.metrics(judge.rank_scores(fused)),
        "fit_s": seconds + time.perf_counter() - start,
        "text": True,
    }
    judge.embeddings = saved


# -- the query task ----------------------------------------------------------------------------
def queries(judge: Judge, catalog: Catalog, kind: str) -> list[str | None]:
    """Each test user's query from their held-out item's category (and brand); never its title.

    A user with several held-out items gets the query of the lowest-index one.
    """
    first = judge.relevant.indices[judge.relevant.indptr[:-1]]
    meta = catalog.meta.select(pl.all().gather(first.tolist()))
    out: list[str | None] = []
    for categories, brand in zip(
        meta["categories"].to_list(), meta["brand"].to_list(), strict=True
    ):
        category = (categories or [""])[-1].strip() if categories else ""
        if kind == "brand+category":
            text = " ".join(part for part in ((brand or "").strip(), category) if part)
        else:
            text = category
        out.append(text or None)
    return out


def query_task(
    judge: Judge, catalog: Catalog, champion: Recommender, weights: dict[str, float]
) -> dict[str, dict]:
    """NDCG@10 of the champion blended with each query kind at each weight (users with a query)."""
    from recsys_core.encoders import ItemTextEncoder

    encoder = ItemTextEncoder(catalog.encoder, device="cpu")
    if encoder.encoder_id != catalog.encoder_id:
        raise SystemExit(f"query encoder {encoder.encoder_id} is not {catalog.encoder_id}")
    out = {}
    for kind in QUERY_KINDS:
        texts = queries(judge, catalog, kind)
        distinct = sorted({t for t in texts if t is not None})  # many users share a query
        position = {text: i for i, text in enumerate(distinct)}
        encoded = encode_queries(encoder, distinct)
        vectors = torch.zeros(len(texts), encoded.shape[1])
        given = [i for i, t in enumerate(texts) if t is not None]
        vectors[given] = encoded[[position[texts[i]] for i in given]]
        has = np.flatnonzero([t is not None for t in texts])
        if not len(has):
            continue
        row = {"users": len(has), "example": texts[has[0]]}
        for label, weight in weights.items():
            blend = QueryBlend(vectors, catalog.embeddings, weight)
            ranked = judge.rank_model(champion, query=blend)[has]
            row[label] = ranking_metrics(ranked, judge.relevant[has], (K,))[f"ndcg@{K}"]
        out[kind] = row
    return out


# -- the run -----------------------------------------------------------------------------------
def model_specs(candidates: list[str], only: set[str] | None) -> dict[str, str]:
    """label -> spec: every registered model with its defaults, then the nightly's candidates
    that are not one of them."""
    specs = {name: name for name in sorted(registered())}
    known = {key_of(spec) for spec in specs.values()}
    for spec in candidates:
        if key_of(spec) not in known:
            specs[f"candidate: {spec}"] = spec
            known.add(key_of(spec))
    if only is not None:
        specs = {label: spec for label, spec in specs.items() if label in only or spec in only}
    return specs


def run_split(catalog: Catalog, protocol: str, seed: int, args, work: Path) -> dict:
    data = catalog.data
    split = make_split(data, protocol, seed=seed)
    judge = Judge(split, catalog.embeddings)
    results: dict[str, dict] = {}
    say = lambda line: print(f"[{protocol} seed={seed}] {line}", flush=True)  # noqa: E731
    say(
        f"{len(split.train)} training events, {len(judge.users)} test users, "
        f"{int((~judge.hidden[0]).sum()) if len(judge.users) else 0} candidates for the first"
    )

    nightly = None
    candidates = list(Settings().train.models)
    if not args.no_nightly:
        nightly = run_nightly(
            catalog,
            split,
            seed,
            work,
            args.nightly_protocol,
            reuse_embeddings=not args.nightly_encode,
        )
        candidates = [spec_of(m, p) for m, p, _ in nightly["candidates"]]
        seconds = sum(nightly["seconds"].values())
        say(
            f"nightly published {nightly['champion_label']} ({nightly['champion']}) in "
            f"{seconds:.0f}s {json.dumps({k: round(v, 1) for k, v in nightly['seconds'].items()})}"
        )
        if protocol != "cold_items":  # the table ranks every item: not a cold-items ranking
            ranked = table_ranked(nightly["table"], judge, data)
            results["nightly: published table"] = {**judge.metrics(ranked), "fit_s": seconds}
    candidate_keys = {key_of(spec) for spec in candidates}
    champion_key = key_of(nightly["champion"]) if nightly else None

    fitted: dict[str, Recommender] = {}
    for label, spec in model_specs(candidates, args.only).items():
        model, seconds = fit(spec, split.train, catalog, seed, protocol)
        key = key_of(spec)
        fitted[key] = model
        tags = ("default candidate" if key in candidate_keys else "") + (
            ", nightly champion" if key == champion_key else ""
        )
        results[label] = {
            **judge.metrics(judge.rank_model(model)),
            "fit_s": seconds,
            "text": model.uses_text,
            "tags": tags.strip(", "),
        }
        say(f"{label:<40} ndcg@10={results[label]['ndcg@10']:.4f} fit={seconds:.1f}s {tags}")
    if nightly and champion_key not in fitted:
        fitted[champion_key], _ = fit(nightly["champion"], split.train, catalog, seed, protocol)
    if nightly and protocol == "cold_items":
        results["nightly: champion config refit"] = {
            **judge.metrics(judge.rank_model(fitted[champion_key])),
            "fit_s": 0.0,
            "text": fitted[champion_key].uses_text,
        }

    if not args.no_peers:
        peers(judge, catalog, seed, protocol, results)
    results["random (expected)"] = {**judge.random_metrics(), "fit_s": 0.0}

    finetuned = None
    if args.finetune:
        finetuned = finetune_block(judge, catalog, split, seed, protocol, results, args.only)

    query = None
    if nightly and protocol == "leave_one_out" and not args.no_query:
        weights = {
            "w=0 (model)": 0.0,
            "w=1 (text)": 1.0,
            f"w={Settings().query.query_weight} (default)": Settings().query.query_weight,
        }
        query = query_task(judge, catalog, fitted[champion_key], weights)
        for kind, row in query.items():
            say(f"query {kind}: {json.dumps(row)}")
    return {
        "results": results,
        "nightly": _nightly_summary(nightly),
        "query": query,
        "finetune": finetuned,
        "test_users": len(judge.users),
        "tail_users": len(judge.tail_rows),
        "train_events": len(split.train),
    }


def _nightly_summary(nightly: dict | None) -> dict | None:
    if nightly is None:
        return None
    return {
        "champion": nightly["champion"],
        "published": nightly["champion_label"],
        "candidates": [
            {"spec": spec_of(m, p), "validation_ndcg@10": v} for m, p, v in nightly["candidates"]
        ],
        "left_out": nightly["left_out"],
        "seconds": {k: round(v, 1) for k, v in nightly["seconds"].items()},
    }


def finetune_block(
    judge: Judge,
    catalog: Catalog,
    split: Split,
    seed: int,
    protocol: str,
    results: dict,
    only: set[str] | None,
) -> dict:
    """Fine-tune the encoder on pairs from the training part, re-encode, re-run the text models."""
    from recsys_core.encoders import ItemTextEncoder
    from recsys_core.encoders.finetune import FinetuneConfig, cooccurrence_pairs, finetune

    config = replace(FinetuneConfig(), seed=seed)
    texts = catalog.meta["text"].fill_null("").to_list()
    start = time.perf_counter()
    encoder = ItemTextEncoder(catalog.encoder, max_length=config.max_length, device="cpu")
    pairs = cooccurrence_pairs(split.train, config)
    epochs, before = finetune(encoder, texts, pairs, config)
    tuned_seconds = time.perf_counter() - start
    encoder.max_length = Settings().embedding.encoder_max_length  # encode as the pipeline does
    vectors = torch.from_numpy(encoder.encode(texts).embeddings)
    for label, spec in model_specs([], only).items():
        model = create(spec)
        if not model.uses_text:
            continue
        model, seconds = fit(spec, split.train, catalog, seed, protocol, embeddings=vectors)
        results[f"{label} (fine-tuned encoder)"] = {
            **judge.metrics(judge.rank_model(model)),
            "fit_s": seconds,
            "text": True,
        }
    peers(
        judge, catalog, seed, protocol, results, embeddings=vectors, suffix=" (fine-tuned encoder)"
    )
    return {
        "seconds": round(tuned_seconds, 1),
        "pairs": len(pairs.train),
        "val_loss": [round(before["val_loss"], 3), round(epochs[-1]["val_loss"], 3)],
    }


def mean_over_seeds(runs: list[dict]) -> dict:
    """Per-label means over seeds (and the spread of NDCG@10), in the first run's order."""
    out = {}
    for label in runs[0]["results"]:
        rows = [r["results"][label] for r in runs if label in r["results"]]
        row = {}
        for key, value in rows[0].items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                row[key] = value
            else:
                row[key] = round(statistics.fmean(r[key] for r in rows), 4 if key != "fit_s" else 1)
        if len(rows) > 1:
            row["ndcg@10_sd"] = round(statistics.stdev(r["ndcg@10"] for r in rows), 4)
        out[label] = row
    return out


def mean_query(runs: list[dict]) -> dict | None:
    found = [r["query"] for r in runs if r.get("query")]
    if not found:
        return None
    out = {}
    for kind in found[0]:
        rows = [q[kind] for q in found if kind in q]
        out[kind] = {
            key: (
                round(statistics.fmean(r[key] for r in rows), 4)
                if isinstance(rows[0][key], float)
                else rows[0][key]
            )
            for key in rows[0]
        }
    return out


def print_table(protocol: str, rows: dict[str, dict]) -> None:
    print(f"== {protocol}")
    spread = any("ndcg@10_sd" in r for r in rows.values())
    columns = ("ndcg@10", "ndcg@10_sd", *TABLE[1:]) if spread else TABLE
    print(f"{'method':<52}" + "".join(f"{c:>13}" for c in columns) + f"{'fit s':>9}  notes")
    for label, r in rows.items():
        values = "".join(f"{r.get(c, float('nan')):>13.4f}" for c in columns)
        notes = ", ".join(
            part
            for part in (
                r.get("tags", ""),
                "text" if r.get("text") else "",
                f"lambda {r['lambda']:g}" if "lambda" in r else "",
            )
            if part
        )
        print(f"{label[:51]:<52}{values}{r.get('fit_s', 0.0):>9.1f}  {notes}")
    print()


def figures(results: dict[str, dict], queries_found: dict | None) -> dict:
    """The ratios the goals ask for (None where a part did not run)."""
    out: dict[str, float | str | None] = {}
    loo = results.get("leave_one_out", {})
    peers_found = {k: v for k, v in loo.items() if k.startswith("peer:") and "fine-tuned" not in k}
    nightly = loo.get("nightly: published table")
    if nightly and peers_found:
        best = max(peers_found, key=lambda k: peers_found[k]["ndcg@10"])
        out["best_peer"] = best
        out["nightly_ndcg@10"] = nightly["ndcg@10"]
        out["best_peer_ndcg@10"] = peers_found[best]["ndcg@10"]
        out["nightly_vs_best_peer"] = _ratio(nightly["ndcg@10"], peers_found[best]["ndcg@10"])
        ease = loo.get("peer: EASE (lambda on validation)", {}).get("tail_ndcg@10")
        out["tail_vs_ease"] = _ratio(nightly.get("tail_ndcg@10"), ease)
    cold = results.get("cold_items", {})
    if cold:
        random = cold["random (expected)"]["ndcg@10"]
        content = cold.get("content", {}).get("ndcg@10")
        pick = cold.get("nightly: champion config refit")
        if pick:
            out["cold_nightly_ndcg@10"] = pick["ndcg@10"]
            out["cold_vs_random"] = _ratio(pick["ndcg@10"], random)
            out["cold_vs_content"] = _ratio(pick["ndcg@10"], content)
        text = {k: v for k, v in cold.items() if v.get("text")}
        if text:
            best = max(text, key=lambda k: text[k]["ndcg@10"])
            out["cold_best_text_model"] = best
            out["cold_best_vs_random"] = _ratio(text[best]["ndcg@10"], random)
            out["cold_best_vs_content"] = _ratio(text[best]["ndcg@10"], content)
    if queries_found:
        for kind, row in queries_found.items():
            alone = [v for k, v in row.items() if k.startswith(("w=0 ", "w=1 "))]
            blend = [v for k, v in row.items() if k.endswith("(default)")]
            if alone and blend:
                out[f"query_{kind}_blend_vs_both"] = _ratio(blend[0], max(alone))
    out["goals"] = GOALS
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="events.* and items.* in the generic format")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="generate a tiny catalog and a tiny random encoder (seconds; CI)",
    )
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--seeds", default="0", help="comma-separated; figures are means")
    parser.add_argument(
        "--encoder",
        default=None,
        help="Hugging Face folder or id of the item text encoder (default: the "
        "bundled all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="only these labels or specs of registered models and candidates",
    )
    parser.add_argument(
        "--nightly-protocol",
        default="leave_one_out",
        help="RECSYS_PROTOCOL of the nightly run on the training part",
    )
    parser.add_argument(
        "--nightly-encode",
        action="store_true",
        help="let the nightly encode the catalog itself (default: it reuses the "
        "vectors already made by the same encoder)",
    )
    parser.add_argument("--no-nightly", action="store_true", help="skip the nightly run")
    parser.add_argument("--no-peers", action="store_true", help="skip the peers")
    parser.add_argument("--no-query", action="store_true", help="skip the query task")
    parser.add_argument(
        "--finetune",
        action="store_true",
        help="also fine-tune the encoder on the training part (recsys "
        "finetune-encoder's method) and re-run the text models with it",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if not args.folder and not args.tiny:
        parser.error("give a folder in the generic format, or --tiny")
    args.only = set(args.models.split(",")) if args.models else None
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    seeds = [int(s) for s in args.seeds.split(",")]
    protocols = args.protocols.split(",")

    with tempfile.TemporaryDirectory(prefix="text-catalog-") as tmp:
        work = Path(tmp)
        folder = Path(args.folder) if args.folder else tiny_source(work / "source")
        if args.tiny and args.encoder is None:
            args.encoder = str(tiny_encoder(work / "encoder"))
        catalog = load_catalog(folder, args.encoder, work)
        data = catalog.data
        print(
            f"{folder}: {len(data)} events, {data.n_users} users, {data.n_items} items; "
            f"encoder {catalog.encoder_id} ({catalog.encode_seconds:.1f}s, "
            f"{catalog.encode_seconds / data.n_items * 1000:.1f} ms/item)",
            flush=True,
        )
        runs = {p: [run_split(catalog, p, s, args, work) for s in seeds] for p in protocols}

    results = {p: mean_over_seeds(r) for p, r in runs.items()}
    query = mean_query(runs.get("leave_one_out", []))
    print()
    for protocol, rows in results.items():
        print_table(protocol, rows)
    if query:
        print("== query task (leave_one_out, NDCG@10 of the nightly's champion with the query)")
        for kind, row in query.items():
            print(f"{kind:<16} " + "  ".join(f"{k}={v}" for k, v in row.items()))
        print()
    found = figures(results, query)
    print(
        json.dumps(
            {
                "benchmark": "text-catalog",
                "data": str(folder) if args.folder else "tiny (generated)",
                "events": len(data),
                "users": data.n_users,
                "items": data.n_items,
                "encoder": catalog.encoder_id,
                "encode_seconds": round(catalog.encode_seconds, 1),
                "encode_ms_per_item": round(catalog.encode_seconds / data.n_items * 1000, 2),
                "seeds": seeds,
                "threads": torch.get_num_threads(),
                "test_users": {p: rs[0]["test_users"] for p, rs in runs.items()},
                "tail_users": {p: rs[0]["tail_users"] for p, rs in runs.items()},
                "nightly": {p: [r["nightly"] for r in rs] for p, rs in runs.items()},
                "finetune": {
                    p: [r["finetune"] for r in rs] for p, rs in runs.items() if rs[0]["finetune"]
                },
                "results": results,
                "query": query,
                "figures": found,
            }
        )
    )


if __name__ == "__main__":
    main()
