"""The pipeline's stages as plain functions over a data directory.

Each stage reads only the tables before it and writes its own in single commits; Prefect
tasks in `tasks/` wrap these functions and pass nothing bigger than paths and reports.
"""

from recsys_core.pipeline.encode import (
    EncodePlan,
    EncodeReport,
    EncodeShard,
    EncodeShardResult,
    commit_encode,
    encode_items,
    encode_shard,
    plan_encode,
)
from recsys_core.pipeline.ingest import IngestOptions, IngestReport, ingest
from recsys_core.pipeline.recommend import (
    PublishReport,
    RecommendPlan,
    ShardResult,
    plan_recommend,
    publish,
    rank_shard,
    recommend,
)
from recsys_core.pipeline.train import CandidateResult, TrainReport, train

__all__ = [
    "CandidateResult",
    "EncodePlan",
    "EncodeReport",
    "EncodeShard",
    "EncodeShardResult",
    "IngestOptions",
    "IngestReport",
    "PublishReport",
    "RecommendPlan",
    "ShardResult",
    "TrainReport",
    "commit_encode",
    "encode_items",
    "encode_shard",
    "ingest",
    "plan_encode",
    "plan_recommend",
    "publish",
    "rank_shard",
    "recommend",
    "train",
]
