"""Conformance checks every item text encoder configuration must pass.

Each check takes a loaded `ItemTextEncoder` and the `EncoderCapabilities` of its
configuration, and raises AssertionError when the encoder breaks the contract the rest of the
pipeline relies on (the encode stage, the ranker's query blend, the evaluation's diversity):

- `encode` returns (n, dim) float32 rows, unit length, zero rows for empty or whitespace-only
  texts (which are not run through the model and do not change the other rows);
- the same texts give the same vectors again, in any order and at any batch size;
- a query is encoded like an item text (`encode_queries`), and the query encoder a model
  bundle names (`load_query_encoder`) is the one that embedded its items;
- a reduced-precision configuration stays close to its full-precision counterpart.

A check that does not apply to a configuration raises `NotApplicable` with the reason; a test
suite turns it into a counted skip. Approximate configurations (int8 quantizes each batch's
inputs with one scale per batch, so a text's vector depends a little on its batch-mates;
bf16/fp16 autocast rounds every matmul) are compared by cosine similarity where full
precision must agree to float rounding.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recsys_core.encoders.item_text_encoder import ItemTextEncoder

# A handful of short texts of different lengths (so they land in different batches), one
# repeated text and the blank kinds the encoder documents.
CONTRACT_TEXTS = (
    "Title: Star Wars. Categories: Sci-Fi, Adventure.",
    "Title: Toy Story. Categories: Animation. Description: toys come alive when nobody looks.",
    "short",
    "",
    "Title: Heat. Description: " + "a long heist in a city at night " * 6,
    "   ",
    "Title: Star Wars. Categories: Sci-Fi, Adventure.",
    "\n\t",
    "Title: Amélie. Description: Paris, café, ünïcödé.",
)
FLOAT_ATOL = 1e-5  # agreement of unquantized vectors across batchings (float rounding)


class NotApplicable(Exception):
    """The check does not apply to this encoder configuration; the message says why."""


@dataclass(frozen=True)
class EncoderCapabilities:
    """What a configuration promises, so each check knows how strict to be.

    Attributes:
        source: What the configuration was loaded from, as `recsys train` records it in a
            bundle (None = the bundled all-MiniLM-L6-v2).
        approximate: Quantized (int8) or reduced-precision (bf16/fp16 autocast) vectors:
            batching, order, query and reference checks compare by cosine >= `min_cosine`
            instead of element-wise.
        min_cosine: Least cosine similarity where vectors are compared approximately.
        reference: The full-precision configuration this one approximates; None = this is
            full precision (the reference check does not apply).
        query_encoder: `load_query_encoder` can rebuild it from a bundle's metadata, which
            records the source, max length and int8 (through the encoder id). A setting it
            does not record and that changes the id (an explicit pooling that differs from
            the model's config) must make it refuse the bundle instead.
    """

    source: str | None = None
    approximate: bool = False
    min_cosine: float = 0.99
    reference: ItemTextEncoder | None = None
    query_encoder: bool = True


def _blank(text: str) -> bool:
    return not text.strip()


def _present(texts: Sequence[str]) -> np.ndarray:
    return np.array([not _blank(t) for t in texts], dtype=bool)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays of nonzero rows."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def assert_same_vectors(
    got: np.ndarray, expected: np.ndarray, capabilities: EncoderCapabilities, what: str
) -> None:
    """Rows agree to float rounding, or (approximate) by cosine; zero rows must match."""
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    zero = ~expected.any(1)
    assert not got[zero].any(), f"{what}: rows that should be zero are not"
    if not capabilities.approximate:
        np.testing.assert_allclose(got, expected, atol=FLOAT_ATOL, err_msg=what)
        return
    worst = float(_cosines(got[~zero], expected[~zero]).min()) if (~zero).any() else 1.0
    assert worst >= capabilities.min_cosine, f"{what}: worst cosine {worst:.5f}"


def check_shape_and_dtype(encoder: ItemTextEncoder, capabilities: EncoderCapabilities) -> None:
    """(n, dim) float32 vectors and (n,) truncation flags, also for no texts at all."""
    result = encoder.encode(list(CONTRACT_TEXTS))
    assert result.embeddings.shape == (len(CONTRACT_TEXTS), encoder.dim)
    assert result.embeddings.dtype == np.float32
    assert result.truncated.shape == (len(CONTRACT_TEXTS),) and result.truncated.dtype == bool
    assert np.isfinite(result.embeddings).all()
    none = encoder.encode([])
    assert none.embeddings.shape == (0, encoder.dim) and none.embeddings.dtype == np.float32


def check_unit_length(encoder: ItemTextEncoder, capabilities: EncoderCapabilities) -> None:
    """Every vector of a non-blank text has length 1 (cosine = dot product downstream)."""
    vectors = encoder.encode(list(CONTRACT_TEXTS)).embeddings
    norms = np.linalg.norm(vectors[_present(CONTRACT_TEXTS)].astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def check_blank_texts(encoder: ItemTextEncoder, capabilities: EncoderCapabilities) -> None:
    """Empty and whitespace-only texts get zero vectors, are not counted as tokens, and leave
    the other texts' vectors as they would be without them; a batch of only blanks works."""
    texts = list(CONTRACT_TEXTS)
    with_blanks = encoder.encode(texts)
    blank = ~_present(texts)
    assert blank.any(), "the contract texts must include blank ones"
    assert not with_blanks.embeddings[blank].any()
    assert not with_blanks.truncated[blank].any()
    filled = [t for t in texts if not _blank(t)]
    without = encoder.encode(filled)
    assert with_blanks.tokens == without.tokens, "blank texts were run through the model"
    assert_same_vectors(
        with_blanks.embeddings[~blank], without.embeddings, capabilities, "blank texts mixed in"
    )
    only_blanks = encoder.encode(["", " ", "\t\n"])
    assert only_blanks.embeddings.shape == (3, encoder.dim) and not only_blanks.embeddings.any()


def check_deterministic(encoder: ItemTextEncoder, capabilities: EncoderCapabilities) -> None:
    """The same texts in the same call give bit-identical vectors again, and a repeated text
    within one call gets one vector (same length, so same batch shape)."""
    texts = list(CONTRACT_TEXTS)
    first = encoder.encode(texts).embeddings
    np.testing.assert_array_equal(encoder.encode(texts).embeddings, first)
    repeats = [i for i, t in enumerate(texts) if texts.index(t) != i and not _blank(t)]
    assert repeats, "the contract texts must repeat one text"
    for i in repeats:
        assert_same_vectors(
            first[[i]], first[[texts.index(texts[i])]], capabilities, "a repeated text"
        )


def check_order_independent(
    encoder: ItemTextEncoder, capabilities: EncoderCapabilities, *, seed: int = 0
) -> None:
    """Encoding a shuffled batch gives each text the vector it got in the original order."""
    texts = list(CONTRACT_TEXTS)
    original = encoder.encode(texts).embeddings
    order = np.random.default_rng(seed).permutation(len(texts))
    shuffled = encoder.encode([texts[i] for i in order]).embeddings
    assert_same_vectors(shuffled, original[order], capabilities, "shuffled texts")


def check_batch_size_independent(
    encoder: ItemTextEncoder, capabilities: EncoderCapabilities
) -> None:
    """One text per forward pass, two, or all at once: the same vectors."""
    texts = list(CONTRACT_TEXTS)
    together = encoder.encode(texts).embeddings
    for batch_size in (1, 2):
        smaller = copy.copy(encoder)  # shares the loaded model; only batching differs
        smaller.batch_size = batch_size
        assert_same_vectors(
            smaller.encode(texts).embeddings, together, capabilities, f"batch size {batch_size}"
        )


def check_queries_encode_like_items(
    encoder: ItemTextEncoder, capabilities: EncoderCapabilities
) -> None:
    """`encode_queries` gives a query the vector of the same (stripped) item text, and a zero
    row for no query or a blank one (that user's ranking is the model's alone)."""
    from recsys_core.ranking.query import encode_queries

    texts = [t for t in CONTRACT_TEXTS if not _blank(t)]
    queries = [f"  {texts[0]} ", None, "   ", *texts[1:]]
    vectors = encode_queries(encoder, queries).numpy()
    assert vectors.shape == (len(queries), encoder.dim) and vectors.dtype == np.float32
    assert not vectors[[1, 2]].any()
    items = encoder.encode(texts).embeddings
    assert_same_vectors(vectors[[0, *range(3, len(queries))]], items, capabilities, "queries")


def check_query_encoder_is_the_item_encoder(
    encoder: ItemTextEncoder, capabilities: EncoderCapabilities
) -> None:
    """A bundle's metadata (encoder id, source, max length) rebuilds this encoder for queries:
    same id, int8 where the items were int8, same vectors; or, where a setting is not
    recorded, the bundle is refused (never a silently different encoder)."""
    from recsys_core.errors import InputError
    from recsys_core.ranking.query import load_query_encoder

    metadata = {
        "encoder": encoder.encoder_id,
        "encoder_source": capabilities.source,
        "encoder_max_length": encoder.max_length,
    }
    if not capabilities.query_encoder:
        try:
            load_query_encoder(metadata, device=str(encoder.device))
        except InputError as exc:
            assert "embedded the model's items" in str(exc), str(exc)
            return
        raise AssertionError("a bundle of this encoder was rebuilt with other settings")
    query_encoder = load_query_encoder(metadata, device=str(encoder.device))
    assert query_encoder.encoder_id == encoder.encoder_id
    assert (query_encoder.precision == "int8") == (encoder.precision == "int8")
    assert query_encoder.dim == encoder.dim
    texts = [t for t in CONTRACT_TEXTS if not _blank(t)]
    assert_same_vectors(
        query_encoder.encode(texts).embeddings,
        encoder.encode(texts).embeddings,
        capabilities,
        "the rebuilt query encoder",
    )


def check_close_to_full_precision(
    encoder: ItemTextEncoder, capabilities: EncoderCapabilities
) -> None:
    """A reduced-precision configuration's vectors point where full precision's do."""
    if capabilities.reference is None:
        raise NotApplicable("a full-precision configuration is its own reference")
    assert capabilities.reference.dim == encoder.dim
    texts = list(CONTRACT_TEXTS)
    got = encoder.encode(texts).embeddings
    expected = capabilities.reference.encode(texts).embeddings
    present = _present(texts)
    assert not got[~present].any()
    worst = float(_cosines(got[present], expected[present]).min())
    assert worst >= capabilities.min_cosine, f"worst cosine to full precision {worst:.5f}"


CHECKS = {
    "shape_and_dtype": check_shape_and_dtype,
    "unit_length": check_unit_length,
    "blank_texts": check_blank_texts,
    "deterministic": check_deterministic,
    "order_independent": check_order_independent,
    "batch_size_independent": check_batch_size_independent,
    "queries_encode_like_items": check_queries_encode_like_items,
    "query_encoder_is_the_item_encoder": check_query_encoder_is_the_item_encoder,
    "close_to_full_precision": check_close_to_full_precision,
}
