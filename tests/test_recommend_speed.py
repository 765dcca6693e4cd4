"""The faster recommend path gives the same results to the bit: the blend's standardization
and ALS's fold-in against their earlier implementations (kept here as references), and a
whole ranking of the default blend's member kinds with those references swapped in."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_core.data.interactions import UserHistories
from recsys_core.models import als as als_module
from recsys_core.models import blend as blend_module
from recsys_core.models.als import ALS
from recsys_core.models.base import history_rows, padded_history
from recsys_core.models.blend import Blend, BlendConfig, standardize
from recsys_core.models.sparse_items import sparse_pair_weights
from recsys_core.ranking import top_k


def standardize_before(scores: torch.Tensor, histories: UserHistories) -> torch.Tensor:
    """`standardize` as it was: boolean masks and out-of-place arithmetic."""
    unseen = torch.ones_like(scores, dtype=torch.bool)
    if len(histories.items):
        unseen[history_rows(histories), torch.from_numpy(histories.items)] = False
    count = unseen.sum(1, keepdim=True).clamp_min(1)
    values = scores.float().masked_fill(~unseen, 0.0)
    mean = values.sum(1, keepdim=True) / count
    spread = ((values - mean).masked_fill(~unseen, 0.0).pow(2).sum(1, keepdim=True) / count).sqrt()
    return ((scores - mean) / spread.clamp_min(1e-8)).masked_fill(~unseen, 0.0)


def solve_before(self: ALS, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`ALS._solve` as it was: the Gram matrix of the items recomputed for every block."""
    cfg = self.config
    y = self.item_vectors.double()
    present = (history >= 0).double().unsqueeze(-1)
    yh = y[history.clamp_min(0)] * present
    eye = torch.eye(y.shape[1], dtype=torch.float64)
    a = y.T @ y + cfg.regularization * eye + (cfg.alpha - 1.0) * yh.transpose(1, 2) @ yh
    inverse = torch.linalg.inv(a)
    b = cfg.alpha * yh.sum(1)
    return (inverse @ b.unsqueeze(-1)).squeeze(-1).float(), inverse


def factors_before(self: ALS, histories: UserHistories) -> tuple[torch.Tensor, torch.Tensor]:
    """`ALS.factors` as it was: blocks of users in their given order."""
    users = torch.empty(len(histories), self.item_vectors.shape[1])
    for start, stop in self._blocks(histories.lengths()):
        part = histories.slice(start, stop)
        users[start:stop] = solve_before(self, padded_history(part, max_len=part.n_items))[0]
    return users, self.item_vectors


def pair_weights_before(self: ALS, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """`ALS.pair_weights` as it was: every block's systems built at the chunk's full width."""
    out = torch.empty(history.shape[0], history.shape[1], candidates.shape[1])
    y = self.item_vectors.double()
    for start, stop in self._blocks(np.full(history.shape[0], history.shape[1])):
        _, inverse = solve_before(self, history[start:stop])
        yh = y[history[start:stop].clamp_min(0)]
        yc = y[candidates[start:stop].clamp_min(0)]
        out[start:stop] = self.config.alpha * yh @ inverse @ yc.transpose(1, 2)
    return out


def use_the_earlier_als(monkeypatch) -> None:
    monkeypatch.setattr(ALS, "_solve", solve_before)
    monkeypatch.setattr(ALS, "factors", factors_before)
    monkeypatch.setattr(ALS, "pair_weights", pair_weights_before)


@pytest.fixture(autouse=True)
def small_fold_in_blocks(monkeypatch):
    """Blocks of a few users, so a chunk holds many blocks of mixed history lengths."""
    monkeypatch.setattr(als_module, "FOLD_IN_MEMORY_MB", 1)


def histories(n_users: int, n_items: int, seed: int) -> UserHistories:
    """Random heavy-tailed histories with repeated items, an empty one, one that saw every
    item and one longer than the catalog."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.pareto(1.2, n_users - 3) * 10 + 1, 400).astype(int)
    rows = [rng.integers(0, n_items, size) for size in sizes]
    rows[len(rows) // 2 : len(rows) // 2] = [np.zeros(0, dtype=np.int64), np.arange(n_items)]
    rows.append(rng.integers(0, n_items, n_items + 30))
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    items = np.concatenate(rows).astype(np.int64)
    return UserHistories(
        user_index=np.arange(n_users), indptr=indptr, items=items,
        timestamps=np.arange(len(items), dtype=np.int64), n_items=n_items,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_standardize_equals_the_earlier_one_to_the_bit(dtype):
    data = histories(60, 300, seed=1)
    scores = torch.randn(60, 300, generator=torch.Generator().manual_seed(2), dtype=dtype)
    scores[5] = 3.0  # a constant row: zero spread
    before = scores.clone()
    new, old = standardize(scores, data), standardize_before(scores, data)
    assert new.dtype == old.dtype
    assert torch.equal(new, old)
    assert torch.equal(scores, before)  # the input is left alone


def test_als_fold_in_equals_the_earlier_one_to_the_bit(monkeypatch):
    model = fitted_als(n_items=400, factors=16)
    data = histories(50, 400, seed=3)
    history = padded_history(data)  # (50, up to 200), left-aligned, lengths mixed
    candidates = torch.randint(0, 400, (50, 20), generator=torch.Generator().manual_seed(5))
    users, _ = model.factors(data)
    weights = model.pair_weights(history, candidates)
    use_the_earlier_als(monkeypatch)
    users_before, _ = model.factors(data)
    assert torch.equal(users, users_before)
    assert torch.equal(weights, model.pair_weights(history, candidates))


def test_als_fold_in_solves_systems_that_are_not_positive_definite():
    """A negative confidence makes some users' systems indefinite: their Cholesky factor
    fails and the general solve gives what the inverse gave."""
    model = als_module.ALS(als_module.ALSConfig(factors=8, regularization=1.0, alpha=-4.0))
    model.item_vectors = torch.from_numpy(np.random.default_rng(2).standard_normal((60, 8)))
    model.item_vectors = model.item_vectors.float()
    model.n_items = 60
    data = histories(20, 60, seed=4)
    history = padded_history(data, max_len=60)
    y, base = model._items64()
    yh = y[history.clamp_min(0)] * (history >= 0).double().unsqueeze(-1)
    a = base + (model.config.alpha - 1.0) * yh.transpose(1, 2) @ yh
    assert bool(torch.linalg.cholesky_ex(a).info.any())  # some systems are indefinite
    expected = (torch.linalg.inv(a) @ (model.config.alpha * yh.sum(1)).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(model.factors(data)[0], expected.float(), rtol=1e-4, atol=1e-5)


def blend_score_before(self: Blend, histories: UserHistories) -> torch.Tensor:
    """`Blend.score` as it was (one weight per member): each member standardized, then
    weighted and summed."""
    total = torch.zeros(len(histories), self.n_items)
    for weight, member, used in zip(self.weights, self.members, self._used(), strict=True):
        if used:
            total += weight * blend_module.standardize(member.score(histories), histories)
    return total


def test_a_blend_ranks_as_before(monkeypatch):
    """The default blend's member kinds at 25M (sparse item-item with and without recency,
    text content, ALS), ranked with seen items excluded and reasons, in several chunks: the
    same lists and reasons; the scores to float32 rounding (the z-scores are folded into the
    sum in one pass, their moments taken over centred scores)."""
    n_users, n_items = 120, 500
    model = random_blend(n_items)
    data = histories(n_users, n_items, seed=6)
    new = top_k(model, data, 10, explain=True, memory_mb=1)
    monkeypatch.setattr(blend_module, "standardize", standardize_before)
    monkeypatch.setattr(Blend, "score", blend_score_before)
    use_the_earlier_als(monkeypatch)
    old = top_k(model, data, 10, explain=True, memory_mb=1)
    assert np.array_equal(new.items, old.items)
    np.testing.assert_allclose(new.scores, old.scores, rtol=1e-5, atol=1e-5)
    assert np.array_equal(new.reasons, old.reasons)
    unseen = [n_items - len(np.unique(data.row(u))) for u in range(n_users)]
    assert ((new.items >= 0).sum(1) == np.minimum(10, unseen)).all()  # a real ranking


def sparse_pair_weights_before(weights, history, candidates):
    """`sparse_pair_weights` as it was: every (slot, candidate) pair looked up."""
    hist = history.numpy()[:, :, None]
    cand = candidates.numpy()[:, None, :]
    h, c = np.broadcast_arrays(np.maximum(hist, 0), np.maximum(cand, 0))
    out = np.asarray(weights[h.ravel(), c.ravel()], dtype=np.float32).reshape(h.shape)
    out[np.broadcast_to(hist < 0, h.shape)] = 0.0
    return torch.from_numpy(out)


def test_sparse_pair_weights_equal_the_earlier_ones():
    knn = random_blend(300).members[0]
    data = histories(40, 300, seed=10)
    history = padded_history(data)
    candidates = torch.randint(0, 300, (40, 10), generator=torch.Generator().manual_seed(11))
    candidates[3, 7:] = -1  # fewer candidates than k
    new = sparse_pair_weights(knn.weights, history, candidates)
    assert torch.equal(new, sparse_pair_weights_before(knn.weights, history, candidates))
    assert new.abs().sum() > 0


def test_content_pair_weights_equal_the_earlier_ones():
    content = random_blend(300).members[2]
    history = padded_history(histories(40, 300, seed=12))
    candidates = torch.randint(0, 300, (40, 10), generator=torch.Generator().manual_seed(13))
    new = content.pair_weights(history, candidates)
    # as it was: every slot mapped, padding included
    hist = content.embeddings[history.clamp_min(0)] @ content.map[:-1]
    cand = content.embeddings[candidates.clamp_min(0)]
    length = (history >= 0).sum(1, keepdim=True)
    age = (length - 1 - torch.arange(history.shape[1]).unsqueeze(0)).clamp_min(0)
    old = hist @ cand.transpose(1, 2) * (0.5 ** (age / content.config.half_life)).unsqueeze(-1)
    assert torch.equal(new, old)


@pytest.mark.parametrize("unavailable", [False, True])
def test_sparse_item_item_scores_written_into_the_buffer_rank_as_dense_ones(
    monkeypatch, unavailable
):
    knn = random_blend(400).members[1]
    data = histories(90, 400, seed=14)
    exclude = np.arange(400) % 7 == 0 if unavailable else None
    new = top_k(knn, data, 10, explain=True, memory_mb=1, exclude_items=exclude)
    monkeypatch.setattr(type(knn), "sparse_score", lambda self, histories: None)
    old = top_k(knn, data, 10, explain=True, memory_mb=1, exclude_items=exclude)
    assert np.array_equal(new.items, old.items)
    assert np.array_equal(new.scores, old.scores)
    assert np.array_equal(new.reasons, old.reasons)
    assert (new.items >= 0).sum() > 80 * 10


def test_padded_rows_hold_what_padded_history_holds():
    data = histories(30, 50, seed=9)
    rows = np.array([29, 3, 13, 14, 0])  # longer than the catalog, empty, every item
    got = als_module._padded_rows(data, rows)
    for i, row in enumerate(rows.tolist()):
        one = padded_history(data.slice(row, row + 1), max_len=50)[0]
        assert torch.equal(got[i, : len(one)], one)
        assert (got[i, len(one) :] == -1).all()


# -- helpers ------------------------------------------------------------------------------------
def fitted_als(n_items: int, factors: int) -> ALS:
    model = als_module.ALS(als_module.ALSConfig(factors=factors, regularization=3.0, alpha=3.0))
    rng = np.random.default_rng(7)
    model.item_vectors = torch.from_numpy(rng.standard_normal((n_items, factors))).float()
    model.n_items = n_items
    return model


def random_blend(n_items: int) -> Blend:
    members = ("itemknn(history_half_life=5)", "itemknn", "content",
               "als(factors=16, regularization=30, alpha=3)")  # fmt: skip
    blend = Blend(BlendConfig(members=members))
    rng = np.random.default_rng(8)
    for member in blend.members[:2]:
        rows = rng.integers(0, n_items, 20 * n_items)
        cols = np.repeat(np.arange(n_items), 20)
        weights = sp.csr_matrix(
            (rng.random(len(rows), dtype=np.float32), (rows, cols)), shape=(n_items, n_items)
        )
        weights.sum_duplicates()
        member.keep(weights)
    content = blend.members[2]
    content.embeddings = torch.nn.functional.normalize(torch.randn(n_items, 24), dim=1)
    content.map = torch.randn(25, 24) * 0.1
    content.n_items = n_items
    als = blend.members[3]
    als.item_vectors = torch.from_numpy(rng.standard_normal((n_items, 16))).float() * 0.1
    als.n_items = n_items
    blend.weights = torch.tensor([0.35, 0.2, 0.25, 0.2])
    blend.n_items = n_items
    return blend


def test_a_blends_factor_members_fold_in_without_their_own_score_matrices(monkeypatch):
    """`content` and `als` enter the blend through their user and item vectors: the moments
    of their scores come from the item vectors' sum and Gram matrix, less the seen items
    (a user who saw every item, one who saw none), and no (B, I) matrix of their own is made.
    The sum equals the members' z-scores weighted and summed, far from zero means too."""
    n_items = 60
    model = random_blend(n_items)
    model.members[2].map[-1] += 50.0  # content's scores far from zero for every item
    rows = [list(range(n_items)), [], [3, 7, 7, 59], list(range(0, n_items, 2))]
    data = UserHistories(
        user_index=np.arange(4), indptr=np.cumsum([0, *map(len, rows)]),
        items=np.array([i for r in rows for i in r]),
        timestamps=np.zeros(sum(map(len, rows)), dtype=np.int64),
        n_items=n_items,
    )  # fmt: skip
    expected = blend_score_before(model, data)

    def no_matrix(self, histories):
        raise AssertionError(f"{self.name} made its own score matrix")

    monkeypatch.setattr(type(model.members[2]), "score", no_matrix)
    monkeypatch.setattr(type(model.members[3]), "score", no_matrix)
    found = model.score(data)
    torch.testing.assert_close(found, expected, rtol=0, atol=1e-4)
    assert (found[0] == 0).all() and found[1].abs().sum() > 0


def test_reasons_taken_in_groups_of_similar_lengths_equal_those_of_one_padded_block(
    monkeypatch,
):
    """A chunk's users go to `best_supporters` in groups of similar history lengths, each
    padded to its own longest: every reason is the one the whole chunk padded to its longest
    gives, and the groups are narrower than the chunk."""
    from recsys_core.ranking import topk as topk_module

    n_items = 400
    model = random_blend(n_items)
    data = histories(90, n_items, seed=3)
    top = torch.from_numpy(top_k(model, data, 10).items)
    widths = []
    best_supporters = Blend.best_supporters

    def recorded(self, history, candidates):
        widths.append(history.shape[1])
        return best_supporters(self, history, candidates)

    monkeypatch.setattr(Blend, "best_supporters", recorded)
    monkeypatch.setattr(topk_module, "REASON_GROUPS", 1)
    whole = topk_module._reasons(model, data, top, None)
    assert widths == [padded_history(data).shape[1]]
    monkeypatch.setattr(topk_module, "REASON_GROUPS", 6)
    monkeypatch.setattr(topk_module, "REASON_GROUP_USERS", 10)
    widths.clear()
    grouped = topk_module._reasons(model, data, top, None)
    assert len(widths) == 6 and min(widths) < max(widths) == padded_history(data).shape[1]
    assert torch.equal(grouped, whole)
    assert (whole >= 0).float().mean() > 0.5  # most recommendations have a reason
