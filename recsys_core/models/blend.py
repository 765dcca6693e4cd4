"""A blend of models: a weighted sum of each member's per-user standardized scores.

Members' raw scores live on different scales (EASE weights, cosine similarities, logits),
so each member's scores are standardized per user over the items the user has not seen,
then summed with weights tuned on validation data:

1. Hold out part of the training data the way the model will be judged
   (`FitOptions.validation_protocol`, e.g. each user's latest 20%).
2. Fit every member on the rest and tune the weights by coordinate ascent on NDCG@10 of
   the held-out part (full ranking, seen items excluded).
3. Refit the members with non-zero weight on all the training data.

Items without training events (new items) are scored with weights of their own when the
training data has any: members that know items only from events give them no signal (or
noise), so the weights that suit items with a history drown the text members among new
items. Validation then also holds out a random share of the items with all their events
(`cold_fraction`), and a second weight vector is tuned on ranking those among themselves;
it scores the items that have no events at fit time. The first weight vector is tuned with
the new items left out of the ranking: it never scores them, and they are never held out.

The fitted state is each member's tensors under a `m<j>.` prefix plus the weights, so a
blend saves and loads as safetensors like any other model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from recsys_core.data.interactions import UserHistories
from recsys_core.data.splits import Split, cold_items
from recsys_core.errors import InputError
from recsys_core.evaluation.evaluate import ScoreMatrixEvaluator, relevance_matrix
from recsys_core.models.base import (
    Capabilities,
    EpochMetrics,
    FitOptions,
    Recommender,
    TestProfile,
    TrainingData,
)
from recsys_core.models.registry import create, format_spec, register
from recsys_core.models.sparse_items import compiled_loop, csr_tensor, run_passes
from recsys_core.models.training import fit_shared, shared_fits, validation_part
from recsys_core.ranking.topk import score_in_chunks

# cheap, complementary members: co-occurrence with text and sitting-window signals, the same
# weights read from the history weighted towards the latest items (one EASE fit for both: on
# ML-100K, NDCG@10 +1-2% on user_temporal and +9% on leave_one_out, -1.4% on global_temporal,
# 4 seeds; the 5M-event log's nightly 150 to 124 s), neighbours, the learned text model and a
# factor model.
# The factor model is ALS with a strong penalty and a low confidence weight (chosen on a
# validation split of ML-100K); with `als`'s own defaults it overfits and the blend drops it.
DEFAULT_MEMBERS = (
    "ease(text_weight=30, window=5, window_weight=0.7)",
    "ease(text_weight=30, window=5, window_weight=0.7, history_half_life=5)",
    "itemknn",
    "content",
    "als(factors=128, regularization=30, alpha=3)",
)


@dataclass(frozen=True)
class BlendConfig:
    # member models as specs: `name` or `name(key=value, ...)` (see models.base.parse_spec)
    members: tuple[str, ...] = DEFAULT_MEMBERS
    grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)  # weights tried per member
    rounds: int = 2  # coordinate-ascent passes over the members
    tune_users: int = 2000  # held-out users the weights are tuned on (at most)
    tune_memory_mb: int = 1024  # bound on the members' held-out score matrices together
    # share of the validation's items held out as new ones, when the training data has items
    # without events: their weights are tuned apart (0 = new items take the others' weights)
    cold_fraction: float = 0.1

    def __post_init__(self) -> None:
        # JSON round trips give lists; the config must stay hashable and compare equal
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "grid", tuple(float(g) for g in self.grid))
        if not self.members:
            raise ValueError("a blend needs at least one member")


@register
class Blend(Recommender):
    name = "blend"
    config_class = BlendConfig
    description = "Weighted sum of standardized member scores, weights tuned on validation."
    capabilities = Capabilities(uses_text=True, explains=True)
    test_profile = TestProfile(
        quick={"members": ["ease", "itemknn", "content"]}, text={"members": ["content"]}
    )

    def __init__(self, config: BlendConfig | None = None, members: list[Recommender] | None = None):
        """A blend builds its members once: the same instances are tuned and refit.

        Args:
            config: The members' specs and the tuning.
            members: The members already built from `config.members`, in order (e.g. the
                stand-ins `adapted` chose); None builds them here.
        """
        super().__init__(config)
        self.members = members if members is not None else [create(s) for s in self.config.members]
        if len(self.members) != len(self.config.members):
            raise ValueError("a blend needs one member per spec of its config")
        self.weights = torch.ones(len(self.members)) / len(self.members)
        # weights of the items without training events (`eventless`, (I,) bool); None = as
        # the others
        self.cold_weights: torch.Tensor | None = None
        self.eventless: torch.Tensor | None = None

    @property
    def uses_text(self) -> bool:
        return any(m.uses_text for m in self.members)

    def size_problem(self, n_items: int, memory_bytes: int) -> str | None:
        problems = [m.size_problem(n_items, memory_bytes) for m in self.members]
        found = [p for p in problems if p is not None]
        return f"blend member {'; member '.join(found)}" if found else None

    def adapted(self, n_items: int, memory_bytes: int) -> tuple[Recommender | None, list[str]]:
        """The blend with each member that does not fit replaced by its stand-in (when that
        is not a member already) or left out; None when no member is left."""
        specs: list[str] = []
        members: list[Recommender] = []
        notes: list[str] = []
        keys: set[str] = set()  # full configs, so a stand-in that is a member already is not added
        for spec, member in zip(self.config.members, self.members, strict=True):
            model, changes = member.adapted(n_items, memory_bytes)
            notes += [f"blend member {note}" for note in changes]
            key = None if model is None else format_spec(model.name, model.params())
            if key is None or key in keys:
                continue
            keys.add(key)
            specs.append(spec if model is member else str(member.stand_in()))
            members.append(model)
        if not notes:
            return self, []
        if not members:
            return None, [*notes, "blend: no member left; left out"]
        return Blend(dataclasses.replace(self.config, members=tuple(specs)), members), notes

    def fit(self, data: TrainingData, options: FitOptions) -> EpochMetrics:
        epochs: EpochMetrics = []
        eventless = torch.from_numpy(data.interactions.item_counts() == 0)
        self.cold_weights, self.eventless = None, None
        try:
            held_out, split = validation_part(data, options)
        except InputError:
            split = None  # too little data to hold any out: keep equal weights
        cold = None
        if split is not None and self.uses_text and bool(eventless.any()):
            held_out, split, cold = _with_new_items(held_out, split, self.config, options.seed)
        if split is not None and len(self.members) > 1:
            rng = np.random.default_rng(options.seed)
            parts = [split] if cold is None else [split, cold]
            per_user = data.n_items * 4 * len(self.members) * len(parts)
            limit = min(
                self.config.tune_users, max(1, (self.config.tune_memory_mb << 20) // per_user)
            )
            histories, scores = [], []
            for part in parts:
                users = part.test_users
                if len(users) > limit:
                    users = np.sort(rng.choice(users, size=limit, replace=False))
                histories.append((users, part.train.histories(users)))
                scores.append([])
            # the members themselves are tuned here and refit below, on all of `data`
            for member in _fit_shared(self.members, held_out, options):
                for (_, h), found in zip(histories, scores, strict=True):
                    member_scores = score_in_chunks(member, h, self.config.tune_memory_mb)
                    found.append(standardize(member_scores, h))
            judges = []
            for part, (users, h) in zip(parts, histories, strict=True):
                relevant = relevance_matrix(part.test, users, data.n_users, data.n_items)
                judge = ScoreMatrixEvaluator(h, relevant, (10,))
                if part.candidates is not None:  # new items are ranked among themselves
                    judge.seen |= ~torch.from_numpy(part.candidates)
                elif cold is not None:
                    # new items (none of `data`'s events, or held out as new here) take the
                    # new-item weights when scored and are never among these held-out
                    # items: the other weights are tuned without them
                    judge.seen |= eventless | torch.from_numpy(cold.candidates)
                judges.append(judge)
            self.weights, epochs = _tune(
                torch.stack(scores[0]), judges[0], self.config.grid, self.config.rounds
            )
            if cold is not None:
                self.cold_weights, cold_epochs = _tune(
                    torch.stack(scores[1]), judges[1], self.config.grid, self.config.rounds
                )
                self.eventless = eventless
                for row, cold_row in zip(epochs, cold_epochs, strict=True):
                    row["validation_new_items_ndcg@10"] = cold_row["validation_ndcg@10"]
        _fit_shared(
            [m for m, used in zip(self.members, self._used(), strict=True) if used], data, options
        )
        self.n_items = data.n_items
        return epochs

    def refit(self, data: TrainingData, options: FitOptions) -> bool:
        """Keep the tuned weights and fit the members that score on `data`; new items (no
        events in `data`) take the new-item weights where they were tuned."""
        _fit_shared(
            [m for m, used in zip(self.members, self._used(), strict=True) if used], data, options
        )
        if self.cold_weights is not None:
            self.eventless = torch.from_numpy(data.interactions.item_counts() == 0)
        self.n_items = data.n_items
        return True

    def _used(self) -> list[bool]:
        """Whether each member scores: a non-zero weight for items with events or without."""
        cold = (
            self.cold_weights if self.cold_weights is not None else torch.zeros_like(self.weights)
        )
        return [bool(w > 0 or c > 0) for w, c in zip(self.weights, cold, strict=True)]

    def score(self, histories: UserHistories) -> torch.Tensor:
        if self.eventless is None:  # one weight per member: its z-scores folded into the sum
            return self._score_folded(histories)
        total = torch.zeros(len(histories), self.n_items)
        cold = self.cold_weights if self.cold_weights is not None else self.weights
        for j, (member, used) in enumerate(zip(self.members, self._used(), strict=True)):
            if used:  # each item's weight: new items take their own
                weight = torch.where(self.eventless, cold[j], self.weights[j])  # (I,)
                total += weight * standardize(member.score(histories), histories)
        return total  # (B, I)

    def score_into(self, histories: UserHistories, out: torch.Tensor) -> None:
        if self.eventless is None:
            self._score_folded(histories, out)
        else:
            out.copy_(self.score(histories))

    def _score_folded(
        self, histories: UserHistories, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The weighted sum of the members' z-scores, with one weight per member. (B, I)

        Members with factors (`als`, `content`) never make their own (B, I) scores: the
        moments of u . v over the items follow from each user vector u and the item vectors'
        sum and Gram matrix (D x D), so each user vector is scaled by weight / spread and all
        of them go through one product with the members' item vectors side by side. Members
        with sparse item-item weights add their z-scores user by user without a (B, I) block
        (`Recommender.standardized_pass`), a few users at a time through every such member,
        so each user's row of the sum stays in cache from one member to the next; the
        others' blocks are folded in by `add_standardized`, one pass each.
        """
        rows, n_items = len(histories), self.n_items
        seen = _seen_positions(histories, n_items)
        shift = torch.zeros(rows, 1, dtype=torch.float64)
        scaled, vectors, others = [], [], []
        for weight, member, used in zip(self.weights, self.members, self._used(), strict=True):
            if not used:
                continue
            pair = member.factors(histories) if member.capabilities.has_factors else None
            if pair is None:
                others.append((float(weight), member))
                continue
            users, items = pair  # (B, D), (I, D)
            moments = self._item_moments(len(vectors), items)
            scale, member_shift = _factor_z_scale(users, moments, seen, float(weight))
            scaled.append(users.float() * scale.float().unsqueeze(1))
            vectors.append(items)
            shift += member_shift
        total = torch.empty(rows, n_items) if out is None else out
        if scaled:
            torch.matmul(torch.cat(scaled, dim=1), self._side_by_side(vectors).T, out=total)
        else:
            total.zero_()
        passes = []
        for weight, member in others:
            found = member.standardized_pass(total, histories, weight, seen)
            if found is None:
                shift += add_standardized(total, member.score(histories), weight, seen)
            else:
                passes.append(found)
        run_passes(passes, rows, n_items)  # a few users at a time through every member
        for found in passes:
            shift += torch.from_numpy(found.shift).unsqueeze(1)
        total.sub_(shift.float()).view(-1).index_fill_(0, seen, 0.0)
        return total  # (B, I)

    def _item_moments(self, slot: int, items: torch.Tensor) -> _ItemMoments:
        """The sum and Gram matrix of the `slot`-th factor member's item vectors, made once
        per vectors object (a member's state is replaced, never changed in place)."""
        cache = self.__dict__.setdefault("_moments", {})
        found = cache.get(slot)
        if found is None or found.items is not items:
            found = cache[slot] = _ItemMoments.of(items)
        return found

    def _side_by_side(self, vectors: list[torch.Tensor]) -> torch.Tensor:
        """The factor members' (I, D_j) item vectors as one contiguous (I, sum D_j) float32
        matrix, made once per set of vectors objects."""
        if len(vectors) == 1:
            return vectors[0].float()
        cached = self.__dict__.get("_stacked")
        if (
            cached is None
            or len(cached[0]) != len(vectors)
            or any(a is not b for a, b in zip(cached[0], vectors, strict=True))
        ):
            cached = self._stacked = (list(vectors), torch.cat([v.float() for v in vectors], 1))
        return cached[1]

    def best_supporters(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """What the ranker would take from `pair_weights`, without its (B, L, K) sums: each
        member's weights are made once per fit (as there), then a compiled loop scales and
        sums them user by user in the same float32 order and keeps the first largest slot
        (`_supporters_loop`), so the reasons are the same to the bit. The explanations of
        `benchmarks/recommend.py`'s `blend_item_item` (4,000 users, 62,500 items, top 20):
        0.39-0.40 to 0.27-0.29 s, the members' lookups (about 0.19 s) being most of what
        is left."""
        parts, slots, weights = self._member_pair_weights(history, candidates)
        reasons = np.full(tuple(candidates.shape), -1, dtype=np.int64)
        if parts:
            compiled_loop(_supporters_loop)(
                tuple(np.ascontiguousarray(part.numpy(), dtype=np.float32) for part in parts),
                np.asarray(slots, dtype=np.int64),
                np.asarray(weights, dtype=np.float32),
                np.ascontiguousarray(history.numpy(), dtype=np.int64),
                np.ascontiguousarray(candidates.numpy(), dtype=np.int64),
                reasons,
            )
        return torch.from_numpy(reasons)

    def pair_weights(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(history.shape[0], history.shape[1], candidates.shape[1])
        padding = (history < 0).unsqueeze(-1)  # (B, L, 1)
        parts, slots, weights = self._member_pair_weights(history, candidates)
        scaled = []
        for part in parts:  # each member's support on a common scale per user
            # over the user's own slots: what a member puts in padding (e.g. item 0's text)
            # would make the scale, and so the reason, depend on who else is ranked in the
            # chunk
            part = part.masked_fill(padding, 0.0)
            scaled.append((part, part.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)))
        for slot, weight in zip(slots, weights, strict=True):
            part, scale = scaled[slot]
            total += weight * part / scale
        return total  # (B, L, K)

    def _member_pair_weights(
        self, history: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[int], list[float]]:
        """The (B, L, K) pair weights of the members with weight, each made once per fit
        (members sharing a fit share them: `explanation_key`), and for each such member in
        order the index of its part and its weight."""
        parts: list[torch.Tensor] = []
        slots: list[int] = []
        weights: list[float] = []
        done: dict = {}  # explanation key -> its part's index
        for member, weight in zip(self.members, self.weights.tolist(), strict=True):
            if weight <= 0:
                continue
            key = member.explanation_key()
            slot = done.get(key) if key is not None else None
            if slot is None:
                part = member.pair_weights(history, candidates)
                if part is None:
                    continue
                slot = len(parts)
                parts.append(part)
                if key is not None:
                    done[key] = slot
            slots.append(slot)
            weights.append(weight)
        return parts, slots, weights

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"weights": self.weights.clone()}
        if self.cold_weights is not None and self.eventless is not None:
            state["cold_weights"] = self.cold_weights.clone()
            state["eventless"] = self.eventless.clone()
        stored: set[int] = set()  # members may hold one tensor (e.g. the item text vectors)
        written: dict[int, dict[str, torch.Tensor]] = {}
        for j, (member, used) in enumerate(zip(self.members, self._used(), strict=True)):
            if used:
                member_state = member.state_dict()
                # a member that shares another's fit (e.g. EASE with and without a history
                # half-life) is written once: the second names the first
                same = next(
                    (
                        i
                        for i, earlier in written.items()
                        if type(self.members[i]) is type(member)
                        and _equal_states(earlier, member_state)
                    ),
                    None,
                )
                if same is not None:
                    state[f"m{j}.{SAME_AS}"] = torch.tensor(same)
                    continue
                written[j] = member_state
                for k, v in member_state.items():
                    # safetensors refuses tensors that share memory: copy a repeated one
                    shared = v.untyped_storage().data_ptr() in stored
                    stored.add(v.untyped_storage().data_ptr())
                    state[f"m{j}.{k}"] = v.clone() if shared else v
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.weights = state["weights"].float()
        # blends saved before new items had weights of their own score them as the others
        self.cold_weights = state["cold_weights"].float() if "cold_weights" in state else None
        self.eventless = state["eventless"].bool() if "eventless" in state else None
        for j, (member, used) in enumerate(zip(self.members, self._used(), strict=True)):
            if used:
                prefix = f"m{j}."
                if prefix + SAME_AS in state:
                    member.share_state(self.members[int(state[prefix + SAME_AS])])
                else:
                    member.load_state_dict(
                        {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                    )
                self.n_items = member.n_items

    def params(self) -> dict:
        params = super().params()
        params["members"] = list(self.config.members)
        params["grid"] = list(self.config.grid)
        return params


def _fit_shared(
    members: list[Recommender], data: TrainingData, options: FitOptions
) -> list[Recommender]:
    """Fit each member; one whose fit equals an earlier one's (same `fit_key` on the same
    data, e.g. itemknn with and without `history_half_life`, or the night's `ease` candidate
    and a member) takes that fit's state instead (`training.shared_fits`)."""
    with shared_fits():
        for member in members:
            fit_shared(member, data, options)
    return members


def _with_new_items(
    held_out: TrainingData, split: Split, config: BlendConfig, seed: int
) -> tuple[TrainingData, Split, Split | None]:
    """The validation part with a random `cold_fraction` of its items also held out with all
    their events, as new items are at fit time: (what the members fit on, the held-out part
    of the remaining items, the new items' part ranked among themselves). The last is None
    when too little data is left to hold any out.

    Args:
        held_out: What the members fit on in validation.
        split: Its held-out part.
        config: The blend's settings (`cold_fraction`).
        seed: Seeds the choice of items.
    """
    if config.cold_fraction <= 0:
        return held_out, split, None
    try:
        cold = cold_items(held_out.interactions, config.cold_fraction, seed=seed)
    except InputError:
        return held_out, split, None
    new = pl.Series("item_index", np.flatnonzero(cold.candidates))
    # each user's held-out items among the remaining ones, for users the members still know
    test = split.test.filter(~pl.col("item_index").is_in(new.implode())).join(
        cold.train.frame.select("user_index").unique(), on="user_index", how="semi"
    )
    warm = Split(cold.train, test, split.protocol, split.candidates)
    if not len(warm.test_users):
        return held_out, split, None
    return TrainingData(cold.train, held_out.item_embeddings), warm, cold


def standardize(scores: torch.Tensor, histories: UserHistories) -> torch.Tensor:
    """Per-user z-scores over the items each user has not seen. (B, I) -> (B, I).

    One (B, I) buffer worked in place: at a large catalog the score block is hundreds of MB,
    and each extra temporary (masks, differences) is another pass over memory and another
    allocation whose pages the kernel must zero. The arithmetic is the same elementwise as
    masking and subtracting out of place, so the result is the same to the bit.
    """
    rows, n_items = scores.shape
    seen = _seen_positions(histories, n_items)  # (distinct seen,) flat positions
    count = (
        torch.from_numpy(n_items - np.bincount(seen.numpy() // max(n_items, 1), minlength=rows))
        .unsqueeze(1)
        .clamp_min(1)
    )  # (B, 1) unseen items per user, int64
    work = scores.float().clone()  # the values, then their squared deviations
    flat = work.view(-1)
    flat.index_fill_(0, seen, 0.0)
    mean = work.sum(1, keepdim=True) / count
    work.sub_(mean)
    flat.index_fill_(0, seen, 0.0)
    spread = (work.pow_(2).sum(1, keepdim=True) / count).sqrt()
    # scores in another precision are standardized in it, as they always were
    same = scores.dtype == work.dtype
    out = torch.sub(scores, mean, out=work) if same else scores - mean
    out.div_(spread.clamp_min(1e-8))
    out.view(-1).index_fill_(0, seen, 0.0)
    return out


def _supporters_loop(parts, slots, weights, history, candidates, reasons):
    # parts: G (B, L, K) float32 pair weights; member i adds weights[i] * parts[slots[i]]
    # / that part's scale; the float32 operations and their order are `Blend.pair_weights`'
    n_users, n_slots = history.shape
    n_cand = candidates.shape[1]
    scales = np.empty(len(parts), dtype=np.float32)
    total = np.empty(n_cand, dtype=np.float32)
    best = np.empty(n_cand, dtype=np.float32)
    for b in range(n_users):
        for g in range(len(parts)):  # the largest |weight| over the user's own slots
            high = np.float32(0.0)
            for slot in range(n_slots):
                if history[b, slot] >= 0:
                    for k in range(n_cand):
                        high = max(high, abs(parts[g][b, slot, k]))
            scales[g] = max(high, np.float32(1e-12))
        best[:] = -np.inf
        reasons[b, :] = -1
        for slot in range(n_slots):
            if history[b, slot] < 0:
                continue
            for k in range(n_cand):
                total[k] = 0.0
            for i in range(len(slots)):
                part, scale = parts[slots[i]], scales[slots[i]]
                for k in range(n_cand):
                    total[k] += weights[i] * part[b, slot, k] / scale
            for k in range(n_cand):
                if total[k] > best[k]:  # the first slot among equals
                    best[k] = total[k]
                    if total[k] > 0 and candidates[b, k] >= 0:
                        reasons[b, k] = history[b, slot]
                    else:
                        reasons[b, k] = -1


# bytes of the block of centred scores `add_standardized` takes the moments of (in cache)
MOMENT_BLOCK_BYTES = 1 << 21


def add_standardized(
    total: torch.Tensor, scores: torch.Tensor, weight: float, seen: torch.Tensor
) -> torch.Tensor:
    """Add `weight` times `scores`' per-user z-scores over the unseen items to `total`, in
    place, but for each user's shift `weight * mean / spread`, which is returned (B, 1)
    float64 for the caller to subtract once for all members. The seen items' entries of
    `total` are left for the caller to overwrite.

    `standardize` then a weighted sum makes about fifteen passes over a (B, I) block per
    member; this makes two over memory (the moments, one fused multiply-add) and no (B, I)
    temporary. The moments are taken a few users at a time, each user's scores less their
    float32 mean over all items, in a block small enough to stay in cache: sums of centred
    values in float32 are about as accurate as float64 sums of the raw ones (which cost
    about seven times as much), and the seen items are zeroed in the block rather than
    taken out of the sums. The result equals `standardize`'s to float32 rounding, not to
    the bit.

    Args:
        total: (B, I) float32 running sum.
        scores: (B, I) a member's scores (read only).
        weight: The member's weight.
        seen: Distinct flat positions row * I + item of the users' seen items, ascending.
    """
    rows, n_items = scores.shape
    scores = scores.float()
    width = max(n_items, 1)
    step = max(1, MOMENT_BLOCK_BYTES // (4 * width))
    center, sums, squares = torch.empty(rows), torch.empty(rows), torch.empty(rows)
    work = torch.empty(min(step, rows), n_items)
    starts = torch.arange(0, rows + step, step)
    bounds = torch.searchsorted(seen, starts * width).tolist()
    for b, r0 in enumerate(range(0, rows, step)):
        r1 = min(r0 + step, rows)
        block, centred = scores[r0:r1], work[: r1 - r0]
        mean = block.sum(1, keepdim=True).div_(width)
        torch.sub(block, mean, out=centred)
        centred.view(-1).index_fill_(0, seen[bounds[b] : bounds[b + 1]] - r0 * width, 0.0)
        center[r0:r1] = mean.squeeze(1)
        sums[r0:r1] = centred.sum(1)
        squares[r0:r1] = centred.square_().sum(1)
    count = (n_items - torch.bincount(seen // width, minlength=rows)).clamp_min(1).double()
    offset = sums.double() / count  # the unseen items' mean less the centre
    variance = (squares.double() / count - offset.square()).clamp_min(0)
    scale = weight / variance.sqrt().clamp_min(1e-8)  # (B,)
    total.addcmul_(scores, scale.float().unsqueeze(1))
    return ((center.double() + offset) * scale).unsqueeze(1)


def _unseen_z_scale(
    sums: torch.Tensor,
    squares: torch.Tensor,
    seen_rows: torch.Tensor,
    seen_values: torch.Tensor,
    n_items: int,
    weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per user, `weight / spread` (B,) and `weight * mean / spread` (B, 1), float64, with
    the mean and spread over the items the user has not seen.

    Args:
        sums: (B,) float64 sum of the user's scores over all items.
        squares: (B,) float64 sum of their squares.
        seen_rows: (S,) the row of each distinct seen item.
        seen_values: (S,) float64 its score, taken out of the sums.
        n_items: Items scored per user.
        weight: The member's weight.
    """
    rows = sums.shape[0]
    seen_sum = torch.zeros(rows, dtype=torch.float64).index_add_(0, seen_rows, seen_values)
    seen_squares = torch.zeros(rows, dtype=torch.float64).index_add_(
        0, seen_rows, seen_values.square()
    )
    count = (n_items - torch.bincount(seen_rows, minlength=rows)).clamp_min(1).double()
    mean = (sums - seen_sum) / count
    variance = ((squares - seen_squares) / count - mean.square()).clamp_min(0)
    scale = weight / variance.sqrt().clamp_min(1e-8)  # (B,)
    return scale, (mean * scale).unsqueeze(1)


# the state key of a member that shares an earlier member's fitted state: its index
SAME_AS = "same_as"


def _equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k] is b[k] or (a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and
                         torch.equal(a[k], b[k]))
        for k in a
    )  # fmt: skip


@dataclass(frozen=True)
class _ItemMoments:
    """What the per-user moments of a factor member's scores need from its item vectors."""

    items: torch.Tensor  # (I, D) as the member gave them
    total: torch.Tensor  # (D,) float64 sum over the items
    gram: torch.Tensor  # (D, D) float64 V^T V

    @classmethod
    def of(cls, items: torch.Tensor) -> _ItemMoments:
        items64 = items.double()
        return cls(items, items64.sum(0), items64.T @ items64)


def _factor_z_scale(
    users: torch.Tensor, moments: _ItemMoments, seen: torch.Tensor, weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """For scores u . v_i: per user the scale `weight / spread` (B,) and the shift
    `weight * mean / spread` (B, 1), float64, with the mean and spread over the items the
    user has not seen (as `add_standardized` gives them), from sums over all items
    (u . sum v, u^T V^T V u) less the seen items' own scores.

    Args:
        users: (B, D) user vectors.
        moments: The item vectors' `_ItemMoments`.
        seen: Distinct flat positions row * I + item of the users' seen items.
        weight: The member's weight.
    """
    n_items = moments.items.shape[0]
    u = users.double()  # (B, D)
    seen_rows = seen // max(n_items, 1)
    # the seen items' own scores in float32, as the member's product gives them: one
    # sampled product over the seen positions, not a (seen, D) copy of each side
    seen_values = _sampled_products(users.float(), moments.items.float(), seen).double()
    squares = ((u @ moments.gram) * u).sum(1)  # (B,) sum over all items of (u . v)^2
    return _unseen_z_scale(u @ moments.total, squares, seen_rows, seen_values, n_items, weight)


def _sampled_products(users: torch.Tensor, items: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """u_b . v_i at each flat position b * I + i of `seen` (ascending), as float32 products
    of the (B, D) users and (I, D) items give them. (S,)"""
    rows, n_items = users.shape[0], items.shape[0]
    if not len(seen):
        return torch.zeros(0)
    indptr = torch.zeros(rows + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(seen // n_items, minlength=rows), 0, out=indptr[1:])
    pattern = csr_tensor(indptr, seen % n_items, torch.zeros(len(seen)), (rows, n_items))
    return torch.sparse.sampled_addmm(pattern, users, items.T, beta=0.0).values()


def _seen_positions(histories: UserHistories, n_items: int) -> torch.Tensor:
    """Distinct flat positions row * n_items + item of the users' history items."""
    rows = np.repeat(np.arange(len(histories), dtype=np.int64), histories.lengths())
    return torch.from_numpy(np.unique(rows * n_items + histories.items))


def _tune(
    scores: torch.Tensor,
    judge: ScoreMatrixEvaluator,
    grid: tuple[float, ...],
    rounds: int,
) -> tuple[torch.Tensor, EpochMetrics]:
    """Coordinate ascent on validation NDCG@10 over the grid of each member's weight.

    Args:
        scores: (M, B, I) standardized member scores of the held-out users.
        judge: Their metrics at a cut-off of 10 (seen items are never ranked).
        grid: Weights tried for each member.
        rounds: Passes over the members.

    Returns:
        (M,) weights summing to 1, and the best NDCG@10 after each round.
    """
    metric = f"ndcg@{judge.ks[0]}"

    def ndcg(weights: torch.Tensor) -> float:
        return judge(torch.einsum("m,mbi->bi", weights, scores), in_place=True)[metric]

    singles = [ndcg(torch.eye(len(scores))[m]) for m in range(len(scores))]
    weights = torch.eye(len(scores))[int(np.argmax(singles))]  # start from the best member
    best = max(singles)
    epochs: EpochMetrics = []
    for _ in range(rounds):
        for m in range(len(scores)):
            for value in grid:
                trial = weights.clone()
                trial[m] = value
                if trial.sum() <= 0:
                    continue
                result = ndcg(trial)
                if result > best + 1e-9:  # strictly better: ties keep the simpler blend
                    best, weights = result, trial
        epochs.append({"validation_ndcg@10": best})
    return weights / weights.sum(), epochs
