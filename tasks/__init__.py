"""Thin Prefect tasks over `recsys_core.pipeline`: they pass paths and small reports."""

import recsys_core  # noqa: F401  (offline defaults before Prefect reads its settings)
from tasks.stages import (
    commit_encode_task,
    encode_shard_task,
    finetune_encoder_task,
    ingest_task,
    plan_encode_task,
    plan_recommend_task,
    publish_task,
    rank_shard_task,
    train_task,
)

__all__ = [
    "commit_encode_task",
    "encode_shard_task",
    "finetune_encoder_task",
    "ingest_task",
    "plan_encode_task",
    "plan_recommend_task",
    "publish_task",
    "rank_shard_task",
    "train_task",
]
