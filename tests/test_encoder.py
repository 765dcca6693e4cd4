from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_core.encoders import ItemTextEncoder, build_item_text
from recsys_core.encoders.item_text_encoder import encoder_identity
from recsys_core.errors import InputError

TEXTS = [
    "Title: Star Wars. Categories: Sci-Fi.",
    "a much longer text " * 20,
    "",
    "   ",
    "short",
]


@pytest.fixture(scope="module")
def tiny(tiny_encoder_dir):
    return ItemTextEncoder(tiny_encoder_dir, max_length=32, batch_size=2, device="cpu")


def test_vectors_are_unit_length_and_empty_texts_are_zero(tiny):
    result = tiny.encode(TEXTS)
    norms = np.linalg.norm(result.embeddings, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 4]], 1.0, rtol=1e-5)
    assert (result.embeddings[[2, 3]] == 0).all()
    assert result.embeddings.dtype == np.float32 and result.embeddings.shape == (5, tiny.dim)


def test_truncation_is_counted(tiny):
    result = tiny.encode(TEXTS)
    assert result.truncated.tolist() == [False, True, False, False, False]
    ids, _ = tiny.tokenize([TEXTS[1]])
    assert len(ids[0]) == 32 and ids[0][-1] == tiny.tokenizer.sep_token_id


def test_encoding_is_deterministic_and_independent_of_batching(tiny, tiny_encoder_dir):
    first = tiny.encode(TEXTS).embeddings
    np.testing.assert_array_equal(first, tiny.encode(TEXTS).embeddings)
    one_by_one = ItemTextEncoder(tiny_encoder_dir, max_length=32, batch_size=1, device="cpu")
    np.testing.assert_allclose(one_by_one.encode(TEXTS).embeddings, first, atol=1e-5)


def test_batches_are_sorted_by_length(tiny):
    ids, _ = tiny.tokenize(TEXTS)
    lengths = [max(len(ids[i]) for i in batch) for batch in tiny.batches(ids)]
    assert lengths == sorted(lengths, reverse=True)


def test_encoder_id_changes_with_the_model_and_length(tiny, tiny_encoder_dir):
    assert tiny.encoder_id == encoder_identity(tiny_encoder_dir, max_length=32)
    assert encoder_identity(tiny_encoder_dir, max_length=64) != tiny.encoder_id
    assert encoder_identity(None) != tiny.encoder_id


def test_unknown_model_is_an_input_error():
    with pytest.raises(InputError, match="neither a local folder nor in the Hugging Face cache"):
        ItemTextEncoder("no-such-org/no-such-model")


def test_item_text_is_labeled_and_skips_empty_fields():
    import polars as pl

    items = pl.DataFrame(
        {
            "title": ["Heat", None],
            "description": [None, "  "],
            "categories": [["Action", "Crime"], []],
            "attributes": [[{"name": "director", "value": "Mann"}], []],
        }
    )
    out = build_item_text(items)
    assert out["text"].to_list() == [
        "Title: Heat. Categories: Action, Crime. director: Mann.",
        "",
    ]
    assert out["text_hash"][0] != out["text_hash"][1]


@pytest.mark.slow
def test_bundled_model_puts_related_titles_together():
    encoder = ItemTextEncoder(device="cpu")
    vectors = encoder.encode(
        [
            "Title: Star Wars (1977). Categories: Action, Adventure, Sci-Fi.",
            "Title: Return of the Jedi (1983). Categories: Action, Adventure, Sci-Fi.",
            "Title: Sleepless in Seattle (1993). Categories: Comedy, Romance.",
        ]
    ).embeddings
    assert encoder.dim == 384 and encoder.pooling == "mean"
    jedi, romance = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert jedi > romance + 0.2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_matches_cpu(tiny_encoder_dir):
    cpu = ItemTextEncoder(tiny_encoder_dir, device="cpu").encode(TEXTS).embeddings
    gpu = ItemTextEncoder(tiny_encoder_dir, device="cuda").encode(TEXTS).embeddings
    assert np.min(np.sum(cpu[[0, 1, 4]] * gpu[[0, 1, 4]], axis=1)) > 0.99
