"""Item text: how it is built from catalog fields and how it becomes vectors."""

from recsys_core.encoders.item_text_encoder import ItemTextEncoder, default_encoder_path
from recsys_core.encoders.text import build_item_text, text_hash

__all__ = ["ItemTextEncoder", "build_item_text", "default_encoder_path", "text_hash"]
