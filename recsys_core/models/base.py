"""The one model contract.

A model has a frozen config dataclass (its hyper-parameters), `fit(data, options)` that
returns per-epoch metrics, and `score(histories)` that returns a (users, items) score matrix.
Ranking, seen-item exclusion and chunking live in `recsys_core.ranking`, not in models.

Models score users from their histories, not from a user index, wherever the family allows
it: a user who arrived after training still gets recommendations from an item-based model.
Fitted state is a flat dict of tensors (saved as safetensors, never pickled).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from recsys_core.data.interactions import Interactions, UserHistories
from recsys_core.models.registry import create, format_spec
from recsys_core.settings import ComputeSettings

if TYPE_CHECKING:
    import scipy.sparse as sp


@dataclass
class StandardizedPass:
    """A member's user-by-user pass (`Recommender.standardized_pass`), to be run over every
    row of a chunk (`sparse_items.run_passes`): `run(start, stop, row)` adds rows
    start..stop of the member's scaled scores to the running sum, with `row` a float32 (I,)
    buffer of the calling thread's own, and fills `shift` for those rows."""

    run: Callable[[int, int, np.ndarray], None]
    shift: np.ndarray  # (B,) float64 each user's `weight * mean / spread`
    cost: np.ndarray  # (B + 1,) cumulative work of the rows (`sparse_items.work`)
    scratch_rows: int = 1  # `row` holds at least this many (I,) rows

    def join(self, other: StandardizedPass) -> StandardizedPass | None:
        """One pass that does this pass's work and `other`'s, each still filling its own
        `shift`, when the two can share their reads (members over one weights matrix);
        None when they cannot."""
        return None


@dataclass(frozen=True)
class Capabilities:
    """What a model can do, declared next to it; tests and benchmarks read these flags.

    Attributes:
        uses_text: Can use item text embeddings (and then rank items without events). Whether
            one configured instance does is its `uses_text` property.
        sequential: Reads the order of a history: it continues a sequence.
        has_factors: `factors()` gives user and item vectors whose product is `score`.
        explains: Recommendations come with the history item that supports them
            (`pair_weights`, or the similarity of the model's item vectors).
        personalized: Scores differ between users (popularity's do not).
        devices: Device kinds it trains on (`cpu`, `cuda`); torch-trained models add `cuda`.
    """

    uses_text: bool = False
    sequential: bool = False
    has_factors: bool = False
    explains: bool = False
    personalized: bool = True
    devices: tuple[str, ...] = ("cpu",)


@dataclass(frozen=True)
class TestProfile:
    """Parameters that make a model quick enough for the conformance tests.

    Attributes:
        quick: Parameters for tests that only need a fitted model (seconds in all).
        learns: Parameters added to `quick` for tests that need the planted structure learned
            (more epochs for trained models).
        text: Parameters added to turn on the text path of a model whose text is optional.
    """

    __test__ = False  # not a pytest test class, despite the name

    quick: dict[str, Any] = field(default_factory=dict)
    learns: dict[str, Any] = field(default_factory=dict)
    text: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FitOptions:
    """Run-level settings, kept apart from model hyper-parameters.

    Attributes:
        device: Torch device for training (`auto`, `cpu`, `cuda`, ...); scoring runs on CPU.
        seed: Seeds every random choice of a fit, so the same seed gives the same model.
        progress: Show progress bars.
        validation_protocol: How a model that tunes itself (the blend) holds out part of its
            training data: the same protocol it will be judged by, so tuning targets the
            same kind of future.
    """

    device: str = "cpu"
    seed: int = ComputeSettings.model_fields["seed"].default
    progress: bool = False
    validation_protocol: str = "user_temporal"


@dataclass(frozen=True)
class TrainingData:
    """What a model trains on.

    Attributes:
        interactions: Training events in index space.
        item_embeddings: (n_items, D) unit-length text vectors aligned with the item
            vocabulary; zero rows for items without text. None when not encoded.
    """

    interactions: Interactions
    item_embeddings: torch.Tensor | None = None

    @property
    def n_items(self) -> int:
        return self.interactions.n_items

    @property
    def n_users(self) -> int:
        return self.interactions.n_users


EpochMetrics = list[dict[str, float]]


class Recommender(ABC):
    """Base class of every model.

    Subclasses set `name`, `config_class`, `description`, `capabilities` and `test_profile`,
    and are made available by the `register` decorator.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    description: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    test_profile: ClassVar[TestProfile] = TestProfile()
    # parameters that change how a fitted model scores, not what it fits (see `fit_key`)
    scoring_params: ClassVar[tuple[str, ...]] = ()
    # parameters of earlier versions, ignored when a saved model is loaded
    retired_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.config_class()
        self.n_items = 0

    @property
    def uses_text(self) -> bool:
        """This configured model needs item embeddings (and ranks items with no events)."""
        return self.capabilities.uses_text

    def score_floats_per_user(self, n_items: int) -> int:
        """Working floats `score` needs per user (the ranker sizes its chunks by it): the
        (B, I) output and two matrices of the same size by default."""
        return 3 * n_items

    # -- training and scoring -------------------------------------------------------------
    @abstractmethod
    def fit(self, data: TrainingData, options: FitOptions) -> EpochMetrics:
        """Train on `data`; return one metrics dict per epoch (empty for closed-form models)."""

    def refit(self, data: TrainingData, options: FitOptions) -> bool:
        """Fit again on more data (all events, after validation), keeping what `fit` chose on
        its own validation part, so the refit model is the one that was measured and nothing
        tuned is searched again. Returns False when the model keeps nothing of the kind; the
        caller then fits it anew.

        Args:
            data: What to fit on now (e.g. every event).
            options: Run-level settings.
        """
        return False

    @abstractmethod
    def score(self, histories: UserHistories) -> torch.Tensor:
        """Scores of every item for each user. Returns (B, n_items) float32."""

    def score_into(self, histories: UserHistories, out: torch.Tensor) -> None:
        """`score` written into `out`, a (B, n_items) float32 C-ordered buffer whose contents
        are not read: the ranker's buffer, reused from chunk to chunk. Models that can make
        their scores in place override it, sparing a fresh (B, I) block (its pages are
        faulted in and zeroed anew for each chunk) and the copy."""
        out.copy_(self.score(histories))

    def factors(self, histories: UserHistories) -> tuple[torch.Tensor, torch.Tensor] | None:
        """User and item vectors whose product is `score`, for factor and embedding models.

        Returns ((B, D) user vectors, (I, D) item vectors), or None for models that are not
        a single inner product. The ranker uses it to score a chunk with one matrix product.
        """
        return None

    def sparse_score(self, histories: UserHistories) -> sp.csr_matrix | None:
        """`score` as a sparse (B, n_items) matrix whose missing entries are 0, for models
        whose scores are mostly zeros (sparse item-item weights), else None. The ranker then
        writes the entries into its own reused score buffer instead of a new dense matrix."""
        return None

    def standardized_pass(
        self, total: torch.Tensor, histories: UserHistories, weight: float, seen: torch.Tensor
    ) -> StandardizedPass | None:
        """A pass that adds `weight` times this model's per-user z-scores over the unseen
        items to the (B, I) float32 `total` user by user, without a (B, I) block of scores;
        None when the model has no such path. `sparse_items.run_passes` runs it (with the
        other members' passes: a few users at a time through each); its `shift` then holds
        each user's `weight * mean / spread`, as `blend.add_standardized` returns it from
        `score`'s block. `seen` holds the distinct flat positions row * I + item of the
        users' seen items."""
        return None

    def pair_weights(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor | None:
        """How much each history item supports each candidate, for explanations.

        Args:
            history: (B, L) item indexes, -1 for padding.
            candidates: (B, K) item indexes.

        Returns:
            (B, L, K) weights, or None when the model has no item-to-item notion.
        """
        return None

    def best_supporters(
        self, history: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor | None:
        """The history item that supports each candidate most, for models that find it
        without a (B, L, K) block of their `pair_weights` (the blend); None leaves it to the
        ranker, which takes the largest of `pair_weights` (the first slot among equals).

        Args:
            history: (B, L) item indexes, -1 for padding.
            candidates: (B, K) item indexes, -1 for none.

        Returns:
            (B, K) item indexes, -1 where the candidate is -1 or no history item has a
            positive weight.
        """
        return None

    # -- size -----------------------------------------------------------------------------
    def size_problem(self, n_items: int, memory_bytes: int) -> str | None:
        """Why this model cannot train on `n_items` items within `memory_bytes`; None if it can.

        Checked before any fit: an explicitly requested model is refused with this reason, a
        default one is replaced by its `stand_in` or left out, and the report says so.
        """
        return None

    def stand_in(self) -> str | None:
        """Spec of a model that takes this one's place when `size_problem` rules it out."""
        return None

    def adapted(self, n_items: int, memory_bytes: int) -> tuple[Recommender | None, list[str]]:
        """This model, or what runs in its place on a catalog of this size, and why.

        Returns:
            The model to train (self, a stand-in, or None when nothing fits) and one note
            per change, naming the model and the reason.
        """
        problem = self.size_problem(n_items, memory_bytes)
        if problem is None:
            return self, []
        spec = self.stand_in()
        if spec is None:
            return None, [f"{problem}; left out"]
        return create(spec), [f"{problem}; {spec} stands in"]

    # -- state ----------------------------------------------------------------------------
    @abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Fitted tensors, enough to score after `load_state_dict` on a fresh instance."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...

    def share_state(self, other: Recommender) -> None:
        """Take `other`'s fitted state (a model of the same kind and fit), holding the same
        objects where the model can, instead of copies."""
        self.load_state_dict(other.state_dict())

    def explanation_key(self) -> Any:
        """Equal for two fitted models whose `pair_weights` are the same for any history and
        candidates (a blend computes them once); None when nothing is known to be equal."""
        return None

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def fit_key(self) -> str:
        """Equal for two models whose fits give the same state on the same data, so one can
        take the other's fitted state instead of fitting again (the blend does)."""
        fitted = {k: v for k, v in self.params().items() if k not in self.scoring_params}
        return format_spec(self.name, fitted)

    def __repr__(self) -> str:
        return f"{self.name}({self.params()})"


def recency_weights(histories: UserHistories, half_life: float | None) -> np.ndarray:
    """Weight of each history entry: halves every `half_life` later items; None = all ones.

    Returns (nnz,) float32 aligned with `histories.items`.
    """
    if half_life is None:
        return np.ones(len(histories.items), dtype=np.float32)
    return (0.5 ** (histories.recency_rank() / half_life)).astype(np.float32)


def history_rows(histories: UserHistories) -> torch.Tensor:
    """Row (user position) of each history entry. Returns (nnz,) int64."""
    return torch.from_numpy(np.repeat(np.arange(len(histories)), histories.lengths()))


def padded_history(
    histories: UserHistories, max_len: int = 200, *, right: bool = False, pad: int = -1
) -> torch.Tensor:
    """Most recent `max_len` items of each user, oldest first, in a padded (B, L) matrix.

    Left-aligned (the default) the width is the longest kept history (at least 1) and the
    padding follows each row; right-aligned (`right=True`, what sequence models read) the
    width is `max_len` and the padding comes first, so the newest item is the last column.
    """
    lengths = np.minimum(histories.lengths(), max_len)
    width = max(int(lengths.max(initial=0)), 1)
    out = np.full((len(histories), width), -1, dtype=np.int64)
    for row in range(len(histories)):
        items = histories.row(row)
        if lengths[row]:
            out[row, : lengths[row]] = items[-lengths[row] :]
    left = torch.from_numpy(out)
    if not right:
        return left if pad == -1 else left.masked_fill(left < 0, pad)
    return align_right(left, max_len, pad)[0]


def align_right(left: torch.Tensor, width: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-align a left-aligned, -1 padded (B, L) history matrix into `width` columns.

    Keeps each row's newest `width` items. Returns the (B, width) aligned items, `pad` where
    there is none, and (B, width) the column of `left` each came from, -1 for padding.
    """
    lengths = (left >= 0).sum(1, keepdim=True)  # (B, 1)
    kept = lengths.clamp_max(width)
    column = torch.arange(width).unsqueeze(0)  # (1, W)
    source = lengths - width + column  # (B, W): column of `left` read into each slot
    valid = column >= width - kept
    if left.shape[1] == 0:
        gathered = torch.full(source.shape, pad, dtype=left.dtype)
    else:
        gathered = left.gather(1, source.clamp(0, left.shape[1] - 1))
    return torch.where(valid, gathered, pad), torch.where(valid, source, -1)
