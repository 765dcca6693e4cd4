"""The pipeline's stages as plain functions over one run context.

Every stage takes a `recsys_core.context.RunContext`: the settings, the data directory's lake
built from them and the run id, so a stage's tables and configuration always agree. Each
stage reads only the tables before it and writes its own in single commits; Prefect
tasks in `tasks/` wrap these functions and pass nothing bigger than paths and reports.
"""

from recsys_core.pipeline.encode import (
    ENCODE,
    EncodePlan,
    EncodeReport,
    EncodeShard,
    EncodeShardResult,
    commit_encode,
    encode_items,
    encode_shard,
    plan_encode,
)
from recsys_core.pipeline.ingest import IngestReport, ingest
from recsys_core.pipeline.recommend import (
    RECOMMEND,
    AlreadyPublished,
    PublishReport,
    RecommendPlan,
    ShardResult,
    plan_recommend,
    publish,
    published_report,
    rank_shard,
    recommend,
    recommend_inputs,
)
from recsys_core.pipeline.sharded import MissingShards, ShardedStage
from recsys_core.pipeline.train import CandidateResult, TrainReport, train, train_inputs

__all__ = [
    "ENCODE",
    "RECOMMEND",
    "AlreadyPublished",
    "CandidateResult",
    "EncodePlan",
    "EncodeReport",
    "EncodeShard",
    "EncodeShardResult",
    "IngestReport",
    "MissingShards",
    "PublishReport",
    "RecommendPlan",
    "ShardResult",
    "ShardedStage",
    "TrainReport",
    "commit_encode",
    "encode_items",
    "encode_shard",
    "ingest",
    "plan_encode",
    "plan_recommend",
    "publish",
    "published_report",
    "rank_shard",
    "recommend",
    "recommend_inputs",
    "train",
    "train_inputs",
]
