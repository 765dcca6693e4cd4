"""Target attention over the user's history (DIN-style; Zhou et al., KDD 2018).

Each candidate item attends over the user's recent items: history items that resemble the
candidate get large weights, and the candidate's score is the inner product of that
weighted "interest" with the candidate itself. The attention weights are the explanation:
the history item with the largest weight is the reason for a recommendation.

Items are represented like in SASRec: an ID embedding plus a projection of the item's text
embedding, with ID dropout during training so items without events still rank by text.
Training is next-item prediction with a softmax over the true item and `negatives` items
sampled uniformly (every candidate needs its own attention, so the full catalog per step
would be too dear).
"""

from __future__ import annotations

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
    align_right,
    padded_history,
)
from recsys_core.models.networks import ItemRepresentation, NetworkRecommender
from recsys_core.models.registry import register
from recsys_core.models.training import Trainer, validation_ndcg, validation_part


@dataclass(frozen=True)
class DINConfig:
    dim: int = 64  # width of item representations
    attention_dim: int = 32  # width of the query/key space the attention compares in
    max_len: int = 50  # most recent history items a candidate attends over
    negatives: int = 50  # sampled items each true next item is ranked against in training
    epochs: int = 5
    batch_size: int = 512  # (history, next item) examples per step
    lr: float = 0.002
    dropout: float = 0.1  # on history representations
    use_text: bool = True  # fuse the projected text embedding into each item representation
    id_dropout: float = 0.2  # chance that an item's ID embedding is hidden in a training step
    # > 0: hold out validation events, stop after this many epochs without a better NDCG@10
    # on them and keep the best epoch (trains on the rest); 0 trains every epoch on all
    patience: int = 0


class TargetAttention(nn.Module):
    def __init__(self, n_items: int, cfg: DINConfig, text: torch.Tensor | None):
        super().__init__()
        self.items = ItemRepresentation(n_items, cfg.dim, text)
        self.query = nn.Linear(cfg.dim, cfg.attention_dim, bias=False)
        self.key = nn.Linear(cfg.dim, cfg.attention_dim, bias=False)
        self.recency = nn.Parameter(torch.zeros(cfg.max_len))  # bias by age in the history
        self.null_key = nn.Parameter(torch.zeros(1))  # lets a candidate attend to nothing
        self.bias = nn.Embedding(n_items + 1, 1)  # (I + 1, 1) item prior
        nn.init.zeros_(self.bias.weight)
        self.dropout = nn.Dropout(cfg.dropout)
        self.pad = n_items

    def attention(self, history: torch.Tensor, candidates: torch.Tensor, id_dropout: float = 0.0):
        """history: (B, L) right-aligned, pad on the left; candidates: (B, K).

        Returns weights (B, K, L), history values (B, L, D), candidate reps (B, K, D).
        """
        h = self.dropout(self.items(history, id_dropout))  # (B, L, D)
        c = self.items(candidates, id_dropout)  # (B, K, D)
        q, k = self.query(c), self.key(h)  # (B, K, A), (B, L, A)
        logits = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])  # (B, K, L)
        logits = logits + self.recency[-history.shape[1] :]
        logits = logits.masked_fill((history == self.pad).unsqueeze(1), -torch.inf)
        null = self.null_key.expand(*logits.shape[:2], 1)  # (B, K, 1)
        weights = torch.cat([logits, null], dim=-1).softmax(-1)[..., :-1]  # (B, K, L)
        return weights, h, c

    def forward(self, history, candidates, id_dropout: float = 0.0) -> torch.Tensor:
        weights, h, c = self.attention(history, candidates, id_dropout)
        interest = weights @ h  # (B, K, D)
        return (interest * c).sum(-1) + self.bias(candidates).squeeze(-1)  # (B, K)


@register
class DIN(NetworkRecommender):
    name = "din"
    config_class = DINConfig
    network_class = TargetAttention
    description = "Candidate-to-history target attention; attention weights explain."
    capabilities = Capabilities(
        uses_text=True, sequential=True, explains=True, devices=("cpu", "cuda")
    )
    test_profile = TestProfile(
        quick={"dim": 16, "attention_dim": 8, "max_len": 8, "negatives": 10, "epochs": 2,
               "batch_size": 16, "lr": 0.01, "dropout": 0.0},
        learns={"epochs": 20},
    )  # fmt: skip
    # the ranker sizes scoring chunks by `score_floats_per_user` now
    retired_params = ("score_memory_mb",)

    def fit(self, data: TrainingData, options: FitOptions) -> EpochMetrics:
        cfg = self.config
        self.require_text(data)
        trainer = Trainer(self.name, options, cfg.epochs, patience=cfg.patience)
        train, held_out = (data, None) if cfg.patience <= 0 else validation_part(data, options)
        device = trainer.device
        n_items = data.n_items
        histories = train.interactions.histories()
        full = padded_history(histories, max_len=max(int(histories.lengths().max()), 1))
        lengths = histories.lengths()
        # one example per (user, position >= 1): the items before it predict it
        example_user = np.repeat(np.arange(len(histories)), np.maximum(lengths - 1, 0))
        example_pos = np.concatenate([np.arange(1, n) for n in lengths if n > 1] or [[]])
        example_pos = example_pos.astype(np.int64)
        with trainer.seeded():
            rng = np.random.default_rng(options.seed)
            net = TargetAttention(n_items, cfg, data.item_embeddings if cfg.use_text else None)
            net = net.to(device)
            with torch.no_grad():
                counts = np.bincount(histories.items, minlength=n_items)
                net.items.known[:n_items] = torch.from_numpy(counts > 0).float()
            optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
            offsets = np.arange(-cfg.max_len, 0)  # (L,)

            def batches(_epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
                net.train()
                order = rng.permutation(len(example_user))
                for start in range(0, len(order), cfg.batch_size):
                    batch = order[start : start + cfg.batch_size]
                    users, pos = example_user[batch], example_pos[batch]
                    columns = pos[:, None] + offsets[None, :]  # (B, L) positions before the target
                    history = full[users[:, None], np.maximum(columns, 0)].numpy()
                    history = np.where(columns >= 0, history, n_items)
                    target = full[users, pos].numpy()
                    negatives = rng.integers(0, n_items, size=(len(batch), cfg.negatives))
                    candidates = np.concatenate([target[:, None], negatives], axis=1)  # (B, K)
                    accidental = candidates[:, 1:] == target[:, None]
                    yield tuple(
                        torch.from_numpy(a).to(device) for a in (history, candidates, accidental)
                    )

            def loss(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
                history, candidates, accidental = batch
                logits = net(history, candidates, cfg.id_dropout)  # (B, K)
                logits[:, 1:] = logits[:, 1:].masked_fill(accidental, -torch.inf)
                target = torch.zeros(len(history), dtype=torch.int64, device=device)
                return nn.functional.cross_entropy(logits, target)

            def validate() -> float:
                self.keep(net, copy=True)
                return validation_ndcg(self, held_out)

            epochs = trainer.run(
                optimizer, batches, loss, validate=None if held_out is None else validate
            )
        self.keep(net)
        return epochs

    def score_floats_per_user(self, n_items: int) -> int:
        # every candidate attends over the history: weights, logits and softmax per pair
        return 3 * n_items * self.config.max_len

    @torch.no_grad()
    def score(self, histories: UserHistories) -> torch.Tensor:
        history = padded_history(histories, self.config.max_len, right=True, pad=self.n_items)
        candidates = torch.arange(self.n_items).unsqueeze(0).expand(len(histories), -1)
        return self.net(history, candidates)  # (B, I)

    @torch.no_grad()
    def pair_weights(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        # `history` is left-aligned with -1 pads; the network reads right-aligned sequences
        aligned, source = align_right(history, self.config.max_len, self.n_items)  # (B, W)
        weights, _, _ = self.net.attention(aligned, candidates.clamp_min(0))  # (B, K, W)
        out = torch.zeros(history.shape[0], history.shape[1], candidates.shape[1])  # (B, L, K)
        rows, cols = torch.nonzero(source >= 0, as_tuple=True)
        out[rows, source[rows, cols]] = weights[rows, :, cols]
        return out
