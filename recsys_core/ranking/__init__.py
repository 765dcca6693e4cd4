"""The one top-K: chunked scoring, seen-item exclusion, candidate filters, queries and reasons."""

from recsys_core.ranking.query import (
    DEFAULT_QUERY_WEIGHT,
    QueryBlend,
    encode_queries,
    load_query_encoder,
)
from recsys_core.ranking.topk import (
    Shard,
    TopK,
    chunk_size,
    plan_shards,
    score_in_chunks,
    top_k,
)

__all__ = [
    "DEFAULT_QUERY_WEIGHT",
    "QueryBlend",
    "Shard",
    "TopK",
    "chunk_size",
    "encode_queries",
    "load_query_encoder",
    "plan_shards",
    "score_in_chunks",
    "top_k",
]
