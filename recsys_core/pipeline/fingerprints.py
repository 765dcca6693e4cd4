"""Fingerprints of what a stage reads, so work whose inputs did not change can be skipped.

A stage's fingerprint is the state (Delta table id and version) of each table it reads, the
settings groups it reads, the code version and, for a stage that ranks from it, the champion's
registered version. Equal inputs give an equal fingerprint; a changed table version, setting
of one of those groups or champion gives another one, while an option of another stage (the
`k` of recommend, for train) leaves it alone. Each stage module names the tables and settings
groups it reads and builds its fingerprint from `stage_fingerprint`; nothing here writes, and
no MLflow store is created to read one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from recsys_core import __version__
from recsys_core.context import RunContext
from recsys_core.registry.reader import RegistryReader
from recsys_core.registry.tracking import CHAMPION
from recsys_core.storage.state import table_state


def champion_state(context: RunContext) -> str:
    """Registered version behind the `champion` alias, or `none`."""
    registered_model = context.settings.tracking.registered_model
    version = RegistryReader(context.lake).alias_version(registered_model, CHAMPION)
    return "none" if version is None else version


def stage_fingerprint(
    stage: str,
    context: RunContext,
    tables: Sequence[str],
    groups: Sequence[str],
    *,
    champion: str | None = None,
) -> str:
    """`recsys-<stage>-<digest>` over the stage's tables, settings, code and champion.

    Args:
        stage: The stage's name (two stages never share a fingerprint).
        context: The data directory whose tables the stage reads, and the settings (the
            run id does not count).
        tables: The tables the stage reads.
        groups: The settings groups the stage reads (every option of each counts).
        champion: The champion version the stage ranks from (`champion_state`), or None for
            a stage that does not read it.
    """
    inputs = {
        "stage": stage,
        "code": __version__,
        "settings": context.settings.model_dump(mode="json", include={"data_dir", *groups}),
        "tables": {table: table_state(context.lake, table) for table in tables},
        "champion": champion,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return f"recsys-{stage}-{digest[:40]}"


def file_digest(path: str | Path | None) -> str | None:
    """Short sha256 of a file's contents, or None when there is no such file."""
    if path is None or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
