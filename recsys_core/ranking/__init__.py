"""The one top-K: chunked scoring, seen-item exclusion, candidate filters and reasons."""

from recsys_core.ranking.topk import TopK, chunk_size, top_k

__all__ = ["TopK", "chunk_size", "top_k"]
