"""Prefect cache keys from the library's stage fingerprints.

A stage's fingerprint (`recsys_core.pipeline.train.train_inputs`, ...) covers the tables it
reads, the settings and the code (its source). When a nightly fails in `recommend`, running it
again finds `train` cached (its inputs did not change) and reruns only what is left. The
recommend stage keeps its fingerprint in the commit it publishes, so a night whose
recommendations are already published is not ranked again; encoding skips unchanged items by
itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from recsys_core.context import RunContext
from recsys_core.settings import Settings


def cache_key_on(fingerprint: Callable[[RunContext], str]) -> Callable[[Any, dict], str]:
    """A Prefect `cache_key_fn`: the stage's fingerprint over its `settings` parameter."""

    def key(task_context: Any, parameters: dict[str, Any]) -> str:
        settings: Settings = parameters["settings"]
        return fingerprint(RunContext(settings))

    return key
