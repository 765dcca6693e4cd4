"""How a setting reads in a Prefect form and in `--help`, from its declaration in `Settings`.

Each option is declared once (type, bounds, default, description) in
`recsys_core.settings.Settings`; the flows' `RunOptions` form and the CLI's setting options
take their text and bounds from here. Kept light (no pipeline imports) so the CLI starts fast.
"""

from __future__ import annotations

import annotated_types

from recsys_core.settings import Settings


def setting_help(name: str) -> str:
    """Setting `name`'s description and default, as a form or `--help` shows it."""
    info = Settings.model_fields[name]
    default = info.default
    if isinstance(default, tuple):
        default = ", ".join(default)
    text = (info.description or name.replace("_", " ")).rstrip(".")
    return f"{text} (default {default})." if default is not None else f"{text}."


def setting_bounds(name: str) -> dict[str, float]:
    """Setting `name`'s inclusive bounds, as `min`/`max` (what a CLI option checks)."""
    found: dict[str, float] = {}
    for rule in Settings.model_fields[name].metadata:
        if isinstance(rule, annotated_types.Ge):
            found["min"] = rule.ge
        elif isinstance(rule, annotated_types.Le):
            found["max"] = rule.le
    return found
