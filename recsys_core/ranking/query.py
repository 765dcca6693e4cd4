"""Query-aware ranking: a blend of query relevance and the user's model score.

The query is encoded by the same encoder as the item texts, so relevance is the cosine
similarity of the query vector and each item vector. Model scores and relevance live on
different scales (an EASE score, a popularity count, a cosine), so each is standardized per
user over the candidate items before blending:

    blended = (1 - weight) * z(model score) + weight * z(query relevance)

weight 0 ranks by the model alone, 1 by the query alone; the user's seen items are excluded
by the ranker as always.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from recsys_core.errors import InputError

if TYPE_CHECKING:
    from recsys_core.encoders.item_text_encoder import ItemTextEncoder

DEFAULT_QUERY_WEIGHT = 0.5


@dataclass(frozen=True)
class QueryBlend:
    """What the ranker needs to blend a query into each user's scores.

    Attributes:
        vectors: (U, D) unit query vector per user row of the ranking; a zero row means no
            query for that user, whose ranking is then the model's alone.
        item_embeddings: (I, D) unit item text vectors aligned with the item vocabulary; zero
            rows for items without text (they get the lowest relevance).
        weight: Share of query relevance in the blend, 0..1.
    """

    vectors: torch.Tensor
    item_embeddings: torch.Tensor
    weight: float = DEFAULT_QUERY_WEIGHT

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise InputError(f"query weight must be between 0 and 1, got {self.weight}")
        if self.vectors.shape[1] != self.item_embeddings.shape[1]:
            raise InputError(
                f"query vectors have {self.vectors.shape[1]} dimensions but item embeddings "
                f"have {self.item_embeddings.shape[1]}: they come from different encoders"
            )

    def blend(self, scores: torch.Tensor, offset: int, columns: torch.Tensor | None) -> None:
        """Replace the scores of users with a query by the blend, in place.

        Args:
            scores: (B, C) model scores of users `offset .. offset + B` over the candidates.
            offset: Row of the first user in the ranking.
            columns: (C,) item index of each candidate column; None = every item in order.
        """
        queries = self.vectors[offset : offset + scores.shape[0]].float()  # (B, D)
        rows = (queries.norm(dim=1) > 0).nonzero().squeeze(1)
        if not len(rows):
            return
        items = self.item_embeddings.float()
        if columns is not None:
            items = items.index_select(0, columns)  # (C, D)
        relevance = queries[rows] @ items.T  # (b, C) cosine similarity
        no_text = items.norm(dim=1) == 0
        if no_text.any():
            floor = relevance.masked_fill(no_text, torch.inf).amin(1, keepdim=True)
            relevance = torch.where(no_text, floor, relevance)
        blended = (1.0 - self.weight) * _standardize(scores[rows]) + self.weight * _standardize(
            relevance
        )
        scores[rows] = blended


def _standardize(values: torch.Tensor) -> torch.Tensor:
    """Per-row z-scores; a constant row becomes zeros."""
    mean = values.mean(1, keepdim=True)
    std = values.std(1, keepdim=True, correction=0)
    return (values - mean) / torch.where(std > 0, std, 1.0)


def encode_queries(encoder: ItemTextEncoder, queries: Sequence[str | None]) -> torch.Tensor:
    """(U, D) unit vectors of `queries`; None or blank queries give zero rows (no query).

    Args:
        encoder: The encoder that produced the item embeddings.
        queries: One query per user row, or None.
    """
    texts = [(q or "").strip() for q in queries]
    vectors = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    present = [i for i, text in enumerate(texts) if text]
    if present:
        vectors[present] = encoder.encode([texts[i] for i in present]).embeddings
    return torch.from_numpy(vectors)


def load_query_encoder(metadata: dict, *, device: str = "auto") -> ItemTextEncoder:
    """The encoder that embedded a model bundle's items, from the bundle's metadata.

    Args:
        metadata: Bundle metadata with `encoder` (identity), `encoder_source` (Hugging Face
            id, local folder, or None for the bundled default) and `encoder_max_length`.
        device: auto, cpu, cuda or mps.

    Raises:
        InputError: The metadata names no encoder, or the encoder found under that name is
            not the one that embedded the items (its weights changed).
    """
    from recsys_core.encoders.item_text_encoder import ItemTextEncoder

    if "encoder" not in metadata:
        raise InputError(
            "this model carries no item embeddings, so it cannot rank by a query "
            "(run `recsys encode`, then `recsys train`)"
        )
    int8 = str(metadata["encoder"]).endswith(":int8")  # items embedded by the int8 copy
    encoder = ItemTextEncoder(
        metadata.get("encoder_source"),
        max_length=int(metadata.get("encoder_max_length", 256)),
        device="cpu" if int8 else device,
        precision="int8" if int8 else "auto",
    )
    if encoder.encoder_id != metadata["encoder"]:
        raise InputError(
            f"the query encoder {encoder.encoder_id} is not {metadata['encoder']}, which "
            "embedded the model's items (train again after changing the encoder)"
        )
    return encoder
