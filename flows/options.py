"""Which options each command and flow offers, and how an option reads in a form and `--help`.

Every option is declared once (type, bounds, default, description) in
`recsys_core.settings`; a command of the `recsys` CLI and the Prefect form of its flow offer
the option groups of the stages they run (`OFFERED`), so an option added to a group appears
in both with nothing else to write. Kept light (pydantic only) so the CLI starts fast.
"""

from __future__ import annotations

from typing import Any, get_args, get_origin

import annotated_types
from pydantic.fields import FieldInfo

from recsys_core.settings import GROUPS

# the option groups a command (and the flow of the same name) offers besides the data
# directory: the groups its stages read, but the service groups set by the environment
OFFERED: dict[str, tuple[str, ...]] = {
    "nightly": ("compute", "ingest", "embedding", "encode", "train", "recommend"),
    "ingest": ("ingest",),
    "encode": ("compute", "embedding", "encode"),
    "train": ("compute", "embedding", "train"),
    "evaluate": ("compute", "embedding", "train"),
    "recommend": ("compute", "recommend"),
    "finetune-encoder": ("compute", "embedding"),
    "forget-user": (),
    "recs": ("query",),
}


def offered_options(command: str) -> dict[str, FieldInfo]:
    """The options `command` offers, by flat name, in the order their groups declare them."""
    return {
        name: info
        for group in OFFERED[command]
        for name, info in GROUPS[group].model_fields.items()
    }


def describe(name: str, info: FieldInfo) -> str:
    """An option's description and default, as a form or `--help` shows it."""
    default = info.get_default(call_default_factory=True)
    if isinstance(default, bool) or default in ("", [], ()):  # a flag, or nothing
        default = None
    elif isinstance(default, tuple):
        default = ", ".join(default)
    text = (info.description or name.replace("_", " ")).rstrip(".")
    return f"{text} (default {default})." if default is not None else f"{text}."


def bounds(info: FieldInfo) -> dict[str, float]:
    """An option's inclusive bounds as `min`/`max` (what a CLI option checks); exclusive
    bounds (`gt`, `lt`) are left to the form's validation."""
    found: dict[str, float] = {}
    for rule in info.metadata:
        if isinstance(rule, annotated_types.Ge):
            found["min"] = rule.ge
        elif isinstance(rule, annotated_types.Le):
            found["max"] = rule.le
    return found


def without_none(kind: Any) -> Any:
    """`int` for `int | None`; other types as they are."""
    args = get_args(kind)
    if type(None) in args and get_origin(kind) is not None:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return kind
