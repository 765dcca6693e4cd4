"""A fitted model on disk, with no pickle anywhere.

config.json          model name, config parameters, format version, extra metadata
weights.safetensors  the model's state tensors
users.parquet        user vocabulary (index, id)
items.parquet        item vocabulary (index, id)
history.safetensors  each user's distinct items, oldest first (CSR), to score users offline
item_embeddings.safetensors  (optional) item text vectors, to rank by a query when served
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from recsys_core.data.interactions import Interactions, UserHistories
from recsys_core.data.vocab import Vocabulary
from recsys_core.models import Recommender, create

FORMAT_VERSION = 1


@dataclass
class ModelBundle:
    """A fitted model plus the vocabularies and histories it was fitted with."""

    model: Recommender
    users: Vocabulary
    items: Vocabulary
    histories: UserHistories
    metadata: dict[str, Any] = field(default_factory=dict)
    item_embeddings: torch.Tensor | None = None  # (n_items, D), for query-aware ranking

    @classmethod
    def from_fit(
        cls,
        model: Recommender,
        data: Interactions,
        metadata: dict[str, Any] | None = None,
        item_embeddings: torch.Tensor | None = None,
    ) -> ModelBundle:
        return cls(
            model, data.users, data.items, data.histories(), dict(metadata or {}), item_embeddings
        )

    def histories_for(self, user_ids: list[str]) -> tuple[UserHistories, np.ndarray]:
        """Histories of `user_ids` (in order) and which of them the model knows."""
        index = self.users.index(user_ids)
        known = index >= 0
        lengths = np.where(known, self.histories.lengths()[np.maximum(index, 0)], 0)
        indptr = np.zeros(len(user_ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        parts = [self.histories.row(i) for i in index[known]]
        times = [
            self.histories.timestamps[self.histories.indptr[i] : self.histories.indptr[i + 1]]
            for i in index[known]
        ]
        empty = np.zeros(0, dtype=np.int64)
        return (
            UserHistories(
                user_index=index,
                indptr=indptr,
                items=np.concatenate(parts) if parts else empty,
                timestamps=np.concatenate(times) if times else empty,
                n_items=len(self.items),
            ),
            known,
        )


def save_bundle(bundle: ModelBundle, folder: Path, *, max_weights_bytes: int | None = None) -> Path:
    """Write a bundle's files to `folder`; weights over `max_weights_bytes` (None = no limit)
    are not written at all."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT_VERSION,
        "model": bundle.model.name,
        "params": bundle.model.params(),
        "n_items": len(bundle.items),
        "n_users": len(bundle.users),
        "metadata": bundle.metadata,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    state = {k: v.contiguous().cpu() for k, v in bundle.model.state_dict().items()}
    if max_weights_bytes is None or sum(v.nbytes for v in state.values()) <= max_weights_bytes:
        save_file(state, str(folder / "weights.safetensors"))
    bundle.users.to_frame().write_parquet(folder / "users.parquet")
    bundle.items.to_frame().write_parquet(folder / "items.parquet")
    h = bundle.histories
    save_file(
        {
            "user_index": torch.from_numpy(h.user_index.copy()),
            "indptr": torch.from_numpy(h.indptr.copy()),
            "items": torch.from_numpy(h.items.copy()),
            "timestamps": torch.from_numpy(h.timestamps.copy()),
        },
        str(folder / "history.safetensors"),
    )
    if bundle.item_embeddings is not None:
        save_file(
            {"embeddings": bundle.item_embeddings.float().contiguous().cpu()},
            str(folder / "item_embeddings.safetensors"),
        )
    return folder


def load_bundle(folder: Path) -> ModelBundle:
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    if config.get("format") != FORMAT_VERSION:
        raise ValueError(f"{folder}: model format {config.get('format')} is not {FORMAT_VERSION}")
    model = create(config["model"], config["params"], saved=True)
    model.load_state_dict(load_file(str(folder / "weights.safetensors")))
    items = Vocabulary.from_frame(pl.read_parquet(folder / "items.parquet"))
    users = Vocabulary.from_frame(pl.read_parquet(folder / "users.parquet"))
    h = {k: v.numpy() for k, v in load_file(str(folder / "history.safetensors")).items()}
    histories = UserHistories(
        user_index=h["user_index"],
        indptr=h["indptr"],
        items=h["items"],
        timestamps=h["timestamps"],
        n_items=len(items),
    )
    embeddings_file = folder / "item_embeddings.safetensors"
    embeddings = load_file(str(embeddings_file))["embeddings"] if embeddings_file.exists() else None
    return ModelBundle(model, users, items, histories, config.get("metadata", {}), embeddings)


def comparison_png(
    names: list[str],
    metrics: list[dict[str, float]],
    epochs: list[list[dict[str, float]]],
    path: Path,
    *,
    metric: str = "ndcg@10",
    title: str = "",
    winner: int | None = None,
    challenger: int | None = None,
    shown: tuple[str, ...] = ("ndcg@10", "recall@10", "recall@20", "map@10", "mrr@10"),
) -> Path:
    """A PNG comparing candidates: accuracy bars, beyond-accuracy bars, training curves.

    Args:
        names: Candidate labels, in table order.
        metrics: Each candidate's validation metrics.
        epochs: Each candidate's per-epoch training metrics (empty for closed-form models).
        path: Where to write the PNG.
        metric: The selection metric (its bars are outlined).
        title: Figure title (protocol and decision).
        winner: Index of the champion, drawn in bold.
        challenger: Index of the challenger.
        shown: Accuracy metrics to draw.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to the file
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [
        name + (" (champion)" if i == winner else " (challenger)" if i == challenger else "")
        for i, name in enumerate(names)
    ]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), gridspec_kw={"width_ratios": [3, 2, 2]})
    x = np.arange(len(names))

    def bars(ax, keys, ylabel):
        width = 0.8 / max(len(keys), 1)
        for j, key in enumerate(keys):
            values = [m.get(key, np.nan) for m in metrics]
            drawn = ax.bar(x + j * width, values, width, label=key)
            if key == metric:
                for patch in drawn:
                    patch.set_edgecolor("black")
                    patch.set_linewidth(1.5)
        ax.set_xticks(x + width * (len(keys) - 1) / 2, labels, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)

    bars(
        axes[0], [k for k in shown if any(k in m for m in metrics)], "validation (higher is better)"
    )
    beyond = [k for k in ("coverage@10", "diversity@10") if any(k in m for m in metrics)]
    bars(axes[1], beyond, "share / distance")
    axes[1].set_title("beyond accuracy", fontsize=10)
    curves = axes[2]
    for label, history in zip(labels, epochs, strict=True):
        points = [(i + 1, e["loss"]) for i, e in enumerate(history) if "loss" in e]
        if points:  # each at its own epoch: a model may measure the loss on some only
            curves.plot(*zip(*points, strict=True), marker=".", label=label)
    curves.set_xlabel("epoch")
    curves.set_ylabel("training loss")
    curves.set_title("training curves", fontsize=10)
    if curves.lines:
        curves.legend(fontsize=8)
    else:
        curves.text(0.5, 0.5, "closed-form models only", ha="center", transform=curves.transAxes)
    for tick in axes[0].get_xticklabels() + axes[1].get_xticklabels():
        if winner is not None and tick.get_text() == labels[winner]:
            tick.set_fontweight("bold")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
