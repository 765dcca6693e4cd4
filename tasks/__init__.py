"""Thin Prefect tasks over `recsys_core.pipeline`: they pass paths and small, typed reports."""

import recsys_core  # noqa: F401  (offline defaults before Prefect reads its settings)
from tasks.stages import (
    commit_task,
    finetune_encoder_task,
    ingest_task,
    plan_task,
    shard_task,
    train_task,
)

__all__ = [
    "commit_task",
    "finetune_encoder_task",
    "ingest_task",
    "plan_task",
    "shard_task",
    "train_task",
]
