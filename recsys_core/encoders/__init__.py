"""Item text: how it is built from catalog fields and how it becomes vectors."""

from recsys_core.encoders.item_text_encoder import (
    EncodeResult,
    ItemTextEncoder,
    default_encoder_path,
    encoder_identity,
)
from recsys_core.encoders.registry import ResolvedEncoder, resolve_encoder
from recsys_core.encoders.text import build_item_text, text_hash

__all__ = [
    "EncodeResult",
    "ItemTextEncoder",
    "ResolvedEncoder",
    "build_item_text",
    "default_encoder_path",
    "encoder_identity",
    "resolve_encoder",
    "text_hash",
]
