"""Sparse item-item weights: a top-N neighbour list per item, for catalogs of any size.

A dense items x items matrix needs 4 bytes x items^2 (15 GiB at 62,500 items); a neighbour
list of N per item needs 8 bytes x N x items (50 MB at N = 100). `co_occurrence_topn` builds
it without ever holding the full co-occurrence matrix: the catalog is cut into blocks of
candidate items whose (block, items) slab fits a memory budget, and each slab keeps only its
best N history items per candidate.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import scipy.sparse as sp
import torch

from recsys_core.cancel import raise_if_stopped
from recsys_core.models.base import StandardizedPass
from recsys_core.ranking.topk import BLOCK_BYTES


def co_occurrence_topn(
    x: sp.csr_matrix,
    n: int,
    similarity: Callable[[torch.Tensor, np.ndarray], torch.Tensor],
    *,
    memory_mb: int = 256,
    counts: torch.Tensor | None = None,
) -> sp.csr_matrix:
    """The `n` largest similarities of each candidate item, as a (history, candidate) matrix.

    Args:
        x: (users, items) binary interactions.
        n: Neighbours kept per candidate (per column of the result).
        similarity: Maps a (b, items) slab of co-occurrence counts of the candidates
            `block` (b,) with every item to their similarities; called once per block, from
            the fit's threads (`map_blocks`).
        memory_mb: Budget for one slab of float32 similarities (slabs also stay under
            `BLOCK_BYTES`, see `slab_rows`; `FIT_THREADS` slabs are made at a time).
        counts: X^T X as a dense (items, items) tensor, when one is at hand (a dense EASE
            fit on the same part made it): slabs are copied from it instead of computed.

    Returns:
        (items, items) CSR float32 matrix S: S[h, j] is history item h's support for
        candidate j; at most `n` positive entries per column, the diagonal zero. Ties at the
        n-th value go to the lower item index, so the result does not depend on the blocks.
    """
    n_items = x.shape[1]
    by_item = x.tocsc() if counts is None else None
    x = x.tocsr()
    step = slab_rows(n_items, memory_mb)

    def top_of(start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise_if_stopped()  # a block takes seconds on a large catalog
        block = np.arange(start, min(start + step, n_items))
        if by_item is not None:
            slab = co_occurrence_slab(by_item, x, block)  # (b, I)
        else:
            slab = counts[block[0] : block[-1] + 1].clone()  # `similarity` may change it
        sim = similarity(slab, block)
        sim[torch.arange(len(block)), torch.from_numpy(block)] = 0.0  # no self-support
        keep = _top_n_mask(sim, n)
        cand, hist = keep.nonzero(as_tuple=True)
        return hist.numpy(), block[cand.numpy()], sim[cand, hist].numpy()

    rows, cols, vals = zip(*map_blocks(top_of, range(0, n_items, step)), strict=True)
    out = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
        dtype=np.float32,
    )
    out.sort_indices()
    return out


# a fit's blocks (co-occurrence slabs, batches of solves) run on this many threads: the
# slabs' products (`add_product`), torch's top-k and Cholesky and numpy's gathers all leave
# the GIL (62,500 items, 21.75M events: `sparse_ease`'s neighbourhoods 45.5 to 32.6 s and its
# solves 60.1 to 40.2 s on two threads, the same weights)
FIT_THREADS = 2

T = TypeVar("T")
R = TypeVar("R")


def map_blocks(fn: Callable[[T], R], blocks: Sequence[T], threads: int | None = None) -> list[R]:
    """[fn(b) for b in blocks], on `threads` threads (None: `FIT_THREADS`); the results in
    the blocks' order.

    Each call must write only what is its own. The first error (a stop request too) is
    raised once the calls already running have ended; the others do not start.
    """
    threads = FIT_THREADS if threads is None else threads
    if threads <= 1 or len(blocks) <= 1:
        return [fn(b) for b in blocks]
    with ThreadPoolExecutor(threads, thread_name_prefix="fit-block") as pool:
        futures = [pool.submit(fn, b) for b in blocks]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()


def work(indptr: np.ndarray, per_entry: float, per_row: float) -> np.ndarray:
    """(rows + 1,) cumulative work of the rows of a compressed matrix: `per_entry` for each
    entry, `per_row` for each row (its dense passes), for `row_blocks`."""
    return (indptr - indptr[0]) * per_entry + per_row * np.arange(len(indptr), dtype=np.float64)


def row_blocks(cost: np.ndarray, parts: int, min_rows: int = 32) -> list[tuple[int, int]]:
    """Contiguous (start, stop) ranges of rows, at most `parts` of them, of about equal work;
    fewer when the rows are few.

    Args:
        cost: (rows + 1,) cumulative work (`work`).
        parts: Ranges wanted.
        min_rows: Fewest rows per range.
    """
    rows = len(cost) - 1
    parts = max(1, min(parts, rows // max(min_rows, 1)))
    if parts == 1:
        return [(0, rows)]
    edges = np.searchsorted(cost, cost[0] + (cost[-1] - cost[0]) * np.arange(1, parts) / parts)
    edges = np.unique(np.clip(np.concatenate([[0], edges, [rows]]), 0, rows))
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


_callers = 0  # `in_row_blocks` calls running now, from any thread
_callers_lock = threading.Lock()


def in_row_blocks(fn: Callable[[int, int], None], cost: np.ndarray) -> None:
    """fn(start, stop) over ranges of rows of about equal work (`cost`, see `work`), on
    threads: the compiled loops leave the GIL, so a chunk's users are scored on every core.
    The torch threads are shared among the calls running at once (shards ranked side by
    side already keep the cores busy: each then runs on one thread).
    """
    global _callers
    with _callers_lock:
        _callers += 1
        callers = _callers
    try:
        blocks = row_blocks(cost, torch.get_num_threads() // callers)
        map_blocks(lambda block: fn(*block), blocks, threads=len(blocks))
    finally:
        with _callers_lock:
            _callers -= 1


def co_occurrence_slab(by_item: sp.csc_matrix, x: sp.csr_matrix, block: np.ndarray) -> torch.Tensor:
    """(b, I) float32 G[block, :] of G = X^T X: how many users each item of `block` shares
    with every item (`by_item` is X as CSC, `x` as CSR): the columns of `by_item` are the
    rows of X^T, multiplied straight into the slab by `add_product`."""
    out = torch.zeros(len(block), x.shape[1])  # written in order first, see `_product`
    add_product(by_item.indptr, by_item.indices, by_item.data, x, out.numpy(), block)
    return out


def _add_product_loop(a_indptr, a_indices, a_data, rows, b_indptr, b_indices, b_data, out):
    for r in range(len(rows)):  # Gustavson's order: the same sums, in the same order, as scipy
        target = out[r]
        start, stop = a_indptr[rows[r]], a_indptr[rows[r] + 1]
        for p in range(start, stop):
            if p + PREFETCH_AHEAD < stop:  # a later row of B on its way from memory
                ahead = a_indices[p + PREFETCH_AHEAD]
                head = min(b_indptr[ahead + 1], b_indptr[ahead] + PREFETCH_LINES * LINE_ENTRIES)
                for q in range(b_indptr[ahead], head, LINE_ENTRIES):
                    _prefetch(b_indices, q)
                    _prefetch(b_data, q)
            k, value = a_indices[p], a_data[p]
            for q in range(b_indptr[k], b_indptr[k + 1]):
                target[b_indices[q]] += value * b_data[q]


# The scatters above read B's rows in the order of A's entries: rows of a few KB from
# anywhere in a matrix of hundreds of MB. Asking for the start of the row `PREFETCH_AHEAD`
# entries on while adding the current one hides much of that wait: one thread, 2,000 users'
# random histories times 256 random weights per item at 62,500 items, 0.215 to 0.128 s for
# the scatter alone (1 to 8 entries ahead gave the same). Asking for whole rows was slower
# on the registered 25M blend, whose popular items' rows are long: 4,000 users ranked on
# one thread in 6.51-6.57 s without the hint, 6.62-6.99 s with whole rows, 5.96-6.46 s with
# their first 4 lines (random weights: 2.98-3.11, 2.53-2.83, 2.64-2.68 s). It changes no
# result.
PREFETCH_AHEAD = 2
PREFETCH_LINES = 4  # of the row's start: the processor's own prefetcher follows a stream
LINE_ENTRIES = 16  # 4-byte entries in a 64-byte cache line


def _prefetch(array, index):
    """Ask the CPU to bring array[index]'s cache line into its caches (a hint, no result).
    In the compiled loops this is `_prefetch_hint()`; in Python it does nothing."""


@functools.cache
def _prefetch_hint() -> Callable:
    """LLVM's prefetch intrinsic as a numba function of (array, index); a no-op where this
    LLVM will not build it."""
    import numba
    from llvmlite import ir
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, array, index):
        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            found = context.make_array(array_type)(context, builder, args[0])
            pointer = cgutils.get_item_pointer(
                context, builder, array_type, found, [args[1]], wraparound=False
            )
            byte_pointer = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            hint = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]),
                "llvm.prefetch.p0i8",
            )
            # read, keep in every cache level, data
            flags = [ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
            builder.call(hint, [builder.bitcast(pointer, byte_pointer), *flags])
            return context.get_dummy_value()

        return numba.types.void(array, index), codegen

    def noop(array, index):
        return None

    try:
        numba.njit(lambda a: prefetch(a, 0))(np.zeros(1, dtype=np.int32))
    except Exception:  # an LLVM without it: the loops run without the hint
        return numba.njit(noop)
    return prefetch


@functools.cache
def compiled_loop(loop: Callable) -> Callable:
    """`loop` compiled by numba (imported on first use: the CLI's start does not pay for
    it), without the GIL so that shards' and fits' threads run it at once; the machine code
    is cached on disk next to this module. The loops in `_REASSOCIATED` may have their sums
    reordered (so reductions are vectorised); the others keep their order (the products
    follow scipy's). The setting belongs to the loop, not to a call: the disk cache keeps
    one machine code per loop and argument types, whatever the flags."""
    import numba

    globals()["_prefetch"] = _prefetch_hint()  # what the loops' `_prefetch` compiles to
    flags = {"reassoc"} if loop in _REASSOCIATED else set()
    return numba.njit(nogil=True, cache=True, fastmath=flags)(loop)


def add_product(
    a_indptr: np.ndarray,
    a_indices: np.ndarray,
    a_data: np.ndarray,
    b: sp.csr_matrix,
    out: np.ndarray,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """out += A[rows] @ B for a sparse A given by its compressed rows and a CSR B; returns out.

    scipy's product of two sparse matrices builds a sparse result in two passes, then
    `toarray` scatters it into a dense one; this loop adds each product straight into the
    dense rows, in float32, with the sums in scipy's order, and leaves the GIL. A history
    chunk times `sparse_ease`'s weights at 62,500 items: 0.26 s against 0.8 to 2.3 s for
    scipy's product and `toarray`.

    Args:
        a_indptr, a_indices, a_data: A's compressed rows (a CSR matrix's arrays, or a CSC
            matrix's for the rows of its transpose).
        b: (K, J) CSR matrix, each row's entries in any order.
        out: (len(rows), J) float32 C-ordered array.
        rows: A's rows to multiply, in `out`'s order; None for all of them.
    """
    if rows is None:
        rows = np.arange(len(a_indptr) - 1)
    if out.dtype != np.float32 or not out.flags.c_contiguous or out.shape[1] != b.shape[1]:
        raise ValueError(f"out must be a C-ordered float32 (rows, {b.shape[1]}) array")
    compiled_loop(_add_product_loop)(
        a_indptr,
        a_indices,
        np.asarray(a_data, dtype=np.float32),
        np.asarray(rows, dtype=np.int64),
        b.indptr,
        b.indices,
        np.asarray(b.data, dtype=np.float32),
        out,
    )
    return out


def slab_rows(n_items: int, memory_mb: int) -> int:
    """Rows of a (rows, items) float32 slab within `memory_mb` and under `BLOCK_BYTES`.

    Smaller slabs are faster, not only lighter: a slab over glibc's mmap threshold comes as
    fresh pages the kernel zeroes at every block. `itemknn`'s fit at 62,500 items (80,000
    users, 10M events): 37 s with 16 MB slabs against 80 s with 256 MB ones; at 12,500 items
    from the dense counts, 0.7 s against 1.9 s.
    """
    return max(1, min(memory_mb << 20, BLOCK_BYTES) // (4 * max(n_items, 1)))


def dense_tensor(matrix: sp.spmatrix, block: int = 1024) -> torch.Tensor:
    """A sparse matrix as a dense float32 tensor.

    Writing a CSR matrix's entries straight into a zeroed tensor is several times faster than
    scipy's `toarray` (57M entries of 12,500 x 12,500: 2.4 s against 10 s, CSC order).

    Args:
        matrix: Any scipy sparse matrix (converted to CSR when it is not).
        block: Rows written at a time (bounds the index arrays).
    """
    matrix = matrix.tocsr(copy=False)
    width = matrix.shape[1]
    out = torch.zeros(matrix.shape, dtype=torch.float32)
    flat_out = out.view(-1)
    for start in range(0, matrix.shape[0], block):
        stop = min(start + block, matrix.shape[0])
        low, high = matrix.indptr[start], matrix.indptr[stop]
        rows = torch.repeat_interleave(
            torch.arange(start, stop), torch.from_numpy(np.diff(matrix.indptr[start : stop + 1]))
        )
        flat = rows * width + torch.from_numpy(matrix.indices[low:high].astype(np.int64))
        values = torch.from_numpy(matrix.data[low:high].astype(np.float32, copy=False))
        flat_out.index_put_((flat,), values, accumulate=True)  # duplicates add up
    return out


def _top_n_mask(values: torch.Tensor, n: int) -> torch.Tensor:
    """(b, I) bool: the `n` largest positive values of each row, ties to the lower index."""
    n = min(n, values.shape[1])
    nth = torch.topk(values, n, dim=1).values[:, -1:]  # (b, 1)
    above = values > nth
    tied = values == nth
    room = n - above.sum(1, keepdim=True, dtype=torch.int32)  # tied entries still admitted
    keep = above | (tied & (torch.cumsum(tied, dim=1, dtype=torch.int32) <= room))
    return keep & (values > 0)


# a row of item-item weights holding at least this share of the items is scored as a dense
# row: torch's sparse x dense product reads a dense row about 12x faster per entry than
# scipy's sparse x sparse product handles a sparse one (62,500 items, `sparse_ease` at 25M
# events, whose popular items' rows hold thousands of entries: 1,000 users in 0.92 s against
# 6.1 s; 1/8 gave 0.99 s and 1/32 1.67 s; `itemknn`'s rows, at most 1/20 full, stay sparse)
DENSE_ROW_SHARE = 1 / 16
DENSE_ROWS_BYTES = 1 << 30  # at most this much of a model's weights is kept as dense rows


@dataclass(frozen=True)
class RowSplit:
    """Sparse item-item weights cut for scoring: the long rows dense, the others sparse."""

    dense_rows: np.ndarray  # (H,) the rows kept dense, ascending
    dense: torch.Tensor  # (H, I) float32, those rows
    light: sp.csr_matrix  # (I, I) the weights with those rows emptied
    position: np.ndarray  # (I,) int64: each item's row of `dense`, -1 for the light ones


def split_rows(
    weights: sp.csr_matrix, share: float = DENSE_ROW_SHARE, memory_bytes: int = DENSE_ROWS_BYTES
) -> RowSplit | None:
    """The rows of `weights` holding at least `share` of the columns, the longest first
    within `memory_bytes` of dense float32 rows, split from the others; None when there are
    none."""
    lengths = np.diff(weights.indptr)
    width = max(weights.shape[1], 1)
    longest = np.argsort(-lengths, kind="stable")[: memory_bytes // (4 * width)]
    chosen = np.sort(longest[lengths[longest] >= share * width])
    if not len(chosen):
        return None
    is_dense = np.zeros(weights.shape[0], dtype=bool)
    is_dense[chosen] = True
    kept = ~np.repeat(is_dense, lengths)  # the light rows' entries
    indptr = np.concatenate([[0], np.cumsum(np.where(is_dense, 0, lengths))])
    light = sp.csr_matrix(
        (weights.data[kept], weights.indices[kept], indptr.astype(weights.indptr.dtype)),
        shape=weights.shape,
    )
    position = np.full(weights.shape[0], -1, dtype=np.int64)
    position[chosen] = np.arange(len(chosen))
    return RowSplit(chosen, dense_tensor(weights[chosen]), light, position)


def torch_csr(matrix: sp.spmatrix) -> torch.Tensor:
    """A scipy sparse matrix as a float32 torch CSR tensor (each row's columns in order)."""
    matrix = matrix.tocsr().astype(np.float32)
    matrix.sort_indices()  # torch's CSR layout wants them so
    return csr_tensor(
        torch.from_numpy(matrix.indptr.astype(np.int64)),
        torch.from_numpy(matrix.indices.astype(np.int64)),
        torch.from_numpy(matrix.data),
        matrix.shape,
    )


def csr_tensor(
    indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """A torch CSR tensor from its arrays, each row's columns ascending (not checked: the
    check costs a pass over the entries)."""
    with warnings.catch_warnings():  # "CSR support is in beta": the products used are exact
        warnings.filterwarnings("ignore", "Sparse CSR tensor support", UserWarning)
        return torch.sparse_csr_tensor(indptr, indices, values, size=shape, check_invariants=False)


def sparse_dense_matmul(rows: sp.csr_matrix, dense: torch.Tensor) -> torch.Tensor:
    """(B, I) sparse rows times a dense (I, J) float32 matrix, on torch's threads (scipy's
    product runs on one: 1.7x slower on 2 cores at 12,500 items). Returns (B, J)."""
    return torch.sparse.mm(torch_csr(rows), dense)


def sparse_scores(
    rows: sp.csr_matrix,
    weights: sp.csr_matrix,
    split: RowSplit | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, I) dense scores of (B, I) sparse history rows times sparse item-item weights.

    Args:
        rows: (B, I) history rows.
        weights: (I, I) CSR weights.
        split: `split_rows(weights)`, when the caller keeps it: the history entries on its
            dense rows go through a sparse x dense product, the others through
            `add_product`.
        out: A (B, I) float32 C-ordered buffer to write the scores into (its contents are
            not read), else a new one is made.
    """
    rows = rows.tocsr()
    if split is None:
        return _product(rows, weights, out)
    position = split.position[rows.indices]  # (nnz,) each entry's dense row, or -1
    found = position >= 0
    indptr = np.concatenate([[0], np.cumsum(found)])[rows.indptr]  # dense entries per row
    heavy = sp.csr_matrix(
        (rows.data[found], position[found], indptr), shape=(rows.shape[0], len(split.dense_rows))
    )
    out = _product(rows, split.light, out)
    return out.add_(sparse_dense_matmul(heavy, split.dense))  # the dense rows' part


def _product(
    rows: sp.csr_matrix, weights: sp.csr_matrix, out: torch.Tensor | None = None
) -> torch.Tensor:
    """rows @ weights as a dense (B, I) float32 tensor (into `out` when given). Its zeros
    are written in order first: pages met first in the product's scattered order cost up to
    4x the product itself (a 2,000-user chunk at 62,500 items: 1.3 s against 0.1 s to write
    them, then 0.3 s)."""
    if out is None:
        out = torch.zeros(rows.shape[0], weights.shape[1])
    else:
        out.zero_()
    target = out.numpy()

    def part(start: int, stop: int) -> None:
        rows_here = np.arange(start, stop)
        add_product(rows.indptr, rows.indices, rows.data, weights, target[start:stop], rows_here)

    in_row_blocks(part, work(rows.indptr, 1.0, 0.0))  # a user's work: their history entries
    return out


# users whose rows of the running sum go through every member's pass before the next ones:
# their rows (I floats each) stay in the core's cache from one member to the next
PASS_BLOCK_ROWS = 4


def run_passes(passes: Sequence[StandardizedPass], n_rows: int, n_items: int) -> None:
    """Run each pass over every row: passes that can share their reads are joined first
    (`StandardizedPass.join`: members over one weights matrix read it once), the rows are
    cut among the threads by the passes' summed work, and each thread takes its rows
    `PASS_BLOCK_ROWS` users at a time through every pass in turn, so that with several
    members a user's row of the running sum is read from and written to memory once, not
    once per member."""
    joined: list[StandardizedPass] = []
    for found in passes:
        for i, earlier in enumerate(joined):
            both = earlier.join(found)
            if both is not None:
                joined[i] = both
                break
        else:
            joined.append(found)
    if not joined or not n_rows:
        return
    cost = sum(p.cost for p in joined)
    scratch = max(p.scratch_rows for p in joined) * n_items

    def part(start: int, stop: int) -> None:
        row = np.empty(scratch, dtype=np.float32)  # this thread's own
        for first in range(start, stop, PASS_BLOCK_ROWS):
            last = min(first + PASS_BLOCK_ROWS, stop)
            for found in joined:
                found.run(first, last, row)

    in_row_blocks(part, cost)


@dataclass(frozen=True)
class _Terms:
    """What `standardized_pass` adds: members' history rows over one weights matrix."""

    rows: tuple[sp.csr_matrix, ...]  # each member's (B, I) rows: one structure, own values
    member_weights: tuple[float, ...]
    shifts: tuple[np.ndarray, ...]  # each member's (B,) float64 shift, filled by the pass
    weights: sp.csr_matrix
    split: RowSplit | None
    seen: torch.Tensor
    total: torch.Tensor

    def joins(self, other: _Terms) -> bool:
        """Whether `other` reads the same weights into the same sum for the same histories."""
        mine, theirs = self.rows[0], other.rows[0]
        return (
            other.weights is self.weights
            and other.split is self.split
            and other.seen is self.seen
            and other.total is self.total
            and np.array_equal(theirs.indptr, mine.indptr)
            and np.array_equal(theirs.indices, mine.indices)
        )


@dataclass(kw_only=True)
class _WeightsPass(StandardizedPass):
    """`standardized_pass`'s pass: it joins another such pass over the same weights, sum,
    seen items and history structure (`_Terms.joins`)."""

    terms: _Terms

    def join(self, other: StandardizedPass) -> StandardizedPass | None:
        if not isinstance(other, _WeightsPass) or not self.terms.joins(other.terms):
            return None
        mine, theirs = self.terms, other.terms
        return _weights_pass(
            dataclasses.replace(
                mine,
                rows=mine.rows + theirs.rows,
                member_weights=mine.member_weights + theirs.member_weights,
                shifts=mine.shifts + theirs.shifts,
            )
        )


def standardized_pass(
    rows: sp.csr_matrix,
    weights: sp.csr_matrix,
    split: RowSplit | None,
    seen: torch.Tensor,
    weight: float,
    total: torch.Tensor,
) -> StandardizedPass:
    """The pass that adds `weight` times the per-user z-scores of rows @ weights over the
    unseen items to `total`, in place, but for each user's shift `weight * mean / spread`
    (its `shift`), as `blend.add_standardized` does with a (B, I) score block made first.

    Per user (`_standardized_product_loop`, compiled, without the GIL), the scores are made
    in a row buffer that stays in cache (the light rows' entries scattered, the dense rows
    of `split` added whole), their moments taken from it and the scaled row added to
    `total`, so no (B, I) block of scores is written, zeroed or read back. Equal to making
    the scores then `add_standardized` to float32 rounding (the sums run in another order;
    the moments in float64).

    Passes of members over the same weights (EASE with and without a history half-life:
    one fit) join (`run_passes`): each weights entry read is then added to every member's
    row buffer, 0.81 to 0.58 s for two such members (2,000 users, 62,500 items, 256 weights
    per item, one thread). Each member's row, moments and add are as in its own pass, so
    joining changes no bit.

    Args:
        rows: (B, I) history rows (recency weights as values).
        weights: (I, I) CSR weights.
        split: `split_rows(weights)` when the caller keeps it, else None.
        seen: Distinct flat positions row * I + item of the users' seen items, ascending.
        weight: The member's weight.
        total: (B, I) float32 C-ordered running sum.
    """
    shift = np.zeros(total.shape[0], dtype=np.float64)
    terms = _Terms((rows.tocsr(),), (float(weight),), (shift,), weights, split, seen, total)
    return _weights_pass(terms)


def _weights_pass(terms: _Terms) -> _WeightsPass:
    """The pass adding every member of `terms` (`standardized_pass`)."""
    n_rows, n_items = terms.total.shape
    members = len(terms.rows)
    weights, split = terms.weights, terms.split
    light = weights if split is None else split.light
    if split is None:  # no dense rows: every item's row is light
        dense = np.zeros((0, n_items), dtype=np.float32)
        position = np.full(weights.shape[0], -1, dtype=np.int64)
    else:
        dense, position = np.ascontiguousarray(split.dense.numpy()), split.position
    seen_np = terms.seen.numpy()
    seen_indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(seen_np // max(n_items, 1), minlength=n_rows), out=seen_indptr[1:])
    seen_items = np.ascontiguousarray(seen_np % max(n_items, 1))
    rows = terms.rows[0]
    values = np.stack([np.asarray(r.data, dtype=np.float32) for r in terms.rows])  # (M, nnz)
    member_weights = np.asarray(terms.member_weights, dtype=np.float64)
    shifts = terms.shifts[0][None] if members == 1 else np.zeros((members, n_rows))
    total_shift = terms.shifts[0] if members == 1 else np.zeros(n_rows)
    light_values = np.asarray(light.data, dtype=np.float32)
    out = terms.total.numpy()
    loop = compiled_loop(_standardized_product_loop)

    def run(start: int, stop: int, row: np.ndarray) -> None:
        loop(
            rows.indptr[start : stop + 1], rows.indices, values,
            light.indptr, light.indices, light_values, position, dense,
            seen_indptr[start : stop + 1], seen_items, member_weights,
            out[start:stop], shifts[:, start:stop], row[: members * n_items],
        )  # fmt: skip
        if members > 1:  # each member's own shift, and the pass's: their sum
            for shift, found in zip(terms.shifts, shifts, strict=True):
                shift[start:stop] = found[start:stop]
            total_shift[start:stop] = shifts[:, start:stop].sum(0)

    # a user's work: the history entries times a weights row's entries (two members joined
    # cost about 1.4 times one: 0.58 s against 0.81 s apart), and about six passes over the
    # row (zeroing, moments, the add) per member
    per_row = light.nnz / max(light.shape[0], 1)
    cost = work(rows.indptr, per_row * (1 + 0.4 * (members - 1)), 6 * n_items * members)
    return _WeightsPass(run, total_shift, cost, scratch_rows=members, terms=terms)


def _standardized_product_loop(
    a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, position, dense,
    seen_indptr, seen_items, weights, total, shift, row,
):  # fmt: skip
    # a_data: (M, nnz) the M members' values of one history structure; row: M rows of n
    members, n = a_data.shape[0], total.shape[1]
    last = a_indptr[total.shape[0]]  # the block's last history entry + 1
    for r in range(total.shape[0]):
        row[:] = 0.0
        for p in range(a_indptr[r], a_indptr[r + 1]):
            if p + PREFETCH_AHEAD < last:  # a later light row on its way (the next user's too)
                ahead = a_indices[p + PREFETCH_AHEAD]
                head = min(b_indptr[ahead + 1], b_indptr[ahead] + PREFETCH_LINES * LINE_ENTRIES)
                for q in range(b_indptr[ahead], head, LINE_ENTRIES):
                    _prefetch(b_indices, q)
                    _prefetch(b_data, q)
            k = a_indices[p]
            if position[k] >= 0:  # a dense row: added whole (vectorised)
                source = dense[position[k]]
                for m in range(members):
                    value, base = a_data[m, p], m * n
                    for j in range(n):
                        row[base + j] += value * source[j]
            elif members == 1:
                value = a_data[0, p]
                for q in range(b_indptr[k], b_indptr[k + 1]):
                    row[b_indices[q]] += value * b_data[q]
            else:  # each weights entry read once, added to every member's row
                for q in range(b_indptr[k], b_indptr[k + 1]):
                    j, w = b_indices[q], b_data[q]
                    for m in range(members):
                        row[m * n + j] += a_data[m, p] * w
        target = total[r]
        count = max(n - (seen_indptr[r + 1] - seen_indptr[r]), 1)
        for m in range(members):
            # the mean and spread over the unseen items in float64: two passes over the
            # row in cache (the second over values less the mean: exact for nearly equal
            # scores too), vectorised (compiled with reassociation), the seen items' terms
            # taken out after
            scores = row[m * n : (m + 1) * n]
            sums = 0.0
            for j in range(n):
                sums += scores[j]
            for p in range(seen_indptr[r], seen_indptr[r + 1]):
                sums -= scores[seen_items[p]]
            mean = sums / count
            squares = 0.0
            for j in range(n):
                squares += (scores[j] - mean) ** 2
            for p in range(seen_indptr[r], seen_indptr[r + 1]):
                squares -= (scores[seen_items[p]] - mean) ** 2
            spread = max(np.sqrt(max(squares / count, 0.0)), 1e-8)
            scale = weights[m] / spread
            scale32 = np.float32(scale)
            for j in range(n):
                target[j] += scale32 * scores[j]
            shift[m, r] = mean * scale


# loops compiled with their sums free to be reordered (`compiled_loop`)
_REASSOCIATED = frozenset({_standardized_product_loop})


def sparse_pair_weights(
    weights: sp.csr_matrix,
    history: torch.Tensor,
    candidates: torch.Tensor,
    by_column: sp.csc_matrix | None = None,
) -> torch.Tensor:
    """weights[h, c] for each history item h and candidate c: (B, L, K); 0 for padding.

    Per user (`_pair_weights_loop`, compiled, without the GIL), whichever is cheaper:
    - with `by_column`, the candidates' columns are scanned against a mark of the user's
      history items: K columns of about N entries each (N neighbours per candidate);
    - otherwise each lookup is a binary search of the candidate among the columns of the
      history item's row, L x K searches of a few branchy steps each.
    At 62,500 items, 2,000 users with their top 20: 0.078 to 0.013 s with 100 neighbours
    per item, 0.104 to 0.033 s with 256. (One search over every entry's flat position
    searched millions, about a quarter of the ranking threads' time at 25M events; scipy's
    fancy indexing scans a row per lookup, 20 s per 1,000 users.)

    Args:
        weights: (I, I) CSR weights in canonical form (`sum_duplicates`: each row's columns
            ascending, once), which is made here when it is not.
        history: (B, L) item indexes, -1 padding.
        candidates: (B, K) item indexes.
        by_column: `weights` as CSC (`tocsc()` of the canonical weights), when the caller
            keeps it.
    """
    hist, cand = history.numpy(), np.maximum(candidates.numpy(), 0)  # (B, L), (B, K)
    out = np.zeros((*hist.shape, cand.shape[1]), dtype=np.float32)  # (B, L, K)
    if weights.nnz:
        if not weights.has_canonical_format:
            weights.sum_duplicates()
        if by_column is None:  # no columns: every user searches the rows
            col_indptr = np.zeros(weights.shape[1] + 1, dtype=np.int64)
            col_indices, col_data, mark = col_indptr[:0], np.zeros(0, np.float32), col_indptr[:0]
        else:
            col_indptr, col_indices = by_column.indptr, by_column.indices
            col_data = np.asarray(by_column.data, dtype=np.float32)
            mark = np.zeros(weights.shape[0], dtype=np.int64)
        compiled_loop(_pair_weights_loop)(
            weights.indptr,
            weights.indices,
            np.asarray(weights.data, dtype=np.float32),
            col_indptr,
            col_indices,
            col_data,
            np.ascontiguousarray(hist, dtype=np.int64),
            np.ascontiguousarray(cand, dtype=np.int64),
            out,
            mark,
        )
    return torch.from_numpy(out)


# a binary search's steps cost about this many column entries scanned (branchy, dependent)
_SEARCH_COST = 8


def _pair_weights_loop(
    indptr, indices, data, col_indptr, col_indices, col_data, hist, cand, out, mark
):  # fmt: skip
    n_slots, n_cand = hist.shape[1], cand.shape[1]
    for b in range(hist.shape[0]):
        length, scan = 0, 0
        for slot in range(n_slots):
            if hist[b, slot] >= 0:
                length += 1
        for k in range(n_cand):
            scan += col_indptr[cand[b, k] + 1] - col_indptr[cand[b, k]]
        if len(mark) and scan <= _SEARCH_COST * length * n_cand:
            # the candidates' columns against a mark of the history: mark[h] = first slot + 1
            for slot in range(n_slots):
                h = hist[b, slot]
                if h >= 0 and mark[h] == 0:
                    mark[h] = slot + 1
            for k in range(n_cand):
                c = cand[b, k]
                for q in range(col_indptr[c], col_indptr[c + 1]):
                    found = mark[col_indices[q]]
                    if found:
                        out[b, found - 1, k] = col_data[q]
            for slot in range(n_slots):  # an item met again: its first slot's weights
                h = hist[b, slot]
                if h >= 0 and mark[h] != slot + 1:
                    out[b, slot, :] = out[b, mark[h] - 1, :]
            for slot in range(n_slots):
                if hist[b, slot] >= 0:
                    mark[hist[b, slot]] = 0
            continue
        for slot in range(n_slots):
            h = hist[b, slot]
            if h < 0:  # padding
                continue
            start, stop = indptr[h], indptr[h + 1]
            for k in range(n_cand):
                c, lo, hi = cand[b, k], start, stop
                while lo < hi:  # the first column >= c
                    mid = (lo + hi) >> 1
                    if indices[mid] < c:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo < stop and indices[lo] == c:
                    out[b, slot, k] = data[lo]


def to_state(prefix: str, matrix: sp.csr_matrix) -> dict[str, torch.Tensor]:
    """A CSR matrix as flat tensors (safetensors holds no sparse types)."""
    return {
        f"{prefix}.indptr": torch.from_numpy(matrix.indptr.astype(np.int64)),
        f"{prefix}.indices": torch.from_numpy(matrix.indices.astype(np.int64)),
        f"{prefix}.values": torch.from_numpy(matrix.data.astype(np.float32)),
        f"{prefix}.shape": torch.tensor(matrix.shape, dtype=torch.int64),
    }


def from_state(prefix: str, state: dict[str, torch.Tensor]) -> sp.csr_matrix:
    """The inverse of `to_state`; a dense `prefix` tensor (older bundles) is converted."""
    if prefix in state:
        return sp.csr_matrix(state[prefix].float().numpy())
    shape = tuple(int(v) for v in state[f"{prefix}.shape"].tolist())
    return sp.csr_matrix(
        (
            state[f"{prefix}.values"].numpy().astype(np.float32),
            state[f"{prefix}.indices"].numpy(),
            state[f"{prefix}.indptr"].numpy(),
        ),
        shape=shape,
    )
