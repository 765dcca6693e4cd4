"""Every model behind one contract; importing this package registers them all."""

from recsys_core.models import als, blend, content, din, ease, itemknn, mf, popularity, sasrec  # noqa: F401  (registration)
from recsys_core.models.base import (
    MODELS,
    FitOptions,
    Recommender,
    TrainingData,
    create,
    register,
)

__all__ = ["MODELS", "FitOptions", "Recommender", "TrainingData", "create", "register"]
