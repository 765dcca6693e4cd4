"""Fingerprints of what a stage reads, so work whose inputs did not change can be skipped.

A stage's fingerprint is the state (Delta table id and version) of each table it reads, the
settings groups it reads, the code (`code_digest`: the source of this package, of `tasks` and
`flows`, and of the plugin model modules) and, for a stage that ranks from it, the champion's
registered version. Equal inputs give an equal fingerprint; a changed table version, setting
of one of those groups or champion gives another one, while an option of another stage (the
`k` of recommend, for train) leaves it alone. Each stage module names the tables and settings
groups it reads and builds its fingerprint from `stage_fingerprint`; nothing here writes, and
no MLflow store is created to read one.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from types import ModuleType

import recsys_core
from recsys_core import __version__
from recsys_core.context import RunContext
from recsys_core.models.registry import plugin_modules
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

    After a change to the code (this package, `tasks`, `flows` or a plugin model's module), a
    stage's fingerprint changes, so a report cached before the change is not taken for one.

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
        "code": code_digest(),
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


# Source trees whose code shapes a stage's output: this library, and the Prefect tasks and
# flows that wrap its stages (installed beside it, or absent from a library-only install).
SOURCE_PACKAGES = ("recsys_core", "tasks", "flows")
_plugin_digests: dict[str, tuple[ModuleType, str]] = {}


def code_digest() -> str:
    """Short sha256 of the code a stage runs: `__version__`, the `.py` files of this package,
    `tasks` and `flows`, and those of every plugin model module (see
    `recsys_core.models.registry`).

    The installed source is hashed once per process (a few milliseconds), as the process
    runs the code it imported at its start; a plugin module is hashed again only when it was
    imported again.
    """
    plugins = {name: _plugin_digest(name) for name in plugin_modules()}
    inputs = {"version": __version__, "source": _source_digest(), "plugins": plugins}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


@cache
def _source_digest() -> str:
    root = Path(recsys_core.__file__).resolve().parent.parent
    return _files_digest(root, (root / name for name in SOURCE_PACKAGES))


def _plugin_digest(name: str) -> str:
    """The source of plugin module `name`: its file, and every file of the package it is in
    (a helper module of the plugin's package shapes the model as much as the model's file)."""
    module = sys.modules.get(name)
    if module is None:
        return "not loaded"
    known = _plugin_digests.get(name)
    if known is not None and known[0] is module:
        return known[1]
    top = sys.modules.get(name.partition(".")[0], module)
    folders = [Path(p) for p in getattr(top, "__path__", ())]
    files = [Path(module.__file__)] if getattr(module, "__file__", None) else []
    roots = folders or [f.parent for f in files]
    digest = _files_digest(roots[0] if roots else Path("/"), [*folders, *files])
    _plugin_digests[name] = (module, digest)
    return digest


def _files_digest(root: Path, paths: Iterable[Path]) -> str:
    """sha256 over the `.py` files at or under `paths`, each with its path from `root`, so a
    renamed or moved file changes it too."""
    files: set[Path] = set()
    for path in paths:
        if path.is_dir():
            files.update(path.rglob("*.py"))
        elif path.suffix == ".py" and path.is_file():
            files.add(path)
    digest = hashlib.sha256()
    for file in sorted(files):
        relative = file.relative_to(root) if file.is_relative_to(root) else file
        digest.update(f"{relative.as_posix()}\0{file.stat().st_size}\0".encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
