"""benchmarks/text_catalog.py: its tiny mode end to end, and the parts its figures rest on."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recsys_core.data.interactions import Interactions
from recsys_core.data.splits import make_split

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "text_catalog.py"


def _bench():
    if "text_catalog_bench" in sys.modules:
        return sys.modules["text_catalog_bench"]
    spec = importlib.util.spec_from_file_location("text_catalog_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


def _interactions(users: int = 40, items: int = 30, per_user: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = [
        (f"u{u}", f"i{i}", 1_600_000_000 + 60 * n)
        for u in range(users)
        for n, i in enumerate(rng.choice(items, size=per_user, replace=False))
    ]
    events = pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "timestamp": [r[2] for r in rows],
            "value": [1.0] * len(rows),
        }
    )
    return Interactions.from_events(events, pl.Series([f"i{i}" for i in range(items)]))


@pytest.mark.slow
def test_tiny_mode_prints_every_figure(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--threads", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["benchmark"] == "text-catalog"
    assert set(found["results"]) == {"leave_one_out", "cold_items"}
    loo, cold = found["results"]["leave_one_out"], found["results"]["cold_items"]
    # the published table, every registered model, the peers and the floor, on one split
    for label in (
        "nightly: published table",
        "popularity",
        "ease",
        "content",
        "blend",
        "peer: EASE (lambda on validation)",
        "peer: implicit ALS (64)",
        "peer: text, cosine to last item",
        "peer: EASE(50) + 2 x text z",
        "random (expected)",
    ):
        assert label in loo, label
        assert 0.0 <= loo[label]["ndcg@10"] <= 1.0
        assert loo[label]["recall@10"] >= loo[label]["ndcg@10"] - 1e-9  # one relevant item
    assert "tail_ndcg@10" in loo["ease"] and "tail_ndcg@10" not in cold["content"]
    assert loo["peer: EASE (lambda on validation)"]["lambda"] in (10, 50, 100, 250, 500)
    assert "nightly: champion config refit" in cold and "nightly: published table" not in cold
    figures = found["figures"]
    for key in ("nightly_vs_best_peer", "tail_vs_ease", "cold_vs_random", "cold_vs_content"):
        assert isinstance(figures[key], float), key
    expected = loo["nightly: published table"]["ndcg@10"] / figures["best_peer_ndcg@10"]
    assert figures["nightly_vs_best_peer"] == pytest.approx(expected, abs=1e-3)
    # generated items have categories: both query kinds ran at the three weights
    for kind in ("category", "brand+category"):
        row = found["query"][kind]
        assert row["users"] > 0 and {"w=0 (model)", "w=1 (text)"} <= row.keys()
        assert isinstance(figures[f"query_{kind}_blend_vs_both"], float)
    assert found["nightly"]["leave_one_out"][0]["champion"]


def test_random_floor_matches_random_rankings():
    """The expected metrics of a random ranking agree with many seeded random rankings."""
    bench = _bench()
    data = _interactions()
    for protocol in ("leave_one_out", "cold_items"):
        split = make_split(data, protocol, test_fraction=0.3 if protocol == "cold_items" else None)
        judge = bench.Judge(split, torch.ones(data.n_items, 4))
        generator = torch.Generator().manual_seed(0)
        draws = [
            judge.metrics(
                judge.rank_scores(torch.rand(len(judge.users), data.n_items, generator=generator))
            )
            for _ in range(400)
        ]
        expected = judge.random_metrics()
        for key in ("ndcg@10", "recall@10", "mrr@10"):
            simulated = float(np.mean([d[key] for d in draws]))
            assert simulated == pytest.approx(expected[key], rel=0.05, abs=0.003), (protocol, key)


def test_published_table_is_scored_by_rank_and_ids():
    """Table rows land at their rank for their user; users and items it lacks are misses."""
    bench = _bench()
    data = _interactions()
    split = make_split(data, "leave_one_out")
    judge = bench.Judge(split, torch.ones(data.n_items, 4))
    first = judge.users[0]
    user = data.users.lookup([first])[0]
    held_out = data.items.lookup([judge.relevant[0].indices[0]])[0]
    table = pl.DataFrame(
        {
            "user_id": [user, user, "nobody"],
            "rank": [2, 1, 1],
            "item_id": [held_out, "i-unknown", held_out],
        }
    )
    ranked = bench.table_ranked(table, judge, data)
    assert ranked[0, 1] == judge.relevant[0].indices[0] and ranked[0, 0] == -1
    assert (ranked[1:] == -1).all()
    ndcg = judge.metrics(ranked)["ndcg@10"]
    assert ndcg == pytest.approx((1 / np.log2(3)) / len(judge.users))


def test_query_text_is_the_held_out_items_category_and_brand_never_its_title():
    bench = _bench()
    data = _interactions(items=3, per_user=2, users=4)
    split = make_split(data, "leave_one_out")
    judge = bench.Judge(split, torch.ones(data.n_items, 4))
    meta = pl.DataFrame(
        {
            "item_id": data.items.ids,
            "text": ["Title: Secret Name A.", "Title: Secret Name B.", "Title: Secret Name C."],
            "categories": [["Office", "Paper", "Copy Paper"], ["Office", "Pens"], None],
            "brand": ["Acme", None, "Brandy"],
        }
    )
    catalog = bench.Catalog(
        Path("."), Path("."), Path("."), data, torch.ones(3, 4), None, "", 0.0, meta
    )
    held = judge.relevant.indices[judge.relevant.indptr[:-1]]
    by_item = {
        "category": {0: "Copy Paper", 1: "Pens", 2: None},
        "brand+category": {0: "Acme Copy Paper", 1: "Pens", 2: "Brandy"},
    }
    for kind, want in by_item.items():
        got = bench.queries(judge, catalog, kind)
        assert got == [want[int(i)] for i in held]
        assert not any(q and "Secret" in q for q in got)


def test_long_tail_users_are_those_whose_held_out_item_is_in_the_less_popular_half():
    bench = _bench()
    data = _interactions()
    split = make_split(data, "leave_one_out")
    judge = bench.Judge(split, torch.ones(data.n_items, 4))
    counts = split.train.item_counts()
    held = judge.relevant.indices[judge.relevant.indptr[:-1]]  # one held-out item per user
    tail = np.argsort(counts, kind="stable")[: data.n_items // 2]
    assert judge.tail_rows.tolist() == np.flatnonzero(np.isin(held, tail)).tolist()
    assert 0 < len(judge.tail_rows) < len(judge.users)
    # ranking every user's held-out item first: perfect on the tail users too
    ranked = np.full((len(judge.users), 10), -1)
    ranked[:, 0] = held
    assert judge.metrics(ranked)["tail_ndcg@10"] == pytest.approx(1.0)
