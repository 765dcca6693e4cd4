"""Finding the models: every module of this package, installed plugins, and named modules.

A model is one file: a `Recommender` subclass with the `register` decorator. It is found

- in this package (`recsys_core/models/*.py`): every module is imported;
- in an installed distribution that declares an entry point in the `recsys.models` group,
  e.g. in its pyproject.toml `[project.entry-points."recsys.models"] mymodel = "pkg.mymodel"`;
- in a module named in `RECSYS_MODEL_MODULES` (comma-separated import names, e.g. a file
  `my_model.py` on the Python path: `RECSYS_MODEL_MODULES=my_model`).

A plugin or named module that fails to import does not stop the others: its error is kept
and shown when a model that is not found is asked for.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import pkgutil

ENTRY_POINT_GROUP = "recsys.models"
MODULES_VARIABLE = "RECSYS_MODEL_MODULES"

_problems: dict[str, str] = {}  # module or entry point -> why it did not load
_loaded: set[str] = set()


def discover() -> None:
    """Import every model module not imported yet (cheap when nothing is new)."""
    import recsys_core.models as package

    for info in pkgutil.iter_modules(package.__path__):
        _load(f"{package.__name__}.{info.name}", strict=True)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        _load(entry.value.partition(":")[0], label=f"entry point {entry.name!r}")
    for name in os.environ.get(MODULES_VARIABLE, "").split(","):
        if name.strip():
            _load(name.strip(), label=f"{MODULES_VARIABLE} module")


def registered() -> dict[str, type]:
    """Every model by name, after discovering them (the registry itself, not a copy)."""
    from recsys_core.models.base import MODELS

    discover()
    return MODELS


def load_problems() -> list[str]:
    """Why each plugin or named module that failed did not load."""
    discover()  # a module named since the last look
    return list(_problems.values())


def _load(module: str, *, strict: bool = False, label: str = "module") -> None:
    if module in _loaded:
        return
    try:
        importlib.import_module(module)
    except Exception as exc:  # a broken plugin must not take the built-in models down
        if strict:
            raise
        _problems[module] = f"{label} {module} did not load ({type(exc).__name__}: {exc})"
        return
    _loaded.add(module)
    _problems.pop(module, None)
