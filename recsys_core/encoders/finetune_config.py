"""What fine-tuning the encoder is told: pair mining and optimisation settings.

Apart from the training code so that the CLI and the Prefect forms can offer these options
without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from recsys_core.errors import InputError
from recsys_core.settings import ComputeSettings


@dataclass(frozen=True)
class FinetuneConfig:
    # Items at most `window` positions apart in a user's chronological history co-occur.
    window: int = 5
    # Training pairs drawn (without replacement) from the distinct co-occurring pairs, each
    # with weight count ** count_power: 0 = every distinct pair alike, 1 = as often as it
    # co-occurs (popular pairs then dominate).
    pairs: int = 2048
    count_power: float = 0.5
    # Pairs kept out of training to measure validation loss and in-batch accuracy.
    validation_pairs: int = 256
    epochs: int = 1  # passes over the training pairs
    batch_size: int = 32  # pairs per step; each item gets B - 1 in-batch negatives
    max_steps: int | None = None  # stop early after this many optimizer steps
    learning_rate: float = 3e-5
    warmup_fraction: float = 0.1  # linear warm-up, then linear decay to zero
    weight_decay: float = 0.01
    # Keep the token embedding table fixed: half of a small model's weights, updated only for
    # tokens the pairs happen to contain, so training it costs time and helps unseen text little.
    freeze_embeddings: bool = True
    scale: float = 20.0  # logits = scale x cosine similarity (temperature 0.05)
    max_length: int = 128  # token limit while training (item texts are cut, as in encoding)
    seed: int = ComputeSettings.model_fields["seed"].default

    def __post_init__(self) -> None:
        checks = {
            "window": self.window >= 1,
            "pairs": self.pairs >= 2,
            "validation_pairs": self.validation_pairs >= 0,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "max_steps": self.max_steps is None or self.max_steps >= 1,
            "learning_rate": self.learning_rate > 0,
            "warmup_fraction": 0 <= self.warmup_fraction < 1,
            "scale": self.scale > 0,
            "max_length": self.max_length >= 8,
        }
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in checks.items() if not ok]
        if bad:
            raise InputError(f"fine-tuning config: invalid {', '.join(bad)}")
