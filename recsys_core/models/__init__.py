"""Every model behind one contract. `registered()` (and `create`) find them all on first use
(see `registry`): the modules of this package, installed `recsys.models` plugins and the
modules named in `RECSYS_MODEL_MODULES`."""

from recsys_core.models.base import (
    Capabilities,
    FitOptions,
    Recommender,
    TestProfile,
    TrainingData,
)
from recsys_core.models.registry import MODELS, create, discover, register, registered

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
