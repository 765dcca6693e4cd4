"""Matrix factorization trained by gradient descent: score(u, i) = p_u . q_i + b_i.

Two losses: `softmax` (each event's item against the whole catalog, or against `negatives`
items sampled per batch on large catalogs) and `bpr` (against one sampled item). Users who
arrived after training have no vector yet: theirs is folded in, i.e. the vector that best
explains their history under the softmax objective with the item vectors held fixed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recsys_core.data.interactions import UserHistories
from recsys_core.errors import InputError
from recsys_core.models.base import (
    Capabilities,
    EpochMetrics,
    FitOptions,
    Recommender,
    TestProfile,
    TrainingData,
)
from recsys_core.models.networks import softmax_cross_entropy
from recsys_core.models.registry import register
from recsys_core.models.training import Trainer, validation_ndcg, validation_part


@dataclass(frozen=True)
class MFConfig:
    dim: int = 64  # width of the user and item vectors
    loss: str = "softmax"  # "softmax" or "bpr"
    negatives: int = 0  # softmax: items sampled per batch as negatives; 0 = every item (exact)
    epochs: int = 30
    batch_size: int = 1024  # events per step
    lr: float = 0.005
    # penalty on the vectors a batch touches, per event; on ML-100K 0.05 beat 1e-4 by 12-42%
    # NDCG@10 on every protocol (the softmax overfits the few events of each user without it)
    l2: float = 0.05
    fold_in_steps: int = 50  # optimizer steps that fold in a user unknown at training time
    # > 0: hold out validation events, stop after this many epochs without a better NDCG@10
    # on them and keep the best epoch (trains on the rest); 0 trains every epoch on all
    patience: int = 0


@register
class MF(Recommender):
    name = "mf"
    config_class = MFConfig
    description = "Matrix factorization (softmax or BPR loss) in torch; folds in new users."
    capabilities = Capabilities(has_factors=True, explains=True, devices=("cpu", "cuda"))
    test_profile = TestProfile(quick={"dim": 8, "epochs": 30, "batch_size": 64, "lr": 0.05})

    def fit(self, data: TrainingData, options: FitOptions) -> EpochMetrics:
        cfg = self.config
        if cfg.loss not in ("softmax", "bpr"):
            raise InputError(f"mf: loss must be 'softmax' or 'bpr', got {cfg.loss!r}")
        trainer = Trainer(self.name, options, cfg.epochs, patience=cfg.patience)
        train, held_out = (data, None) if cfg.patience <= 0 else validation_part(data, options)
        device = trainer.device
        pairs = train.interactions.frame.select("user_index", "item_index").unique()
        pairs = pairs.sort(["user_index", "item_index"])
        users = torch.tensor(pairs["user_index"].to_numpy(), device=device)  # (N,)
        items = torch.tensor(pairs["item_index"].to_numpy(), device=device)  # (N,)
        n_items = data.n_items
        with trainer.seeded():
            generator = torch.Generator(device=device).manual_seed(options.seed)
            user_vectors = nn.Embedding(data.n_users, cfg.dim).to(device)  # (U, D)
            item_vectors = nn.Embedding(n_items, cfg.dim).to(device)  # (I, D)
            nn.init.normal_(user_vectors.weight, std=0.1)
            nn.init.normal_(item_vectors.weight, std=0.1)
            item_bias = nn.Parameter(torch.zeros(n_items, device=device))  # (I,)
            params = [*user_vectors.parameters(), *item_vectors.parameters(), item_bias]
            optimizer = torch.optim.Adam(params, lr=cfg.lr)

            def batches(_epoch: int) -> Iterator[torch.Tensor]:
                order = torch.randperm(len(users), generator=generator, device=device)
                for start in range(0, len(order), cfg.batch_size):
                    yield order[start : start + cfg.batch_size]

            def loss(batch: torch.Tensor) -> torch.Tensor:
                u = user_vectors(users[batch])  # (B, D)
                pos = items[batch]  # (B,)
                value = self._loss(u, pos, item_vectors.weight, item_bias, generator)
                touched = u.pow(2).sum(1) + item_vectors(pos).pow(2).sum(1)  # (B,)
                return value + cfg.l2 * touched.mean()

            def validate() -> float:
                self._keep(user_vectors.weight, item_vectors.weight, item_bias)
                return validation_ndcg(self, held_out)

            history = trainer.run(
                optimizer, batches, loss, validate=None if held_out is None else validate
            )
        self._keep(user_vectors.weight, item_vectors.weight, item_bias)
        return history

    def _keep(self, users: torch.Tensor, items: torch.Tensor, bias: torch.Tensor) -> None:
        """Take the trained tensors as the model's scoring state (on the CPU)."""
        self.user_vectors = users.detach().cpu()
        self.item_vectors = items.detach().cpu()
        self.item_bias = bias.detach().cpu()
        self.n_items = len(self.item_vectors)

    def _loss(self, u, pos, table, bias, generator) -> torch.Tensor:
        cfg = self.config
        if cfg.loss == "bpr":
            neg = torch.randint(0, len(table), pos.shape, generator=generator, device=pos.device)
            margin = (u * (table[pos] - table[neg])).sum(1) + bias[pos] - bias[neg]  # (B,)
            return -nn.functional.logsigmoid(margin).mean()
        if cfg.negatives <= 0 or cfg.negatives >= len(table):
            return softmax_cross_entropy(u, table, pos, bias)  # over every item
        sampled = torch.randint(0, len(table), (cfg.negatives,), generator=generator,
                                device=pos.device)  # fmt: skip
        positive = (u * table[pos]).sum(1, keepdim=True) + bias[pos].unsqueeze(1)  # (B, 1)
        negative = u @ table[sampled].T + bias[sampled]  # (B, S)
        negative = negative.masked_fill(sampled.unsqueeze(0) == pos.unsqueeze(1), -torch.inf)
        logits = torch.cat([positive, negative], dim=1)  # (B, 1 + S)
        return nn.functional.cross_entropy(logits, torch.zeros_like(pos))

    def _user_vectors(self, histories: UserHistories) -> torch.Tensor:
        index = torch.tensor(histories.user_index)
        known = (index >= 0) & (index < len(self.user_vectors))
        out = torch.zeros(len(histories), self.item_vectors.shape[1])  # (B, D)
        out[known] = self.user_vectors[index[known]]
        if not bool(known.all()):
            unknown = torch.nonzero(~known).squeeze(1).numpy()
            out[~known] = self._fold_in(histories, unknown)
        return out

    def _fold_in(self, histories: UserHistories, rows: np.ndarray) -> torch.Tensor:
        """Vectors for users without one: maximize the softmax likelihood of their history."""
        lengths = histories.lengths()[rows]
        entries = np.concatenate([histories.row(r) for r in rows]) if len(rows) else []
        # the ranker scores under inference mode; this small optimization needs autograd
        with torch.inference_mode(False), torch.enable_grad():
            row_of_entry = torch.from_numpy(np.repeat(np.arange(len(rows)), lengths))
            entries = torch.as_tensor(entries, dtype=torch.int64)
            items, bias = self.item_vectors.clone(), self.item_bias.clone()
            counts = torch.from_numpy(np.maximum(lengths, 1)).float()
            vectors = torch.zeros(len(rows), items.shape[1], requires_grad=True)  # (R, D)
            optimizer = torch.optim.LBFGS([vectors], max_iter=self.config.fold_in_steps)

            def objective():
                optimizer.zero_grad()
                log_probs = (vectors @ items.T + bias).log_softmax(dim=1)  # (R, I)
                likelihood = torch.zeros(len(rows)).index_add(
                    0, row_of_entry, log_probs[row_of_entry, entries]
                )
                loss = -(likelihood / counts).sum() + self.config.l2 * vectors.pow(2).sum()
                loss.backward()
                return loss

            optimizer.step(objective)
            return vectors.detach().clone()

    def factors(self, histories: UserHistories) -> tuple[torch.Tensor, torch.Tensor]:
        users = self._user_vectors(histories)
        ones = torch.ones(len(histories), 1)
        # the bias rides along as one more dimension, so score = one matrix product
        return (
            torch.cat([users, ones], dim=1),  # (B, D + 1)
            torch.cat([self.item_vectors, self.item_bias.unsqueeze(1)], dim=1),  # (I, D + 1)
        )

    def score(self, histories: UserHistories) -> torch.Tensor:
        users, items = self.factors(histories)
        return users @ items.T  # (B, I)

    def pair_weights(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        # how alike a history item and a candidate are in the learned space
        hist = nn.functional.normalize(self.item_vectors[history.clamp_min(0)], dim=-1)
        cand = nn.functional.normalize(self.item_vectors[candidates.clamp_min(0)], dim=-1)
        return hist @ cand.transpose(1, 2)  # (B, L, D) @ (B, D, K) -> (B, L, K)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "user_vectors": self.user_vectors,
            "item_vectors": self.item_vectors,
            "item_bias": self.item_bias,
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.user_vectors = state["user_vectors"].float()
        self.item_vectors = state["item_vectors"].float()
        self.item_bias = state["item_bias"].float()
        self.n_items = self.item_vectors.shape[0]
