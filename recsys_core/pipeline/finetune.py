"""Fine-tune the item text encoder on the data directory's events, track and register it.

The encoder is trained on the training part of an evaluation split (never on held-out events
or items), logged to MLflow (experiment `recsys-encoder`: parameters, per-step and per-epoch
loss, validation metrics) and registered as a version of the registered model
`recsys-encoder`. `recsys encode --encoder models:/recsys-encoder/N` then re-encodes every
item with it (its encoder id differs from the base model's).

With `evaluate`, the `content` model is scored on the split's held-out part with the base and
with the fine-tuned encoder, so the run says whether fine-tuning helped on this data.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from recsys_core.context import RunContext
from recsys_core.data.interactions import Interactions
from recsys_core.data.splits import PROTOCOLS, Split, make_split
from recsys_core.encoders.finetune import FinetuneConfig, cooccurrence_pairs, finetune
from recsys_core.encoders.item_text_encoder import ItemTextEncoder, encoder_identity
from recsys_core.encoders.registry import ENCODER_REGISTRY_NAME, resolve_encoder
from recsys_core.errors import InputError
from recsys_core.evaluation import evaluate
from recsys_core.models import FitOptions, TrainingData, create
from recsys_core.pipeline.train import load_interactions
from recsys_core.registry.tracking import Tracker
from recsys_core.storage import Lake

ENCODER_EXPERIMENT = "recsys-encoder"
ENCODER_DESCRIPTION = (
    "Item text encoders fine-tuned on co-occurring items "
    "(use with `recsys encode --encoder models:/recsys-encoder/N`)."
)
ALL_EVENTS = "all"  # no split: fine-tune on every event (nothing left to evaluate on)
SPLITS = (*PROTOCOLS, ALL_EVENTS)


@dataclass
class FinetuneReport:
    base_encoder: str
    encoder: str  # id of the fine-tuned encoder as `recsys encode` will record it
    reference: str  # models:/recsys-encoder/N
    folder: str  # the Hugging Face folder of that version
    run_id: str
    split: str
    train_events: int
    distinct_pairs: int
    train_pairs: int
    validation_pairs: int
    steps: int
    seconds: float
    before: dict[str, float] = field(default_factory=dict)  # validation metrics before
    epochs: list[dict[str, float]] = field(default_factory=list)
    evaluation: dict[str, dict[str, float]] = field(default_factory=dict)  # base / finetuned

    def as_dict(self) -> dict:
        return asdict(self)


def finetune_encoder(
    context: RunContext,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    split: str = "global_temporal",
    evaluate_content: bool = False,
    output: Path | None = None,
    progress: bool = False,
) -> FinetuneReport:
    """Fine-tune the configured encoder on co-occurring items and register the result.

    Args:
        context: Data directory with `events` and `items`; its settings give the base
            encoder, device, holdout fraction and encode-time max length; its run id is
            stored as an MLflow tag.
        config: Pair mining and optimisation settings.
        split: Evaluation protocol whose training part supplies the pairs
            (`global_temporal`, `cold_items`), or `all` for every event.
        evaluate_content: Score the `content` model on the split's held-out part with the base
            and the fine-tuned encoder (Recall/NDCG@10,20).
        output: Also copy the fine-tuned Hugging Face folder here.
        progress: Show progress bars.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    if evaluate_content and split == ALL_EVENTS:
        raise InputError("--evaluate needs a split with held-out events, not --split all")
    lake, settings, run_id = context.lake, context.settings, context.run_id
    start = time.perf_counter()
    data = load_interactions(lake)
    texts = _item_texts(lake, data)
    evaluation_split = None if split == ALL_EVENTS else make_split(
        data, split, settings.train.holdout_fraction
    )  # fmt: skip
    train = evaluation_split.train if evaluation_split is not None else data
    has_text = np.array([bool(t.strip()) for t in texts], dtype=bool)
    pairs = cooccurrence_pairs(train, config, has_text)

    embedding = settings.embedding
    base = resolve_encoder(embedding.encoder, lake.root)
    base_id = encoder_identity(base.source, max_length=embedding.encoder_max_length, name=base.name)
    encoder = ItemTextEncoder(
        base.source, max_length=config.max_length, device=settings.compute.device,
        precision=embedding.encoder_precision, name=base.name,
    )  # fmt: skip
    tracker = Tracker(lake, ENCODER_EXPERIMENT, ENCODER_REGISTRY_NAME)
    tags = {"pipeline_run": run_id, "base_encoder": base_id, "split": split}
    with tracker.run(f"finetune {datetime.now(UTC):%Y-%m-%d %H:%M}", tags=tags) as run:
        tracker.log_params(
            {
                **{f"config.{k}": v for k, v in asdict(config).items()},
                "base_encoder": base_id, "split": split, "device": str(encoder.device),
                "holdout_fraction": settings.train.holdout_fraction, "train_events": len(train),
                "distinct_pairs": pairs.distinct, "train_pairs": len(pairs.train),
                "validation_pairs": len(pairs.validation),
            }
        )  # fmt: skip
        evaluation: dict[str, dict[str, float]] = {}
        if evaluate_content:
            evaluation["base"] = _content_metrics(
                base.source, base.name, texts, evaluation_split, settings, progress
            )
            tracker.log_metrics(_prefixed("base_", evaluation["base"]))

        def log_step(step: int, values: dict[str, float]) -> None:
            if step % 10 == 0 or step == 1:
                tracker.log_metrics(values, step=step)

        epochs, before = finetune(
            encoder, texts, pairs, config, progress=progress, on_step=log_step
        )
        tracker.log_metrics({f"before_{k}": v for k, v in before.items()})
        tracker.log_epochs(epochs)
        provenance = {
            "base_encoder": base_id, "mlflow_run_id": run.info.run_id, "split": split,
            "config": asdict(config), "trained_at": datetime.now(UTC).isoformat(),
        }  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            saved = encoder.save(Path(tmp) / "encoder", metadata=provenance)
            tracker.log_artifacts(str(saved), "encoder")
            if output is not None:
                shutil.copytree(saved, output, dirs_exist_ok=True)
        version = tracker.register_files(
            tracker.artifact_uri("encoder"), run_id=run.info.run_id,
            description=f"fine-tuned from {base_id}", model_description=ENCODER_DESCRIPTION,
            tags={"base_encoder": base_id},
        )  # fmt: skip
        reference = f"models:/{ENCODER_REGISTRY_NAME}/{version}"
        tuned = resolve_encoder(reference, lake.root)
        if evaluate_content:
            evaluation["finetuned"] = _content_metrics(
                tuned.source, tuned.name, texts, evaluation_split, settings, progress
            )
            tracker.log_metrics(_prefixed("finetuned_", evaluation["finetuned"]))
        seconds = time.perf_counter() - start
        tracker.log_metric("seconds", seconds)
    tuned_id = encoder_identity(
        tuned.source, max_length=embedding.encoder_max_length, name=tuned.name
    )
    version_tags = {"encoder_id": tuned_id}
    for label, metrics in evaluation.items():
        version_tags.update({k: str(v) for k, v in _prefixed(f"{label}_", metrics).items()})
    tracker.tag_version(version, version_tags)
    return FinetuneReport(
        base_encoder=base_id, encoder=tuned_id, reference=reference, folder=str(tuned.source),
        run_id=run.info.run_id, split=split, train_events=len(train),
        distinct_pairs=pairs.distinct, train_pairs=len(pairs.train),
        validation_pairs=len(pairs.validation), steps=int(epochs[-1]["steps"]) if epochs else 0,
        seconds=round(seconds, 2), before=before, epochs=epochs, evaluation=evaluation,
    )  # fmt: skip


def content_metrics(
    embeddings: np.ndarray, split: Split, ks: tuple[int, ...] = (10, 20), memory_mb: int = 512
) -> dict[str, float]:
    """Full-ranking metrics of the `content` model on `split` with these item vectors.

    Args:
        embeddings: (n_items, D) unit vectors aligned with the split's item vocabulary.
        split: The evaluation split (for `cold_items`, only held-out items are ranked).
        ks: Cut-offs.
        memory_mb: Score-matrix budget per chunk.
    """
    import torch

    model = create("content")
    model.fit(TrainingData(split.train, torch.from_numpy(embeddings)), FitOptions())
    return evaluate(model, split, ks, memory_mb=memory_mb)


def _content_metrics(source, name, texts, split, settings, progress) -> dict[str, float]:
    encoder = ItemTextEncoder(
        source, max_length=settings.embedding.encoder_max_length,
        device=settings.compute.device, precision=settings.embedding.encoder_precision,
        max_batch_tokens=settings.encode.encoder_batch_tokens, name=name,
    )  # fmt: skip
    vectors = encoder.encode(texts, progress=progress).embeddings
    return content_metrics(vectors, split, memory_mb=settings.compute.score_memory_mb)


def _item_texts(lake: Lake, data: Interactions) -> list[str]:
    """Item text per item index of `data` (empty for items missing from the catalog)."""
    items = lake.read("items", ["item_id", "text"])
    aligned = (
        data.items.ids.to_frame("item_id")
        .join(items, on="item_id", how="left", maintain_order="left")
        .with_columns(pl.col("text").fill_null(""))
    )
    return aligned["text"].to_list()


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    """MLflow metric names cannot contain '@'."""
    return {prefix + k.replace("@", "_at_"): float(v) for k, v in metrics.items()}
