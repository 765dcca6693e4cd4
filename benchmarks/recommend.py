"""The recommend step's ranking loop for the default published model types, against a bare
matrix product of the same shape.

Models are built with random fitted state at the catalog size asked for (fitting them is
train's cost, not recommend's), in the shapes the default nightly publishes at 25M events:

- `itemknn`: sparse item-item weights (100 neighbours per item), a user's history row times
  the item x item matrix (what EASE and its sparse stand-in do);
- `als`: a factor model that folds every user in from their history (128 factors);
- `blend`: the default blend at that size: itemknn with and without a history half-life,
  `content` (384-dim text vectors) and `als`, all with non-zero weights;
- `blend_without_als`: the same without `als` (the blend when it tunes ALS's weight to 0);
- `blend_item_item`: the blend the default nightly published at 25M events, where the
  tuning gave `content` and `als` no weight: sparse EASE's 256 weights per item with and
  without a history half-life, and itemknn.

In a blend, the members with and without a history half-life share one fitted matrix, as
they do in a night (one fit; the bundle holds it once).

Each is ranked with `recsys_core.ranking.top_k` exactly as the recommend stage calls it (top
20, seen items excluded, reasons explained), on random heavy-tailed histories. The bound it is
compared with is a bare `torch.matmul` of (users x 128) by (128 x items) into a reused buffer,
then `torch.topk` of each chunk: the scores of the same (users x items) shape, on the same
threads, timed in the same process, interleaved model by model so both see the same load.

Prints one JSON line: per model the ranking seconds and `ratio` (ranking / bound; 1 = as fast
as the bare product), plus the bound's seconds.

    python benchmarks/recommend.py                                  # 20,000 x 62,500, minutes
    python benchmarks/recommend.py --users 2000 --items 12500 --models itemknn,als
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import time

import numpy as np
import scipy.sparse as sp
import torch

from recsys_core.data.interactions import UserHistories
from recsys_core.models.als import ALS
from recsys_core.models.base import Recommender
from recsys_core.models.blend import Blend, BlendConfig
from recsys_core.models.content import Content
from recsys_core.models.itemknn import ItemKNN
from recsys_core.models.registry import create
from recsys_core.ranking import chunk_size, top_k

# the tiny size the tests run (tests/test_benchmarks.py)
TINY_ARGS = ["--users", "300", "--items", "2000", "--text-dim", "32", "--factors", "16"]
MODELS = ("itemknn", "als", "blend", "blend_without_als", "blend_item_item")
BLEND_MEMBERS = (
    "itemknn(history_half_life=5)",
    "itemknn",
    "content",
    "als(factors={factors}, regularization=30, alpha=3)",
)


def histories(n_users: int, n_items: int, rng: np.random.Generator) -> UserHistories:
    """Heavy-tailed history lengths (mean about 90, at most 3,000), like ML-25M's users."""
    lengths = np.minimum(rng.pareto(1.2, n_users) * 30 + 10, 3000).astype(np.int64)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    items = rng.integers(0, n_items, int(indptr[-1]))
    return UserHistories(
        user_index=np.arange(n_users), indptr=indptr, items=items,
        timestamps=np.zeros(len(items), dtype=np.int64), n_items=n_items,
    )  # fmt: skip


def knn_weights(n_items: int, neighbors: int, rng: np.random.Generator) -> sp.csr_matrix:
    """(history, candidate) CSR with `neighbors` random positive weights per candidate."""
    rows = rng.integers(0, n_items, neighbors * n_items)
    cols = np.repeat(np.arange(n_items), neighbors)
    values = rng.random(len(rows), dtype=np.float32)
    out = sp.csr_matrix((values, (rows, cols)), shape=(n_items, n_items), dtype=np.float32)
    out.sum_duplicates()
    out.sort_indices()
    return out


def build(name: str, args, rng: np.random.Generator) -> Recommender:
    """A model of kind `name` with random fitted state over `args.items` items."""
    n = args.items
    if name == "itemknn":
        model = ItemKNN()
        model.keep(knn_weights(n, 100, rng))
        return model
    if name == "als":
        als = create(BLEND_MEMBERS[3].format(factors=args.factors))
        assert isinstance(als, ALS)
        als.item_vectors = torch.from_numpy(rng.standard_normal((n, args.factors))).float() * 0.1
        als.n_items = n
        return als
    if name == "blend_item_item":
        members = ("sparse_ease(history_half_life=5)", "sparse_ease", "itemknn")
        blend = Blend(BlendConfig(members=members))
        recent, plain, knn = blend.members
        recent.keep(knn_weights(n, 256, rng))
        plain.share_state(recent)  # one fit, as in a night
        knn.keep(knn_weights(n, 100, rng))
        blend.weights = torch.tensor([0.5, 0.3, 0.2])
        blend.n_items = n
        return blend
    members = tuple(m.format(factors=args.factors) for m in BLEND_MEMBERS)
    if name == "blend_without_als":
        members = members[:3]
    blend = Blend(BlendConfig(members=members))
    knn_a, knn_b, content, *rest = blend.members
    knn_a.keep(knn_weights(n, 100, rng))
    knn_b.share_state(knn_a)  # one fit, as in a night
    assert isinstance(content, Content)
    text = torch.from_numpy(rng.standard_normal((n, args.text_dim))).float()
    content.embeddings = torch.nn.functional.normalize(text, dim=1)
    content.map = torch.from_numpy(rng.standard_normal((args.text_dim + 1, args.text_dim))).float()
    content.map *= 0.05
    content.n_items = n
    for als in rest:
        als.item_vectors = torch.from_numpy(rng.standard_normal((n, args.factors))).float()
        als.item_vectors *= 0.1
        als.n_items = n
    blend.weights = torch.tensor([0.35, 0.2, 0.25, 0.2][: len(members)])
    blend.n_items = n
    return blend


def bound(users: torch.Tensor, items: torch.Tensor, step: int, k: int, out: torch.Tensor) -> None:
    """The reference: (step x D) @ (D x I) into a reused buffer, then top k of each chunk."""
    for start in range(0, len(users), step):
        chunk = users[start : start + step]
        block = out[: len(chunk)]
        torch.matmul(chunk, items.T, out=block)
        torch.topk(block, k, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=62_500)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--factors", type=int, default=128, help="ALS factors; the bound's D")
    parser.add_argument("--text-dim", type=int, default=384, help="content's text vectors")
    parser.add_argument("--models", default=",".join(MODELS), help=f"of {', '.join(MODELS)}")
    parser.add_argument("--memory-mb", type=int, default=512, help="score-chunk budget")
    parser.add_argument("--groups", type=int, default=4, help="interleaved slices of users")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    data = histories(args.users, args.items, rng)
    generator = torch.Generator().manual_seed(0)
    user_vectors = torch.randn(args.users, args.factors, generator=generator)
    item_vectors = torch.randn(args.items, args.factors, generator=generator)
    step = chunk_size(args.items, args.memory_mb, matrices=1)
    out = torch.empty(step, args.items)
    figures: dict = {
        "benchmark": "recommend", "users": args.users, "items": args.items, "k": args.k,
        "mean_history": round(float(data.lengths().mean()), 1),
        "threads": torch.get_num_threads(), "bound_d": args.factors,
    }  # fmt: skip
    bound(user_vectors[: min(step, args.users)], item_vectors, step, args.k, out)  # warm
    edges = np.linspace(0, args.users, args.groups + 1).astype(int)
    for name in args.models.split(","):
        model = build(name.strip(), args, rng)
        top_k(model, data.slice(0, min(50, args.users)), args.k, explain=True)  # warm
        ours = reference = 0.0
        for start, stop in itertools.pairwise(edges):
            t0 = time.perf_counter()
            bound(user_vectors[start:stop], item_vectors, step, args.k, out)
            t1 = time.perf_counter()
            top_k(model, data.slice(start, stop), args.k, explain=True, memory_mb=args.memory_mb)
            t2 = time.perf_counter()
            reference, ours = reference + (t1 - t0), ours + (t2 - t1)
        figures[name] = {
            "seconds": round(ours, 2),
            "bound_seconds": round(reference, 2),
            "ratio": round(ours / reference, 2),
            "users_per_s": round(args.users / ours),
        }
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
