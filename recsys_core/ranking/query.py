"""Query-aware ranking: a blend of query relevance and the user's model score.

The query is encoded by the same encoder as the item texts, so relevance is the cosine
similarity of the query vector and each item vector. Model scores and relevance live on
different scales (an EASE score, a popularity count, a cosine), so each is put on the scale
of its own head per user before blending: the user's best candidate by that signal scores 1
and the `HEAD`-th best 0,

    blended = (1 - weight) * head(model score) + weight * head(query relevance)

weight 0 ranks by the model alone, 1 by the query alone; the user's seen items are excluded
by the ranker as always.

Why the head and not z-scores over the catalog: a ranking is decided among the best
candidates, and the two signals are shaped differently there. A model's scores are
heavy-headed (a few items far above the rest: EASE, the blend), a query's relevance is
flatter (every item of the asked-for kind scores about the same). Standardized over the
whole catalog, the model's few top items sit 10 standard deviations up and the query's
matches 3 to 4, so at weight 0.5 the model's favourites outranked every match of the query,
and the blend ranked worse than the query alone (`benchmarks/text_catalog.py`, Amazon Office:
NDCG@10 0.113 against 0.183 with the query alone, 0.214 on the head's scale). Scaled by their
heads, both signals span the same range where it matters: the query picks the kind of
item, the model orders the matches.
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
HEAD = 100  # candidates whose spread sets each signal's scale (all of them in smaller catalogs)


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
        blended = (1.0 - self.weight) * _head_scaled(scores[rows]) + self.weight * _head_scaled(
            relevance
        )
        scores[rows] = blended


def _head_scaled(values: torch.Tensor, head: int = HEAD) -> torch.Tensor:
    """Per-row scores shifted and scaled so the row's best value is 1 and its `head`-th 0.

    The same order as `values` in each row; a row whose head is flat is only shifted, and a
    score that is not finite (an item a model rules out) becomes -inf, below everything.

    Args:
        values: (B, C) scores of the candidates.
        head: Rank that maps to 0 (clipped to the number of candidates).
    """
    finite = torch.isfinite(values)
    if not finite.all():  # the scale comes from the finite scores
        floor = values.masked_fill(~finite, torch.inf).amin(1, keepdim=True)
        values = torch.where(finite, values, floor)
    top = values.topk(min(head, values.shape[1]), dim=1).values  # (B, head)
    best, last = top[:, :1], top[:, -1:]
    spread = best - last
    scaled = (values - last) / torch.where(spread > 0, spread, 1.0)
    return scaled.masked_fill(~finite, -torch.inf)


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
