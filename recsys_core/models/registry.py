"""The model registry: every model by name, how models are found, and specs to models.

A model is one file: a `Recommender` subclass (see `base`) with the `register` decorator. It
is found

- in this package (`recsys_core/models/*.py`): every module is imported;
- in an installed distribution that declares an entry point in the `recsys.models` group,
  e.g. in its pyproject.toml `[project.entry-points."recsys.models"] mymodel = "pkg.mymodel"`;
- in a module named by a run's `model_modules` setting (`RECSYS_MODEL_MODULES`: comma-separated
  import names, e.g. a file `my_model.py` on the Python path: `RECSYS_MODEL_MODULES=my_model`).
  A `RunContext` hands its setting over when it is built (`name_model_modules`); the registry
  reads no settings of its own.

A plugin or named module that fails to import does not stop the others: its error is kept
and shown when a model that is not found is asked for. Models are looked for on first use
(`registered()`, `create`), so importing the registry imports no model.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import json
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from recsys_core.errors import InputError
from recsys_core.settings import split_top_level

ENTRY_POINT_GROUP = "recsys.models"

_problems: dict[str, str] = {}  # module or entry point -> why it did not load
_loaded: set[str] = set()
_scanned = False  # the package, entry points and named modules were looked through once
_named: dict[str, None] = {}  # modules runs named (`model_modules`), in the order named


def discover() -> None:
    """Look through the package, the entry points and the named modules again, importing what
    is new (a plugin installed or a module named since the last look)."""
    global _scanned
    package = __name__.rpartition(".")[0]
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        _load(f"{package}.{info.name}", strict=True)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        _load(entry.value.partition(":")[0], label=f"entry point {entry.name!r}")
    for name in _named:
        _load(name, label="RECSYS_MODEL_MODULES module")
    _scanned = True


def name_model_modules(model_modules: str) -> None:
    """Import the modules a run's `model_modules` setting names (comma-separated), and look
    through them again on every later discovery in this process.

    Args:
        model_modules: The setting's value; empty names nothing.
    """
    for name in (n.strip() for n in model_modules.split(",")):
        if name:
            _named.setdefault(name)
            _load(name, label="RECSYS_MODEL_MODULES module")


def plugin_modules() -> list[str]:
    """The modules models were loaded from outside this package (`recsys.models` entry points
    and the modules runs named), after looking for new ones."""
    discover()
    package = __name__.rpartition(".")[0]
    return sorted(m for m in _loaded if not m.startswith(f"{package}."))


def registered() -> dict[str, type]:
    """Every model by name (the registry itself, not a copy), discovered on the first call."""
    if not _scanned:
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


# name -> `Recommender` subclass (the registry never imports the contract: `base` imports it)
MODELS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make a model available by its `name`.

    Checks the declaration, so a model that forgets a part of it fails at import, not in a
    nightly: a name not taken by another class, a dataclass config, and a test profile whose
    parameters the config accepts.
    """
    for attribute in ("name", "config_class"):
        if not hasattr(cls, attribute):
            raise TypeError(f"model {cls.__qualname__} must set `{attribute}`")
    known = MODELS.get(cls.name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        taken = f"{known.__module__}.{known.__qualname__}"
        raise TypeError(f"model name {cls.name!r} is taken by {taken}")
    if not dataclasses.is_dataclass(cls.config_class):
        raise TypeError(f"model {cls.name}: config_class must be a dataclass")
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    profile = cls.test_profile
    unknown = (set(profile.quick) | set(profile.learns) | set(profile.text)) - fields
    if unknown:
        raise TypeError(f"model {cls.name}: test_profile sets unknown parameters {sorted(unknown)}")
    MODELS[cls.name] = cls
    return cls


# written as in Python: kept as the string "False" they would be read as true
PYTHON_LITERALS = {"True": "true", "False": "false", "None": "null"}


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split a model spec such as `ease` or `ease(reg=300, history_half_life=5)`.

    Values are read as JSON where they parse (numbers, true/false, null, quoted strings; Python's
    True/False/None too) and kept as plain strings otherwise.

    Args:
        spec: A registered model name, optionally followed by parameters in parentheses.

    Returns:
        The model name and its parameters.
    """
    spec = spec.strip()
    if "(" not in spec:
        return spec, {}
    name, _, rest = spec.partition("(")
    if not rest.endswith(")"):
        raise InputError(f"model spec {spec!r}: expected name(key=value, ...)")
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in split_top_level(rest[:-1]))):
        key, sep, raw = part.partition("=")
        if not sep:
            raise InputError(f"model spec {spec!r}: {part!r} is not key=value")
        raw = raw.strip()
        try:
            params[key.strip()] = json.loads(PYTHON_LITERALS.get(raw, raw))
        except json.JSONDecodeError:
            params[key.strip()] = raw
    return name.strip(), params


@dataclass(frozen=True)
class ModelSpec:
    """A model by name and parameters: a spec string parsed once (`parse`), or a configured
    model's own (`of`). It travels from the `models` setting to the fit as it is, so no later
    step reads the string again.

    Attributes:
        name: A registered model name.
        params: Its parameters (those not given keep their defaults).
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        """From a spec such as `ease` or `ease(reg=300)` (see `parse_spec`)."""
        return cls(*parse_spec(spec))

    @classmethod
    def of(cls, model: Any) -> ModelSpec:
        """The full config of a configured model (every parameter, defaults included)."""
        return cls(model.name, model.params())

    def create(self, *, saved: bool = False) -> Any:
        """The model, unfitted (see `create`)."""
        return create(self.name, self.params, saved=saved)

    def __str__(self) -> str:
        return format_spec(self.name, self.params)


def format_spec(name: str, params: dict[str, Any]) -> str:
    """The inverse of `parse_spec`: `name(key=value, ...)`, or `name` without parameters."""
    if not params:
        return name
    return f"{name}({', '.join(f'{k}={json.dumps(v)}' for k, v in params.items())})"


@functools.cache
def _adapter(config_class: type) -> TypeAdapter:
    return TypeAdapter(config_class)


def create(name: str, params: dict[str, Any] | None = None, *, saved: bool = False) -> Any:
    """Instantiate a registered model from its name (or spec, see `parse_spec`) and params.

    Args:
        name: A model name, or a spec string (parsed here; `ModelSpec.create` parses nothing).
        params: Parameters, over those of the spec.
        saved: The parameters come from a saved model: ones the model has retired are dropped.
    """
    if "(" in name:
        name, from_spec = parse_spec(name)
        params = {**from_spec, **(params or {})}
    if name not in MODELS:
        discover()
    try:
        cls = MODELS[name]
    except KeyError:
        problems = "".join(f"; {p}" for p in load_problems())
        raise InputError(
            f"unknown model {name!r} (known: {', '.join(sorted(MODELS))}){problems}"
        ) from None
    if saved and params:
        params = {k: v for k, v in params.items() if k not in cls.retired_params}
    try:
        # types first (`reg=abc`, `cold_map_reg=None` instead of null), then the dataclass
        # itself, so the values it keeps are exactly the ones given
        _adapter(cls.config_class).validate_python(params or {})
        config = cls.config_class(**(params or {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']} (got {e['input']!r})"
            for e in exc.errors()
        )
        raise InputError(f"model {name}: bad parameters {params}: {problems}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"model {name}: bad parameters {params}: {exc}") from None
    return cls(config)
