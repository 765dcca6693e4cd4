"""Rank items for many users with any model: the one top-K.

Users are scored in chunks whose (users x items) score matrix fits a memory budget. How a
chunk is scored depends on what the model offers:

- factor and embedding models (`factors()` returns user and item vectors): one matrix product
  into a reused buffer, so the ranker runs close to the speed of a bare `torch.matmul`;
- sparse item-item models (`sparse_score()` returns a sparse matrix): its entries are written
  into the same reused buffer, never densified into a new matrix;
- every other model (EASE with its sparse-dense product, blends, sequential models with
  batched forward passes): `score()` on the chunk.

Each chunk then drops the user's seen items and any excluded items (e.g. unavailable ones;
they are removed from the item matrix up front where the model allows it), optionally blends
in a query, and keeps the top K. Ties always go to the lower item index, so the same scores
give the same ranking however the users are chunked or sharded.

A shard is a contiguous range of users (`plan_shards`); a flow can rank shards on different
workers and publish them together in one commit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from recsys_core.cancel import raise_if_stopped
from recsys_core.data.interactions import UserHistories
from recsys_core.models.base import Recommender, padded_history
from recsys_core.progress import Progress

if TYPE_CHECKING:
    from recsys_core.ranking.query import QueryBlend

# Integer sort keys put the item index in the low 32 bits; lower index = larger key.
_MAX_INDEX = (1 << 31) - 1


@dataclass(frozen=True)
class TopK:
    """Top-K per user; slots past the number of rankable items hold -1 and -inf.

    Attributes:
        rows: (B,) position of each user in the input histories.
        items: (B, K) item indexes, best first.
        scores: (B, K) float32 scores (the model's, or the query blend when one is given).
        reasons: (B, K) history item that most supports each item, or -1.
    """

    rows: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    reasons: np.ndarray


@dataclass(frozen=True)
class Shard:
    """A contiguous range of users, ranked as one unit of work.

    Attributes:
        index: Position of the shard in the plan (0-based).
        start: First user row (inclusive).
        stop: Last user row (exclusive).
    """

    index: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def plan_shards(n_users: int, shard_users: int) -> list[Shard]:
    """Cut `n_users` rows into as few ranges of at most `shard_users` users as there can be,
    of equal sizes (within one user): shards ranked side by side then finish together, where
    a short last shard would leave its worker idle (162,500 users at 100,000 a shard: 81,250
    and 81,250, not 100,000 and 62,500).

    Args:
        n_users: Users to rank.
        shard_users: Users per shard, at most (>= 1).
    """
    if shard_users < 1:
        raise ValueError(f"shard_users must be >= 1, got {shard_users}")
    count = -(-n_users // shard_users)
    bounds = [n_users * i // count for i in range(count + 1)] if count else []
    return [Shard(i, a, b) for i, (a, b) in enumerate(pairwise(bounds))]


def chunk_size(n_items: int, memory_mb: int, *, matrices: int = 3) -> int:
    """Users per chunk so that `matrices` (users x items) float32 matrices fit `memory_mb`.

    Factor models need one (the score buffer); other models get room for their own
    intermediates. A tenth of the budget is left for the top-k pre-filter's small matrices.
    The budget alone: `top_k` also keeps each block under `BLOCK_BYTES`, which a bare product
    into one reused buffer (the benchmarks' bound) does not need.

    Args:
        n_items: Columns of the score matrix.
        memory_mb: Budget.
        matrices: (users x items) matrices alive at once.
    """
    return _users_per_chunk(max(n_items, 1) * matrices, memory_mb)


# A chunk's (users x items) blocks stay under this size whatever the budget: glibc serves an
# allocation over its mmap threshold (32 MB at most) with fresh pages, which the kernel zeroes
# at first touch and takes back on free, so every chunk paid again for each block it made.
# The 5M recommend (12,500 items, 32,500 users, the default blend) spent 37 of its 81 s in
# the kernel with 512 MB chunks; with blocks under 16 MB, 2 of 52 s (30 MB: 56 s).
BLOCK_BYTES = 16 << 20

# Explanations take a chunk's users in up to this many groups of similar history lengths, of
# at least this many users each (fewer, larger groups cost less per call; more pad less).
REASON_GROUPS = 8
REASON_GROUP_USERS = 64


def _users_per_chunk(floats_per_user: int, memory_mb: int, n_columns: int | None = None) -> int:
    """Users per chunk: the working floats within `memory_mb` and, when `n_columns` is given,
    one (users x `n_columns`) float32 block within `BLOCK_BYTES`."""
    step = int((memory_mb << 20) * 0.9) // (4 * max(floats_per_user, 1))
    if n_columns is not None:
        step = min(step, BLOCK_BYTES // (4 * max(n_columns, 1)))
    return max(1, step)


def score_in_chunks(model: Recommender, histories: UserHistories, memory_mb: int) -> torch.Tensor:
    """`model.score` of every user, computed a chunk of users at a time.

    For callers that need the whole (B, I) score matrix (a blend tuning its weights): the
    model's working memory (`score_floats_per_user`) stays within `memory_mb` per chunk,
    on top of the result itself.
    """
    step = _users_per_chunk(
        model.score_floats_per_user(histories.n_items), memory_mb, histories.n_items
    )
    if len(histories) <= step:
        return model.score(histories)
    out = torch.empty(len(histories), histories.n_items)
    for start in range(0, len(histories), step):
        raise_if_stopped()
        stop = min(start + step, len(histories))
        out[start:stop] = model.score(histories.slice(start, stop))
    return out


def top_k(
    model: Recommender,
    histories: UserHistories,
    k: int,
    *,
    exclude_seen: bool = True,
    exclude_items: np.ndarray | None = None,
    explain: bool = False,
    memory_mb: int = 512,
    progress: bool = False,
    query: QueryBlend | None = None,
    what: str = "rank",
) -> TopK:
    """Top `k` items per user.

    Args:
        model: A fitted model.
        histories: The users to rank for, with the histories the model scores from.
        k: Items per user.
        exclude_seen: Never return an item in the user's history.
        exclude_items: (n_items,) bool mask of items never to return (e.g. unavailable).
        explain: Also find the history item that supports each recommendation most.
        memory_mb: Budget for one chunk's score matrix.
        progress: Show a progress bar over users.
        query: Rank by a blend of query relevance and the model score (one query vector
            per user row; see `recsys_core.ranking.query`).
        what: Name of the ranking in the progress lines logged every 30 s while it runs
            (`recsys_core.progress`).
    """
    n_users = len(histories)
    items = np.full((n_users, k), -1, dtype=np.int64)
    scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    reasons = np.full((n_users, k), -1, dtype=np.int64)
    scorer = _ChunkScorer(model, histories.n_items, exclude_items, query, k)
    k_eff = min(k, scorer.n_columns)
    if n_users == 0 or k_eff == 0:
        return TopK(np.arange(n_users), items, scores, reasons)
    with torch.inference_mode():  # factor models need only the one score buffer per chunk
        factors = model.factors(histories.slice(0, 1)) is not None
    # factor models need the one score buffer; others their own working memory
    floats = scorer.n_columns if factors else model.score_floats_per_user(scorer.n_columns)
    step = _users_per_chunk(floats, memory_mb, histories.n_items)
    bar = tqdm(total=n_users, unit="users", desc="rank", disable=not progress)
    shown = Progress(what, n_users, unit="users")
    with bar, shown, torch.inference_mode():
        for start in range(0, n_users, step):
            raise_if_stopped()  # Ctrl-C/SIGTERM reach worker threads only through the flag
            stop = min(start + step, n_users)
            chunk = histories.slice(start, stop)
            ranked = scorer.score(chunk, start)  # (B, P), ours to modify
            scorer.drop(ranked, chunk if exclude_seen else None)
            top_scores, top_items = scorer.top(ranked, k_eff)  # (B, K)
            items[start:stop, :k_eff] = top_items
            scores[start:stop, :k_eff] = top_scores
            if explain:
                reasons[start:stop, :k_eff] = _reasons(
                    model, chunk, torch.from_numpy(top_items), scorer.item_vectors
                ).numpy()
            bar.update(stop - start)
            shown.advance(stop - start)
    return TopK(np.arange(n_users), items, scores, reasons)


class _ChunkScorer:
    """Scores a chunk of users into a reused (B, P) buffer over the P candidate columns.

    Candidates are the items not excluded: excluded items are left out of the item matrix
    (factor models) or gathered away (other models), so they cost nothing later and are never
    returned.
    """

    def __init__(
        self,
        model: Recommender,
        n_items: int,
        exclude_items: np.ndarray | None,
        query: QueryBlend | None,
        k: int,
    ):
        self.model = model
        self.query = query
        if exclude_items is not None and exclude_items.any():
            if len(exclude_items) != n_items:
                raise ValueError(f"exclude_items has {len(exclude_items)} entries, not {n_items}")
            self.columns: torch.Tensor | None = torch.from_numpy(np.flatnonzero(~exclude_items))
            self.column_of: torch.Tensor | None = torch.full((n_items,), -1, dtype=torch.int64)
            self.column_of[self.columns] = torch.arange(len(self.columns))
            self.n_columns = len(self.columns)
        else:
            self.columns, self.column_of, self.n_columns = None, None, n_items
        self.width = _block_width(self.n_columns, min(k, self.n_columns))
        self.item_vectors: torch.Tensor | None = None  # (I, D) when the model has factors
        self._candidate_vectors: torch.Tensor | None = None  # (P, D)
        self._buffer: torch.Tensor | None = None

    def score(self, chunk: UserHistories, offset: int) -> torch.Tensor:
        """(B, P) float32 scores of the chunk's users (rows `offset`.. of the ranking)."""
        out = self._output(len(chunk))
        pair = self.model.factors(chunk)
        if pair is not None:
            users, item_vectors = pair  # (B, D), (I, D)
            self._prepare_vectors(item_vectors)
            torch.matmul(users.float(), self._candidate_vectors.T, out=out)  # (B, D) @ (D, P)
        elif self.columns is None and (found := self.model.sparse_score(chunk)) is not None:
            # mostly zeros: scatter the entries into the warm buffer rather than densify
            # into a fresh (B, I) matrix and copy it here
            out.zero_()
            rows = np.repeat(np.arange(found.shape[0]), np.diff(found.indptr))
            flat = torch.from_numpy(rows * out.shape[1] + found.indices)
            values = torch.from_numpy(found.data.astype(np.float32, copy=False))
            out.view(-1).index_put_((flat,), values)
        elif self.columns is None:
            self.model.score_into(chunk, out)  # made in the warm buffer where it can be
        else:
            out.copy_(self.model.score(chunk).float()[:, self.columns])  # (B, I) -> (B, P)
        if self.query is not None:
            self.query.blend(out, offset, self.columns)
        return out

    def _output(self, rows: int) -> torch.Tensor:
        if self._buffer is None or self._buffer.shape[0] < rows:
            self._buffer = torch.empty(rows, self.n_columns)
        return self._buffer[:rows]  # a contiguous prefix: reused, never re-allocated

    def _prepare_vectors(self, item_vectors: torch.Tensor) -> None:
        known = self.item_vectors
        # once per model, not per chunk; we hold the old tensor, so its memory is not reused
        if known is not None and (known.data_ptr(), known.shape, known.stride()) == (
            item_vectors.data_ptr(), item_vectors.shape, item_vectors.stride()
        ):  # fmt: skip
            return
        self.item_vectors = item_vectors
        vectors = item_vectors.float()
        if self.columns is not None:
            vectors = vectors.index_select(0, self.columns)
        self._candidate_vectors = vectors.contiguous()  # (P, D)

    def drop(self, scores: torch.Tensor, seen: UserHistories | None) -> None:
        """Set each user's history items (when given) to -inf, in one `index_fill_`."""
        if seen is None or not len(seen.items):
            return
        rows, width = scores.shape
        user = np.repeat(np.arange(rows), seen.lengths())
        columns = seen.items
        if self.column_of is not None:
            columns = self.column_of.numpy()[columns]
            keep = columns >= 0  # seen items that are excluded anyway have no column
            user, columns = user[keep], columns[keep]
        scores.view(-1).index_fill_(0, torch.from_numpy(user * width + columns), -torch.inf)

    def top(self, scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) best values and item indexes (-1 where no candidate is left)."""
        if self.width is None:
            values, columns = _exact_topk(scores, k)
        else:
            values, columns = _blocked_topk(scores, k, self.width)
        items = self.columns.numpy()[columns] if self.columns is not None else columns
        valid = np.isfinite(values)
        return np.where(valid, values, -np.inf), np.where(valid, items, -1)


def topk_deterministic(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k per row; ties go to the lower index, NaN counts as -inf.

    Args:
        scores: (B, I) float32 scores; -inf marks items that must not be returned.
        k: Items to keep per row (<= I).

    Returns:
        (B, k) values and (B, k) column indexes, best first.
    """
    k = min(k, scores.shape[1])
    width = _block_width(scores.shape[1], k)
    if width is None:
        values, index = _exact_topk(scores, k)
    else:
        values, index = _blocked_topk(scores, k, width)
    return torch.from_numpy(values), torch.from_numpy(index)


def _block_width(n: int, k: int) -> int | None:
    """Block width of the pre-filter, or None when rows are too short for it to pay.

    torch.topk on CPU selects with a heap when the row holds at least 64 (k + 1) items and
    with nth_element otherwise, which is several times slower per item; so blocks are made
    narrow enough that the search over block maxima takes the heap path, and the k * width
    candidates stay few.
    """
    if k < 1 or n < 1:
        return None
    width = max(8, 1 << max(0, int(math.log2(max(n // (64 * (k + 1)), 1)))))
    return width if n >= 8 * k * width else None


# Below, everything of size (B, k) is done in numpy: a torch op that small still starts a
# parallel region, and on a busy machine each one can wait milliseconds for a thread.


def _blocked_topk(scores: torch.Tensor, k: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of rows, pre-filtered by blocks.

    The row is cut into blocks of `width` (the last one may be shorter); the k blocks with the
    largest maxima hold every item that can be in the top k (each holds an item at least as
    large as the k-th block maximum, so anything outside them is no larger). Only those
    k * width items are searched, which costs one reading pass over the row instead of a full
    selection. Rows where a left-out block ties with the k-th block maximum, or that hold NaN,
    are searched in full. The rows are read where they are (no padded copy).

    Args:
        scores: (B, n) float32 with unit stride along rows.
        k: Items to keep per row.
        width: Block width.

    Returns:
        (B, k) values and column indexes, best first.
    """
    rows, n = scores.shape
    whole = n // width * width
    maxima = scores[:, :whole].unflatten(1, (n // width, width)).amax(-1)  # (B, n // width)
    if whole < n:  # the short last block
        maxima = torch.cat([maxima, scores[:, whole:].amax(1, keepdim=True)], dim=1)
    if maxima.shape[1] <= k:
        return _exact_topk(scores, k)
    block_max, blocks = (t.numpy() for t in torch.topk(maxima, k + 1, dim=1))  # (B, k + 1)
    redo = (block_max[:, k - 1] == block_max[:, k]) | np.isnan(block_max).any(1)
    # kept blocks in index order, so a candidate's position orders like its item index
    kept = np.sort(blocks[:, :k], axis=1)  # (B, k)
    columns = (kept[:, :, None] * width + np.arange(width)).reshape(rows, k * width)
    candidates = scores.gather(1, torch.from_numpy(np.minimum(columns, n - 1)))
    if whole < n:  # past the row's end (in the short last block): never picked
        candidates.masked_fill_(torch.from_numpy(columns >= n), -torch.inf)
    values, position = _exact_topk(candidates, k)
    index = np.take_along_axis(columns, position, 1)
    if redo.any():
        again = np.flatnonzero(redo)
        values[again], index[again] = _exact_topk(scores[torch.from_numpy(again)], k)
    return values, index


def _exact_topk(scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row with exact tie-breaking (lower position first).

    `torch.topk` is exact except when items tied with the k-th value were left out; so take
    k + 1 and redo only rows whose k-th and (k + 1)-th values tie, with integer keys (score
    bits, then reversed position).

    Args:
        scores: (B, N) float32.
        k: Items to keep (<= N).

    Returns:
        (B, k) values and positions, best first.
    """
    n = scores.shape[1]
    values, pos = (t.numpy() for t in torch.topk(scores, min(k + 1, n), dim=1))  # (B, k + 1)
    nan_rows = np.isnan(values[:, 0])  # NaN sorts above everything in torch.topk
    if nan_rows.any():
        again = torch.from_numpy(np.flatnonzero(nan_rows))
        scores = scores.clone()
        scores[again] = scores[again].nan_to_num(
            nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf
        )
        redone = torch.topk(scores[again], min(k + 1, n), dim=1)
        values[again.numpy()], pos[again.numpy()] = redone[0].numpy(), redone[1].numpy()
    tied = np.zeros(len(values), dtype=bool)
    if k < n:
        tied = (values[:, k - 1] == values[:, k]) & np.isfinite(values[:, k - 1])
    values, pos = values[:, :k].copy(), pos[:, :k].copy()
    if tied.any():
        again = np.flatnonzero(tied)
        sub = scores[torch.from_numpy(again)] + 0.0  # -0.0 becomes 0.0: equal floats, equal keys
        bits = sub.contiguous().view(torch.int32).long()
        ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)  # monotone in the value
        keys = (ordered << 32) | (_MAX_INDEX - torch.arange(n))
        exact = torch.topk(keys, k, dim=1).indices
        pos[again], values[again] = exact.numpy(), sub.gather(1, exact).numpy()
    # within the kept items: by value descending, then position ascending
    order = np.lexsort((pos, -values), axis=1)
    return np.take_along_axis(values, order, 1), np.take_along_axis(pos, order, 1)


def _reasons(
    model: Recommender,
    chunk: UserHistories,
    top_items: torch.Tensor,
    item_vectors: torch.Tensor | None,
) -> torch.Tensor:
    """History item that supports each recommendation most, from the model itself.

    The model's own item-to-item weights (`pair_weights`: EASE weights, attention, text
    similarity) when it has them; for factor models without them, the similarity of the
    model's item vectors. -1 where nothing in the history supports the item.

    Users go in groups of similar history lengths, each padded to its own longest: a
    chunk's (B, L, K) weights padded to its longest history cost a third more than its
    users' own slots on ML-25M-shaped logs. Each user's weights are their own (padding
    slots are masked), so the grouping does not change a reason.
    """
    history = padded_history(chunk)  # (B, L)
    lengths = (history >= 0).sum(1)
    reasons = torch.full_like(top_items, -1)
    groups = max(1, min(REASON_GROUPS, len(history) // REASON_GROUP_USERS))
    for rows in torch.tensor_split(torch.argsort(lengths, stable=True), groups):
        width = max(int(lengths[rows].max()), 1) if len(rows) else 1
        reasons[rows] = _best_supporters(
            model, history[rows, :width], top_items[rows], item_vectors
        )
    return reasons


def _best_supporters(
    model: Recommender,
    history: torch.Tensor,
    top_items: torch.Tensor,
    item_vectors: torch.Tensor | None,
) -> torch.Tensor:
    """`_reasons` for one padded (B, L) history block and its (B, K) recommendations."""
    found = model.best_supporters(history, top_items)
    if found is not None:
        return found
    weights = model.pair_weights(history, top_items)  # (B, L, K)
    if weights is None and item_vectors is not None:
        hist = item_vectors[history.clamp_min(0)].float()  # (B, L, D)
        cand = item_vectors[top_items.clamp_min(0)].float()  # (B, K, D)
        weights = hist @ cand.transpose(1, 2)  # (B, L, K)
    if weights is None:
        return torch.full_like(top_items, -1)
    weights = weights.masked_fill((history < 0).unsqueeze(-1), -torch.inf)
    best_weight, best = weights.max(dim=1)  # (B, K)
    reason = history.gather(1, best)
    return torch.where((best_weight > 0) & (top_items >= 0), reason, -1)
