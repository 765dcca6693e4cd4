"""Cache keys on a stage's inputs, so a retried or repeated nightly skips finished stages.

A stage's key is the state (Delta table id and version) of each table it reads, plus the
settings and the code version. When a nightly fails in `recommend`, running it again finds
`train` cached (its input tables did not change) and reruns only what is left. The recommend
stage keeps its key in the commit it publishes, so a night whose recommendations are already
published is not ranked again; encoding skips unchanged items by itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import recsys_core
from recsys_core.settings import Settings
from recsys_core.storage import Lake
from recsys_core.storage.state import table_state


def champion_state(settings: Settings) -> str:
    """Registered version behind the `champion` alias, or `none` (read-only, no side effects)."""
    lake = Lake(settings.data_dir)
    if not (lake.mlflow_dir / "mlflow.db").exists():
        return "none"
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=lake.tracking_uri, registry_uri=lake.tracking_uri)
    try:
        return str(client.get_model_version_by_alias(settings.registered_model, "champion").version)
    except MlflowException:
        return "none"


def stage_key(
    stage: str, tables: tuple[str, ...], *, champion: bool = False
) -> Callable[[Any, dict[str, Any]], str]:
    """A Prefect `cache_key_fn` for a stage that reads `tables` (and the champion model)."""

    def key(context: Any, parameters: dict[str, Any]) -> str:
        settings: Settings = parameters["settings"]
        lake = Lake(settings.data_dir)
        inputs = {
            "stage": stage,
            "code": recsys_core.__version__,
            "settings": settings.model_dump(mode="json"),
            "tables": {table: table_state(lake, table) for table in tables},
            "champion": champion_state(settings) if champion else None,
        }
        digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
        return f"recsys-{stage}-{digest[:40]}"

    return key


def recommend_inputs(settings: Settings) -> str:
    """Fingerprint of what the recommend stage reads: events, champion version, settings,
    and the contents of the unavailable-items file when there is one."""
    key = stage_key("recommend", ("events",), champion=True)(None, {"settings": settings})
    unavailable = settings.unavailable_items
    if unavailable is not None and Path(unavailable).is_file():
        digest = hashlib.sha256(Path(unavailable).read_bytes()).hexdigest()[:16]
        key = f"{key}-{digest}"
    return key


def published_report(settings: Settings, inputs: str) -> dict | None:
    """The report of the latest publish when it came from exactly `inputs`, else None."""
    lake = Lake(settings.data_dir)
    if not lake.exists("recommendations"):
        return None
    latest = lake.history("recommendations")[0]
    if latest.get("inputs") != inputs:
        return None
    return {
        "model": latest.get("model", ""),
        "rows": int(latest.get("rows", 0)),
        "users": int(latest.get("users", 0)),
        "version": int(latest["version"]),
        "reused": True,
    }
