"""Item text: how it is built from catalog fields and how it becomes vectors.

The names below load their module on first use, so importing a light module of this package
(`finetune_config`, `text`) does not load torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "EncodeResult": "item_text_encoder",
    "ItemTextEncoder": "item_text_encoder",
    "default_encoder_path": "item_text_encoder",
    "encoder_identity": "item_text_encoder",
    "ResolvedEncoder": "registry",
    "resolve_encoder": "registry",
    "build_item_text": "text",
    "text_hash": "text",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
