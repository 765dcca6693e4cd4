"""Domain adaptation: fine-tune the item text encoder on items that users consume together.

Two items a few positions apart in a user's history form a positive pair. A batch holds B
pairs; each item's negatives are the other pairs' items in the batch (in-batch negatives, the
multiple-negatives ranking loss of sentence-transformers, here symmetric and in plain torch).
The encoder learns which text features predict co-consumption in this catalog, so a new item
with text only lands near the items its future audience already likes.

Pairs come only from the interactions given (the training part of a split), so items held out
for evaluation never shape the encoder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from recsys_core.data.interactions import Interactions
from recsys_core.encoders.finetune_config import FinetuneConfig
from recsys_core.encoders.item_text_encoder import ItemTextEncoder
from recsys_core.errors import InputError


@dataclass(frozen=True)
class PairSet:
    """Co-occurring item pairs split into training and validation.

    Attributes:
        train: (P, 2) item indexes.
        validation: (V, 2) item indexes, disjoint from `train` as unordered pairs.
        distinct: Distinct co-occurring pairs found before sampling.
    """

    train: np.ndarray
    validation: np.ndarray
    distinct: int


def cooccurrence_pairs(
    interactions: Interactions,
    config: FinetuneConfig,
    has_text: np.ndarray | None = None,
) -> PairSet:
    """Sample item pairs that appear within `config.window` positions in some user's history.

    Args:
        interactions: Where pairs come from (use the training part of a split).
        config: Window, pair counts, weighting and seed.
        has_text: (n_items,) bool; pairs with an item without text are skipped.
    """
    histories = interactions.histories()
    items = histories.items  # (nnz,) oldest first within each user
    user_of = np.repeat(np.arange(len(histories)), histories.lengths())  # (nnz,)
    firsts, seconds = [], []
    for offset in range(1, config.window + 1):
        same_user = user_of[offset:] == user_of[:-offset]
        firsts.append(items[:-offset][same_user])
        seconds.append(items[offset:][same_user])
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    keep = a != b
    if has_text is not None:
        keep &= has_text[a] & has_text[b]
    low, high = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    keys, counts = np.unique(low * interactions.n_items + high, return_counts=True)
    wanted = config.pairs + config.validation_pairs
    # with fewer distinct pairs than asked for, validation gives way first (to a fifth)
    n_val = min(config.validation_pairs, min(wanted, len(keys)) // 5)
    if len(keys) - n_val < config.batch_size:
        raise InputError(
            f"fine-tuning: only {len(keys)} distinct co-occurring item pairs (window "
            f"{config.window}); need at least one batch of {config.batch_size} to train on"
        )
    rng = np.random.default_rng(config.seed)
    weights = counts.astype(np.float64) ** config.count_power
    chosen = rng.choice(len(keys), size=min(wanted, len(keys)), replace=False,
                        p=weights / weights.sum())  # fmt: skip
    pairs = np.stack([keys[chosen] // interactions.n_items, keys[chosen] % interactions.n_items], 1)
    # a random direction per pair: the loss is symmetric, but batches should not sort by index
    flip = rng.random(len(pairs)) < 0.5
    pairs[flip] = pairs[flip][:, ::-1]
    train = pairs[n_val : n_val + config.pairs]
    return PairSet(train=train, validation=pairs[:n_val], distinct=len(keys))


def in_batch_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    anchor_items: torch.Tensor,
    positive_items: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric multiple-negatives ranking loss with in-batch negatives.

    Row i's target is column i; every other column is a negative, except columns that hold the
    same item as row i's partner or row i's item itself (a repeat in the batch is not a
    negative). Vectors are unit length, so logits are scaled cosine similarities.

    Args:
        anchors: (B, D) unit vectors of the first items.
        positives: (B, D) unit vectors of their partners.
        anchor_items: (B,) item indexes of `anchors`.
        positive_items: (B,) item indexes of `positives`.
        scale: Inverse temperature.

    Returns:
        The mean loss (scalar) and (B,) bool: whether each anchor's partner scored highest.
    """
    logits = scale * anchors @ positives.T  # (B, B)
    own = torch.eye(len(anchors), dtype=torch.bool, device=logits.device)  # (B, B)
    forward_clash = (positive_items[None, :] == positive_items[:, None]) | (
        positive_items[None, :] == anchor_items[:, None]
    )  # (B, B): column j repeats row i's partner or row i's own item
    backward_clash = (anchor_items[None, :] == anchor_items[:, None]) | (
        anchor_items[None, :] == positive_items[:, None]
    )
    forward = logits.masked_fill(forward_clash & ~own, float("-inf"))  # anchors -> positives
    backward = logits.T.masked_fill(backward_clash & ~own, float("-inf"))  # positives -> anchors
    target = torch.arange(len(anchors), device=logits.device)
    loss = 0.5 * (
        torch.nn.functional.cross_entropy(forward, target)
        + torch.nn.functional.cross_entropy(backward, target)
    )
    return loss, forward.argmax(1) == target


def finetune(
    encoder: ItemTextEncoder,
    texts: Sequence[str],
    pairs: PairSet,
    config: FinetuneConfig,
    *,
    progress: bool = False,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Fine-tune `encoder.model` in place on co-occurring pairs.

    Args:
        encoder: Loaded with `max_length=config.max_length`; its model is trained in place.
        texts: Item text per item index.
        pairs: From `cooccurrence_pairs`.
        config: Optimisation settings.
        progress: Show a progress bar with the running loss.
        on_step: Called with (step, {"train_loss": ..., "learning_rate": ...}) after each step.

    Returns:
        One metrics dict per epoch (train loss, validation loss and in-batch accuracy, seconds)
        and the validation metrics before training.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    needed = np.unique(np.concatenate([pairs.train.ravel(), pairs.validation.ravel()]))
    token_ids, _ = encoder.tokenize([texts[i] for i in needed])
    tokens = dict(zip(needed.tolist(), token_ids, strict=True))  # item index -> token ids

    steps_per_epoch = len(pairs.train) // config.batch_size
    if steps_per_epoch == 0:
        raise InputError(
            f"fine-tuning: {len(pairs.train)} training pairs are fewer than one batch "
            f"({config.batch_size})"
        )
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    model = encoder.model
    frozen = list(model.get_input_embeddings().parameters()) if config.freeze_embeddings else []
    for param in frozen:
        param.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.ndim >= 2]
    no_decay = [p for p in trained if p.ndim < 2]  # biases and LayerNorm
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )  # fmt: skip
    warmup = max(1, int(total * config.warmup_fraction))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    scaler = torch.amp.GradScaler(enabled=encoder.autocast_dtype == torch.float16)

    def step_loss(batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, mask = encoder.pad([tokens[i] for i in batch[:, 0]] +
                                      [tokens[i] for i in batch[:, 1]])  # fmt: skip
        vectors = encoder.embed(input_ids, mask)  # (2B, D)
        items = torch.from_numpy(batch).to(encoder.device)  # (B, 2)
        b = len(batch)
        return in_batch_loss(vectors[:b], vectors[b:], items[:, 0], items[:, 1], config.scale)

    def validate() -> dict[str, float]:
        if len(pairs.validation) < 2:
            return {}
        model.eval()
        losses, hits, count = [], 0, 0
        with torch.inference_mode():
            for start in range(0, len(pairs.validation), config.batch_size):
                batch = pairs.validation[start : start + config.batch_size]
                if len(batch) < 2:
                    continue
                loss, hit = step_loss(batch)
                losses.append(float(loss) * len(batch))
                hits, count = hits + int(hit.sum()), count + len(batch)
        return {"val_loss": sum(losses) / count, "val_accuracy": hits / count}

    before = validate()
    epochs: list[dict[str, float]] = []
    step = 0
    bar = tqdm(total=total, unit="step", desc="fine-tune", disable=not progress, dynamic_ncols=True)
    with bar:
        for epoch in range(config.epochs):
            if step >= total:
                break
            start = time.perf_counter()
            model.train()  # dropout on: a little noise between the two views helps
            order = rng.permutation(len(pairs.train))
            losses = []
            for k in range(steps_per_epoch):
                if step >= total:
                    break
                batch = pairs.train[order[k * config.batch_size : (k + 1) * config.batch_size]]
                loss, _ = step_loss(batch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trained, 1.0)
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"fine-tuning loss became {value} at step {step}")
                losses.append(value)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
                if on_step is not None:
                    on_step(step, {"train_loss": value, "learning_rate": schedule.get_last_lr()[0]})
            metrics = {"epoch": float(epoch + 1), "train_loss": float(np.mean(losses)),
                       "steps": float(step)}  # fmt: skip
            metrics.update(validate())
            metrics["seconds"] = time.perf_counter() - start
            epochs.append(metrics)
    model.eval()
    for param in frozen:
        param.requires_grad_(True)
    return epochs, before
