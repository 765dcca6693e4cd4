"""SASRec-style sequential transformer (Kang & McAuley, 2018) with text-fused items.

A causal transformer reads a user's items oldest to newest; the output at the last position
is the user vector, and an item's score is its inner product with the item representation.
Each item is represented by an ID embedding plus a projection of its text embedding, so an
item with text but no events (a cold item) still has a representation: ID embeddings are
dropped at random during training (`id_dropout`) so the text path learns to stand alone,
and items without training events keep a zero ID embedding.

Text enters as in UniSRec (Hou et al., KDD 2022): the frozen language-model vectors are
whitened (centred and decorrelated over the catalog, so the few directions every sentence
vector shares stop dominating) and passed through a small mixture of linear experts, the
adaptor, which is learned with the rest. The same item representation is read at the input
and scored at the output (tied), so an item's text shapes both what it predicts and how it
is predicted.

Training uses cross-entropy over the whole catalog at every position (or over `negatives`
sampled items on large catalogs), which trains much better than the paper's binary loss.
Sequences are batched by length and each batch is cut to its longest sequence, so short
histories (most users of most logs) cost little. With `patience`, the newest events of a
sample of users are held out, training stops when their NDCG@10 stops improving and the
best epoch is kept; the other users' newest events stay in training.
Optional sequence augmentation (`augment`: crop, mask, reorder, as in CL4SRec) adds
perturbed copies of each training sequence.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recsys_core.data.interactions import UserHistories
from recsys_core.models.base import (
    Capabilities,
    EpochMetrics,
    FitOptions,
    TestProfile,
    TrainingData,
    padded_history,
)
from recsys_core.models.networks import (
    ItemRepresentation,
    NetworkRecommender,
    dropout,
    softmax_cross_entropy,
)
from recsys_core.models.registry import register
from recsys_core.models.training import Trainer, validation_ndcg, validation_part

AUGMENTATIONS = ("crop", "mask", "reorder")
# What one default fit may take on one CPU thread, and the cost of an epoch `budgeted` sizes
# its epochs by, measured on one thread: Amazon Office (48,353 training events, 4,905
# users, 2,420 items) 1.98 s an epoch scoring every item and 1.47 s scoring 400 sampled
# negatives; a generated log of 177,823 events, 21,945 users and 12,000 items 23.0 s.
FIT_SECONDS = 180.0
PER_SCORED = 5.2e-9  # each (event x scored item) of the softmax
PER_POSITION = 2.1e-5  # the transformer's own work per event
PER_TABLE_ITEM = 3.1e-8  # each (sequence x item): every step maps every item's text
MIN_EPOCHS = 3  # fewer than this and the model is left out of the default candidates
SAMPLED_ABOVE = 20_000  # catalogs larger than this train on sampled negatives


@dataclass(frozen=True)
class SASRecConfig:
    dim: int = 64  # width of item representations and hidden states
    layers: int = 2  # transformer blocks
    heads: int = 2  # attention heads per block
    max_len: int = 50  # most recent items a user is read from
    dropout: float = 0.2  # on embeddings, attention and feed-forward outputs
    epochs: int = 20  # most epochs (fewer with `patience`)
    batch_size: int = 128  # sequences per step
    lr: float = 0.002
    weight_decay: float = 0.0
    negatives: int = 0  # sampled negatives per step; 0 = the whole catalog (exact softmax)
    use_text: bool = True  # fuse the projected text embedding into each item representation
    whiten: bool = True  # centre and decorrelate the text vectors before the adaptor
    # > 0: the adaptor reads only this many leading whitened directions (with `whiten`); a
    # third of MiniLM's 384 costs a third as much each step and ranked as well on Office
    text_dims: int = 128
    experts: int = 4  # linear experts of the text adaptor, mixed by a learned gate; 1 = linear
    text_dropout: float = 0.2  # on the whitened text vectors entering the adaptor
    id_dropout: float = 0.3  # chance that an item's ID embedding is hidden in a training step
    augment: str = ""  # comma-separated subset of crop, mask, reorder; "" = none
    augment_ratio: float = 0.3  # share of a sequence cropped away, masked or reordered
    # > 0: hold out validation events, stop after this many epochs without a better NDCG@10
    # on them and keep the best epoch (trains on the rest); 0 trains every epoch on all
    patience: int = 0
    validation_users: int = 1000  # with `patience`: users whose newest events are held out
    threads: int = 1  # torch threads while training (0 = leave torch's setting)

    def __post_init__(self) -> None:
        unknown = set(self.augmentations) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(f"unknown augmentation {sorted(unknown)} (known: {AUGMENTATIONS})")

    @property
    def augmentations(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.augment.split(",") if a.strip())


class Block(nn.Module):
    """Pre-norm transformer block: masked self-attention, then a position-wise MLP."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.dropout = nn.Dropout(dropout)
        self.attention_dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D); allowed: (B, 1, T, T) True where a query may see a key."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)  # 3 x (B, T, D)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )  # (B, H, T, D / H)  # fmt: skip
        x = x + self.dropout(self.out(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.dropout(self.mlp(self.norm2(x)))  # (B, T, D)


class TextAdaptor(nn.Module):
    """Mixture of linear experts over (whitened) text vectors, as UniSRec's MoE adaptor."""

    def __init__(self, text_dim: int, dim: int, experts: int, dropout: float):
        super().__init__()
        self.experts = nn.Linear(text_dim, experts * dim)  # K experts side by side
        self.gate = nn.Linear(text_dim, experts) if experts > 1 else None
        self.p = dropout
        self.k, self.dim = experts, dim

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """text: (N, T). Returns (N, D)."""
        text = dropout(text, self.p, self.training)  # every item's text, each step: made cheap
        out = self.experts(text).view(-1, self.k, self.dim)  # (N, K, D)
        if self.gate is None:
            return out[:, 0]
        weights = torch.softmax(self.gate(text), dim=-1)  # (N, K)
        return (weights.unsqueeze(-1) * out).sum(1)  # (N, D)


class SASRecNetwork(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig, text: torch.Tensor | None):
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ValueError(f"dim {cfg.dim} must be a multiple of heads {cfg.heads}")
        adaptor = None
        if text is not None:
            adaptor = TextAdaptor(text.shape[1], cfg.dim, max(cfg.experts, 1), cfg.text_dropout)
        self.items = ItemRepresentation(n_items, cfg.dim, text, adaptor)
        self.positions = nn.Embedding(cfg.max_len, cfg.dim)  # (T, D)
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.max_len = cfg.max_len
        self.pad = n_items

    def forward(self, sequence: torch.Tensor, id_dropout: float = 0.0) -> torch.Tensor:
        """sequence: (B, T) right-aligned item indexes, `pad` on the left. Returns (B, T, D)."""
        length = sequence.shape[1]
        x = self.items(sequence, id_dropout) * math.sqrt(self.positions.embedding_dim)
        x = self.dropout(x + self.positions.weight[-length:])  # (B, T, D)
        # a position sees itself and the real items before it; a padding position sees only
        # itself, so no softmax row is empty (an empty row would give NaN)
        eye = torch.eye(length, dtype=torch.bool, device=x.device)
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        allowed = (causal & (sequence != self.pad).unsqueeze(1)) | eye  # (B, T, T)
        allowed = allowed.unsqueeze(1)  # (B, 1, T, T): the same for every head
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x)  # (B, T, D)


@register
class SASRec(NetworkRecommender):
    name = "sasrec"
    config_class = SASRecConfig
    network_class = SASRecNetwork
    description = "Self-attentive sequential model; items fuse ID and text; ranks cold items."
    capabilities = Capabilities(
        uses_text=True, sequential=True, has_factors=True, explains=True,
        devices=("cpu", "cuda"),
    )  # fmt: skip
    test_profile = TestProfile(
        quick={"dim": 16, "layers": 1, "heads": 1, "max_len": 8, "epochs": 3, "batch_size": 8,
               "lr": 0.01, "dropout": 0.0, "id_dropout": 0.5},
        learns={"epochs": 30},
        # a cold item has only its text: train the text path on its own more often
        text={"id_dropout": 0.8, "text_dropout": 0.0, "lr": 0.003},
    )  # fmt: skip

    def fit(self, data: TrainingData, options: FitOptions) -> EpochMetrics:
        cfg = self.config
        self.require_text(data)
        trainer = Trainer(self.name, options, cfg.epochs, patience=cfg.patience)
        train, held_out = (data, None)
        if cfg.patience > 0:
            train, held_out = validation_part(data, options, users=cfg.validation_users)
        n_items = data.n_items
        histories = train.interactions.histories()
        sequences = _windows(histories, cfg.max_len + 1, pad=n_items)  # (S, T + 1)
        with trainer.seeded(), _threads(cfg.threads):
            rng = np.random.default_rng(options.seed)
            text = None
            if cfg.use_text:
                text = data.item_embeddings.float()  # (I, T)
                text = whiten(text, dims=cfg.text_dims) if cfg.whiten else text
            net = SASRecNetwork(n_items, cfg, text).to(trainer.device)
            counts = np.bincount(histories.items, minlength=n_items)
            with torch.no_grad():
                net.items.known[:n_items] = torch.from_numpy(counts > 0).float()
            optimizer = torch.optim.AdamW(
                net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
            )

            def batches(_epoch: int) -> Iterator[torch.Tensor]:
                net.train()
                source = sequences
                if cfg.augmentations:
                    source = np.concatenate([sequences, _augment(sequences, cfg, rng, n_items)])
                for rows in _length_batches(source != n_items, cfg.batch_size, rng):
                    batch = source[rows]
                    # drop the columns no sequence of the batch reaches (right-aligned)
                    first = int((batch != n_items).argmax(1).min())
                    yield torch.from_numpy(batch[:, min(first, batch.shape[1] - 2) :]).to(
                        trainer.device
                    )

            def validate() -> float:
                self.keep(net, copy=True)
                return validation_ndcg(self, held_out)

            history = trainer.run(
                optimizer,
                batches,
                lambda batch: self._loss(net, batch[:, :-1], batch[:, 1:]),
                validate=None if held_out is None else validate,
            )
        self.keep(net)
        return history

    def _loss(self, net: SASRecNetwork, inputs: torch.Tensor, targets: torch.Tensor):
        cfg = self.config
        hidden = net(inputs, cfg.id_dropout)  # (B, T, D)
        valid = targets != net.pad  # (B, T)
        hidden, targets = hidden[valid], targets[valid]  # (N, D), (N,)
        table = net.items.table()  # (I, D)
        if cfg.negatives <= 0 or cfg.negatives >= len(table):
            return softmax_cross_entropy(hidden, table, targets)
        sampled = torch.randint(0, len(table), (cfg.negatives,), device=hidden.device)
        positive = (hidden * table[targets]).sum(1, keepdim=True)  # (N, 1)
        negative = hidden @ table[sampled].T  # (N, S)
        negative = negative.masked_fill(sampled.unsqueeze(0) == targets.unsqueeze(1), -torch.inf)
        logits = torch.cat([positive, negative], dim=1)
        return nn.functional.cross_entropy(logits, torch.zeros_like(targets))

    @torch.no_grad()
    def factors(self, histories: UserHistories) -> tuple[torch.Tensor, torch.Tensor]:
        sequence = padded_history(histories, self.config.max_len, right=True, pad=self.n_items)
        hidden = self.net(sequence)[:, -1]  # (B, D): the state after the newest item
        return hidden, self.net.items.table()  # (B, D), (I, D)

    def score(self, histories: UserHistories) -> torch.Tensor:
        users, items = self.factors(histories)
        return users @ items.T  # (B, I)

    @torch.no_grad()
    def pair_weights(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        table = nn.functional.normalize(self.net.items.table(), dim=-1)  # (I, D)
        hist = table[history.clamp_min(0)]  # (B, L, D)
        cand = table[candidates.clamp_min(0)]  # (B, K, D)
        # later items weigh more, as the sequence model reads the newest ones closest
        length = (history >= 0).sum(1, keepdim=True)  # (B, 1)
        age = (length - 1 - torch.arange(history.shape[1]).unsqueeze(0)).clamp_min(0)
        recency = (1.0 - age / self.config.max_len).clamp_min(0.0)  # (B, L)
        return hist @ cand.transpose(1, 2) * recency.unsqueeze(-1)  # (B, L, K)


def budgeted(
    n_events: int, n_items: int, n_users: int, seconds: float = FIT_SECONDS
) -> dict | None:
    """Parameters of a default fit on a log of this size within about `seconds` on one CPU
    thread, or None when fewer than `MIN_EPOCHS` epochs would fit (the model is then left
    out of the default candidates).

    Epochs shrink as the log grows (at most 20, a fixed number: early stopping on a held-out
    sample measured worse, since it takes the newest events of its users out of training and
    its stopping point is noisy; 40 epochs on Office scored as 20). A larger log takes more
    steps per epoch, so a few epochs over it train about as long as many over a small one: on
    Office (with all 384 text directions), 20 epochs scored NDCG@10 0.0749 and 5 epochs
    0.0572, while sampling 400 of the 2,420 items as negatives (20 epochs) gave 0.0633 for a
    quarter less time. So every item is scored up to
    `SAMPLED_ABOVE` items, and 2,000 sampled negatives above.

    Args:
        n_events: Training events (each is a training position about once per epoch).
        n_items: Catalog size.
        n_users: Users (about one training sequence each on short histories).
        seconds: What one fit may take on one CPU thread, by the measured cost model.
    """
    negatives = 0 if n_items <= SAMPLED_ABOVE else 2000
    scored = n_items if negatives == 0 else negatives
    n_events = max(n_events, 1)
    epoch = (
        PER_SCORED * n_events * scored
        + PER_POSITION * n_events
        + PER_TABLE_ITEM * max(n_users, 1) * n_items
    )
    epochs = int(min(20, seconds // epoch))
    if epochs < MIN_EPOCHS:
        return None
    return {"epochs": epochs, "negatives": negatives}


def whiten(text: torch.Tensor, shrink: float = 0.1, dims: int = 0) -> torch.Tensor:
    """Centre text vectors and decorrelate them over the catalog (PCA whitening).

    Sentence encoders put most of every vector's length in a few shared directions; after
    whitening each direction has unit variance, leading principal directions first.
    `shrink` (relative to the mean eigenvalue) keeps near-empty directions from being blown
    up. Rows without text (all zero) stay zero.

    Args:
        text: (I, T) item text vectors.
        shrink: Added to every eigenvalue, relative to their mean, before scaling.
        dims: > 0 keeps only this many leading directions.

    Returns:
        (I, T) whitened vectors, or (I, dims).
    """
    has = text.norm(dim=1) > 0  # (I,)
    if int(has.sum()) < 2:
        return text
    x = text[has].double()
    mean = x.mean(0)  # (T,)
    values, vectors = torch.linalg.eigh(torch.cov((x - mean).T))  # ascending
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)  # leading first
    scale = (values + shrink * values.mean()).rsqrt()  # (T,)
    if 0 < dims < len(values):
        vectors, scale = vectors[:, :dims], scale[:dims]
    out = torch.zeros(len(text), len(scale), dtype=text.dtype, device=text.device)
    out[has] = ((x - mean) @ vectors * scale).float()
    return out


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Train on `n` torch threads (0 = as set), restoring the caller's setting after."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _length_batches(real: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indexes of each batch: shuffled, then sorted by length within pools of 16
    batches, so a batch holds sequences of similar length while batches stay varied.

    real: (S, T) True where a sequence holds an item.
    """
    order = rng.permutation(len(real))
    lengths = real.sum(1)
    pool = 16 * size
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[b : b + size] for b in range(0, len(chunk), size)]
    return [batches[b] for b in rng.permutation(len(batches))]


def _windows(histories: UserHistories, length: int, pad: int) -> np.ndarray:
    """Every user's history cut into right-aligned windows of `length` items, newest first.

    Consecutive windows share one item (the last input of one is the first target of the
    next), so every item of a long history is a training target once. Returns (S, length).
    """
    rows = []
    step = length - 1
    for user in range(len(histories)):
        items = histories.row(user)
        for stop in range(len(items), 1, -step):
            window = items[max(0, stop - length) : stop]
            row = np.full(length, pad, dtype=np.int64)
            row[length - len(window) :] = window
            rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, length), dtype=np.int64)


def _augment(
    sequences: np.ndarray, cfg: SASRecConfig, rng: np.random.Generator, pad: int
) -> np.ndarray:
    """One perturbed copy per sequence, each by a randomly chosen augmentation."""
    out = np.full_like(sequences, pad)
    kinds = cfg.augmentations
    for row, seq in enumerate(sequences):
        items = seq[seq != pad]
        n = len(items)
        span = max(1, int(n * cfg.augment_ratio))
        kind = kinds[rng.integers(len(kinds))]
        if kind == "crop" and n > 2:
            keep = max(2, n - span)
            start = rng.integers(0, n - keep + 1)
            items = items[start : start + keep]
        elif kind == "mask":
            # masked positions read as padding (no item), the order and the rest stay
            items = items.copy()
            hidden = rng.choice(n - 1, size=min(span, n - 1), replace=False)  # keep the target
            items[hidden] = pad
        elif kind == "reorder" and n > 2:
            start = rng.integers(0, max(1, n - 1 - span))
            stop = min(start + span, n - 1)  # the target (last item) stays last
            items = items.copy()
            items[start:stop] = rng.permutation(items[start:stop])
        out[row, len(out[row]) - len(items) :] = items
    return out
