"""Encode: `items` -> `item_embeddings`, only for items whose text or encoder changed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl
import torch

from recsys_core import schemas
from recsys_core.data.vocab import Vocabulary
from recsys_core.encoders.item_text_encoder import ItemTextEncoder, encoder_identity
from recsys_core.settings import Settings
from recsys_core.storage import Lake


@dataclass
class EncodeReport:
    encoder: str
    items_total: int = 0
    encoded: int = 0
    reused: int = 0
    truncated: int = 0
    empty_text: int = 0
    seconds: float = 0.0
    items_per_second: float = 0.0
    version: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def encoder_id(settings: Settings) -> str:
    return encoder_identity(settings.encoder, max_length=settings.encoder_max_length)


def encode_items(
    lake: Lake, settings: Settings, *, run_id: str = "", progress: bool = False
) -> EncodeReport:
    """Embed every item whose (item_id, text_hash) has no vector from this encoder yet."""
    identity = encoder_id(settings)
    items = lake.read("items", ["item_id", "text", "text_hash"])
    stored = (
        lake.scan("item_embeddings")
        .filter(pl.col("encoder") == identity)
        .select("item_id", "text_hash")
        .collect()
        if lake.exists("item_embeddings")
        else pl.DataFrame(schema={"item_id": pl.String, "text_hash": pl.String})
    )
    todo = items.join(stored, on=["item_id", "text_hash"], how="anti").sort("item_id")
    report = EncodeReport(encoder=identity, items_total=items.height)
    report.reused = items.height - todo.height
    if todo.is_empty():
        report.version = lake.version("item_embeddings")
        return report
    encoder = ItemTextEncoder(
        settings.encoder,
        max_length=settings.encoder_max_length,
        batch_size=settings.encoder_batch_size,
        device=settings.device,
    )
    texts = todo["text"].to_list()
    result = encoder.encode(texts, progress=progress)
    rows = todo.select("item_id", "text_hash").with_columns(
        encoder=pl.lit(identity),
        embedding=pl.Series(result.embeddings).cast(pl.List(pl.Float32)),
        truncated=pl.Series(result.truncated),
        encoded_at=pl.lit(datetime.now(UTC)).cast(schemas.UTC_TIME),
    )
    report.version = lake.upsert(
        "item_embeddings",
        rows,
        keys=["item_id", "encoder"],
        metadata={"run_id": run_id, "stage": "encode", "encoder": identity, "rows": rows.height},
    )
    report.encoded = rows.height
    report.truncated = int(result.truncated.sum())
    report.empty_text = int(sum(1 for t in texts if not t.strip()))
    report.seconds = round(result.seconds, 3)
    report.items_per_second = round(result.items_per_second, 1)
    return report


def embedding_matrix(lake: Lake, items: Vocabulary, identity: str) -> torch.Tensor | None:
    """(n_items, D) vectors aligned with `items`; zero rows for items without one.

    Returns None when this encoder has no vectors stored at all.
    """
    if not lake.exists("item_embeddings"):
        return None
    stored = (
        lake.scan("item_embeddings")
        .filter(pl.col("encoder") == identity)
        .select("item_id", "embedding")
        .collect()
    )
    if stored.is_empty():
        return None
    dim = len(stored["embedding"][0])
    index = items.index(stored["item_id"])
    keep = index >= 0
    vectors = stored["embedding"].list.to_array(dim).to_numpy().astype(np.float32, copy=False)
    out = np.zeros((len(items), dim), dtype=np.float32)
    out[index[keep]] = vectors[keep]
    return torch.from_numpy(out)
