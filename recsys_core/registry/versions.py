"""What a registered model version is: its model, parameters and the metric it won with.

Shared by the read-only `RegistryReader` and the writing `Tracker`, so neither imports the
other's module for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version and what it was."""

    name: str
    version: str
    model: str
    params: dict[str, Any]
    metric: str
    metric_value: float
    run_id: str

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def config_key(self) -> str:
        return config_key(self.model, self.params)


def config_key(model: str, params: dict[str, Any]) -> str:
    """One string per (model, parameters): equal configs give equal keys."""
    return f"{model}:{json.dumps(params, sort_keys=True)}"
