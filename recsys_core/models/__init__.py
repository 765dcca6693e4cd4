"""Every model behind one contract; importing this package registers them all."""

from recsys_core.models import content, ease, popularity  # noqa: F401  (registration)
from recsys_core.models.base import (
    MODELS,
    FitOptions,
    Recommender,
    TrainingData,
    create,
    register,
)

__all__ = ["MODELS", "FitOptions", "Recommender", "TrainingData", "create", "register"]
