"""The one torch training loop: seeded, on a device, per-epoch metrics, early stopping.

A model hands the trainer its optimizer, a function that yields an epoch's batches and a
function that turns a batch into a loss; the trainer owns everything around them:

    trainer = Trainer("mf", options, epochs=cfg.epochs)
    with trainer.seeded():                        # every random draw of the fit is seeded
        net = build().to(trainer.device)
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        epochs = trainer.run(optimizer, batches, loss)

Each epoch's metrics (`loss`, the mean over its steps, and `validation` when a validation
function is given) are returned, one dict per epoch; the train stage logs them to MLflow as
one step per epoch. With a validation function and `patience`, training stops after
`patience` epochs without a better validation figure and the best epoch's parameters are
put back. The stop flag (Ctrl-C, SIGTERM, a cancel) is checked before every step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from recsys_core.cancel import raise_if_stopped
from recsys_core.data.interactions import Interactions
from recsys_core.data.splits import Split, make_split
from recsys_core.device import resolve_device
from recsys_core.evaluation.evaluate import evaluate
from recsys_core.models.base import EpochMetrics, FitOptions, Recommender, TrainingData


class Trainer:
    """Runs the epochs of one fit.

    Args:
        name: The model's name (the progress bar's label).
        options: Run-level settings: seed, device, progress.
        epochs: Most epochs to train.
        patience: With a validation function, stop after this many epochs without a better
            validation figure (0 = train every epoch).
    """

    def __init__(self, name: str, options: FitOptions, epochs: int, *, patience: int = 0):
        self.name = name
        self.options = options
        self.epochs = epochs
        self.patience = patience
        self.device = resolve_device(options.device)
        self.best_epoch: int | None = None

    @contextlib.contextmanager
    def seeded(self) -> Iterator[None]:
        """Seed torch's generator for the block and restore the caller's state after it."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.options.seed)
            yield

    def run(
        self,
        optimizer: torch.optim.Optimizer,
        batches: Callable[[int], Iterable[Any]],
        loss: Callable[[Any], torch.Tensor],
        *,
        validate: Callable[[], float] | None = None,
    ) -> EpochMetrics:
        """Train: for each epoch, a step per batch of `batches(epoch)` on `loss(batch)`.

        Args:
            optimizer: Holds the parameters being trained (snapshotted for early stopping).
            batches: The batches of an epoch, in order (shuffled by the model, seeded).
            loss: A batch's scalar loss.
            validate: A figure to maximize, computed after each epoch (e.g. NDCG@10 on
                held-out events); None trains every epoch and reports the loss only.

        Returns:
            One metrics dict per epoch trained.
        """
        history: EpochMetrics = []
        best, best_state, waited = -float("inf"), None, 0
        bar = tqdm(range(self.epochs), desc=self.name, disable=not self.options.progress)
        for epoch in bar:
            total, steps = 0.0, 0
            for batch in batches(epoch):
                raise_if_stopped()  # stop within a batch on Ctrl-C, SIGTERM or a cancel
                value = loss(batch)
                optimizer.zero_grad()
                value.backward()
                optimizer.step()
                total += value.item()
                steps += 1
            metrics = {"loss": total / max(steps, 1)}
            if validate is not None:
                metrics["validation"] = float(validate())
            history.append(metrics)
            if validate is None or self.patience <= 0:
                continue
            if metrics["validation"] > best:
                best, best_state, waited = metrics["validation"], _snapshot(optimizer), 0
                self.best_epoch = epoch
            else:
                waited += 1
                if waited >= self.patience:
                    break
        if best_state is not None:
            _restore(optimizer, best_state)
        return history


def _parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _snapshot(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in _parameters(optimizer)]


def _restore(optimizer: torch.optim.Optimizer, state: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for param, saved in zip(_parameters(optimizer), state, strict=True):
            param.copy_(saved)


T = TypeVar("T")  # what a shared fit keeps


@dataclass
class _Part:
    """What was computed on one data part, by key."""

    artifacts: dict[str, Any] = field(default_factory=dict)


class SharedFits:
    """Fitted models of one scope (a training night), by (data part, fit key and options):
    each is fitted once and its state handed to every later fit of the same config on the
    same part.

    A night fits the same model several times over: the blend's two EASE members (the same
    config but for `history_half_life`, which only weighs the history when scoring) fit one
    item x item matrix on each part; the
    blend refit on all events tunes its weights on a part equal to the candidates' training
    part (the same protocol and seed hold out the same events), so every member's fit there
    is one done before; its members' refit on all events and a challenger's share theirs.

    A part is known by its content: the events in their order (a hash of every row), the
    numbers of users and items, and the very item vectors object. A night moves through its
    parts in order (the candidates' training part, the blend's tuning part, all events), so
    only the `parts` most recently used parts are kept: at most that many sets of fitted
    states (for EASE, item x item matrices).

    Args:
        parts: Data parts whose fitted states are kept.
    """

    def __init__(self, parts: int = 2):
        self.parts = parts
        self.computed = 0  # fits done (one per distinct part and fit key)
        self.reused = 0  # fits that took the state of one done before
        self._parts: OrderedDict[tuple[str, int], _Part] = OrderedDict()
        # id(interactions) -> its content key, forgotten when the object is (ids are reused)
        self._known: dict[int, str] = {}
        self._vectors: dict[int, Any] = {}  # id -> item vectors, kept for the same reason
        # the latest intermediate result (part, key) -> value; one only, for its memory
        self._intermediate: tuple[tuple[str, str], Any] | None = None
        self.intermediates = 0  # intermediate results computed

    def get(self, data: TrainingData, key: str, compute: Callable[[], T]) -> T:
        """What `compute()` gave for `key` on `data`'s part, computed the first time only."""
        self._vectors[id(data.item_embeddings)] = data.item_embeddings
        where = (self._content(data.interactions), id(data.item_embeddings))
        part = self._parts.get(where)
        if part is None:
            part = self._parts[where] = _Part()
            while len(self._parts) > self.parts:
                self._parts.popitem(last=False)  # the least recently used part
        self._parts.move_to_end(where)
        if key in part.artifacts:
            self.reused += 1
        else:
            part.artifacts[key] = compute()
            self.computed += 1
        return part.artifacts[key]

    def intermediate(
        self, data: TrainingData, key: str, compute: Callable[[], T] | None
    ) -> T | None:
        """An intermediate result several fits on the same part start from (e.g. the
        co-occurrence counts X^T X), computed the first time only; with `compute` None, the
        result when it is held, else None.

        Only the latest one is kept (the counts of 12,500 items are 625 MB): a night's fits
        on a part follow one another, and an earlier part's result is freed before the next
        one is computed.
        """
        where = (self._content(data.interactions), key)
        if self._intermediate is not None and self._intermediate[0] == where:
            return self._intermediate[1]
        if compute is None:
            return None
        self._intermediate = None
        value = compute()
        self._intermediate = (where, value)
        self.intermediates += 1
        return value

    def _content(self, interactions: Interactions) -> str:
        """A hash of the events in their order and the vocabulary sizes, once per object."""
        known = self._known.get(id(interactions))
        if known is None:
            digest = hashlib.blake2b(digest_size=16)
            digest.update(interactions.frame.hash_rows(seed=0).to_numpy().tobytes())
            digest.update(f"{interactions.n_users}x{interactions.n_items}".encode())
            known = self._known[id(interactions)] = digest.hexdigest()
            weakref.finalize(interactions, self._known.pop, id(interactions), None)
        return known


_shared: ContextVar[SharedFits | None] = ContextVar("shared_fits", default=None)


@contextlib.contextmanager
def shared_fits(parts: int = 2) -> Iterator[SharedFits]:
    """Within the block, `fit_shared` fits each model config once per data part (see
    `SharedFits`); a block inside another shares the outer one's fits.

    Args:
        parts: Data parts whose fitted states are kept.
    """
    outer = _shared.get()
    if outer is not None:
        yield outer
        return
    fits = SharedFits(parts)
    token = _shared.set(fits)
    try:
        yield fits
    finally:
        _shared.reset(token)


def fit_shared(model: Recommender, data: TrainingData, options: FitOptions) -> EpochMetrics:
    """`model.fit(data, options)`, or, inside a `shared_fits` block, the fitted state (and
    epochs) of an earlier fit of the same config on the same data part, when there was one.

    Two models with the same `fit_key` (e.g. EASE with and without `history_half_life`)
    share a fit; the state is shared as it is, not copied, and no model changes its fitted
    tensors in place.

    Args:
        model: The model to fit.
        data: What it is fitted on.
        options: Run-level settings (part of what must be equal to share).
    """
    fits = _shared.get()
    if fits is None:
        return model.fit(data, options)
    fitted: list[Recommender] = []

    def fit() -> tuple[dict[str, torch.Tensor], EpochMetrics]:
        epochs = model.fit(data, options)
        fitted.append(model)
        return model.state_dict(), epochs

    ran = dataclasses.replace(options, progress=False)  # bars change nothing fitted
    state, epochs = fits.get(data, f"{model.fit_key()} {ran!r}", fit)
    if not fitted:
        model.load_state_dict(state)
    return [dict(epoch) for epoch in epochs]


def shared_intermediate(
    data: TrainingData, key: str, compute: Callable[[], T] | None = None
) -> T | None:
    """`compute()`, or, inside a `shared_fits` block, the result of the last call with the
    same `key` on the same data part when it is still held (`SharedFits.intermediate`).

    With `compute` None: the held result, or None (outside a block too), for a fit that can
    start from it but would not compute it itself. A result is shared as it is: callers
    copy what they change.
    """
    fits = _shared.get()
    if fits is None:
        return compute() if compute is not None else None
    return fits.intermediate(data, key, compute)


def validation_part(
    data: TrainingData, options: FitOptions, users: int | None = None
) -> tuple[TrainingData, Split]:
    """Split off the events an early-stopped fit validates on, held out the way the model
    will be judged (`options.validation_protocol`; `cold_items` holds out by user instead,
    since no model could learn the held-out items' ids).

    Args:
        data: What the model would train on.
        options: Its protocol and seed.
        users: Hold out the events of a seeded sample of at most this many users only; the
            other users' held-out events stay in training (a sequence model then still
            learns every user's newest transitions). None = every user.
    """
    protocol = options.validation_protocol
    if protocol == "cold_items":
        protocol = "user_temporal"
    split = make_split(data.interactions, protocol, seed=options.seed)
    held = split.test_users
    if users is not None and len(held) > users:
        rng = np.random.default_rng(options.seed)
        kept = pl.Series("user_index", np.sort(rng.choice(held, size=users, replace=False)))
        test = split.test.filter(pl.col("user_index").is_in(kept.implode()))
        back = data.interactions.frame.join(
            split.test.join(test, on=["user_index", "item_index"], how="anti"),
            on=["user_index", "item_index"],
            how="semi",
        )  # every event of a pair that is not held out any more
        frame = pl.concat([split.train.frame, back]).sort(["timestamp", "user_index", "item_index"])
        split = Split(split.train.with_frame(frame), test, split.protocol, split.candidates)
    return TrainingData(split.train, data.item_embeddings), split


def validation_ndcg(model: Recommender, split: Split, max_users: int = 2000) -> float:
    """NDCG@10 of `model` on the held-out part, over at most `max_users` seeded users."""
    return evaluate(model, split, (10,), max_users=max_users, seed=0)["ndcg@10"]
