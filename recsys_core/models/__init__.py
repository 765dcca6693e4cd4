"""Every model behind one contract. `registered()` (and `create`) find them all on first use
(see `discovery`): the modules of this package, installed `recsys.models` plugins and the
modules named in `RECSYS_MODEL_MODULES`."""

from recsys_core.models.base import (
    MODELS,
    Capabilities,
    FitOptions,
    Recommender,
    TestProfile,
    TrainingData,
    create,
    register,
)
from recsys_core.models.discovery import discover, registered

__all__ = [
    "MODELS",
    "Capabilities",
    "FitOptions",
    "Recommender",
    "TestProfile",
    "TrainingData",
    "create",
    "discover",
    "register",
    "registered",
]
