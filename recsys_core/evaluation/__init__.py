"""Full-ranking evaluation: every item is a candidate, seen items excluded, no sampling."""

from recsys_core.evaluation.evaluate import ScoreMatrixEvaluator, evaluate, relevance_matrix
from recsys_core.evaluation.metrics import list_metrics, ranking_metrics

__all__ = [
    "ScoreMatrixEvaluator",
    "evaluate",
    "list_metrics",
    "ranking_metrics",
    "relevance_matrix",
]
