from __future__ import annotations

import json
import shutil

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


def test_a_hub_id_in_the_local_cache_loads_offline(tiny_encoder_dir, tmp_path, monkeypatch):
    """How `bert-base-uncased` sits in a Hugging Face cache: a snapshot, no pooling config."""
    import huggingface_hub.constants as hub

    commit = "0" * 40
    repo = tmp_path / "models--bert-base-uncased"
    shutil.copytree(tiny_encoder_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    encoder = ItemTextEncoder("bert-base-uncased", max_length=32, device="cpu")
    assert encoder.pooling == "mean"
    assert encoder.encoder_id.startswith("bert-base-uncased:mean:32:")
    assert encoder_identity("bert-base-uncased", max_length=32) == encoder.encoder_id
    local = ItemTextEncoder(tiny_encoder_dir, max_length=32, device="cpu")
    np.testing.assert_allclose(encoder.encode(TEXTS).embeddings, local.encode(TEXTS).embeddings)


@pytest.mark.slow
def test_encoders_load_from_several_threads_in_a_fresh_process(tiny_encoder_dir):
    """Encode shards on a thread pool load models at once; transformers' lazy imports are
    not thread-safe on a process's first use, so this needs a new interpreter."""
    import subprocess
    import sys

    script = (
        "import sys, threading\n"
        "from recsys_core.encoders import ItemTextEncoder\n"
        "errors = []\n"
        "def build():\n"
        "    try:\n"
        "        ItemTextEncoder(sys.argv[1], device='cpu')\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=build) for _ in range(4)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "print(errors)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tiny_encoder_dir)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


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
    gpu_encoder = ItemTextEncoder(tiny_encoder_dir, device="cuda")
    assert gpu_encoder.batch_size > 64 and gpu_encoder.max_batch_tokens > 16_384
    if torch.cuda.is_bf16_supported():
        assert gpu_encoder.autocast_dtype == torch.bfloat16
    gpu = gpu_encoder.encode(TEXTS * 50).embeddings[: len(TEXTS)]
    assert gpu.dtype == np.float32
    assert (gpu[[2, 3]] == 0).all()
    assert np.min(np.sum(cpu[[0, 1, 4]] * gpu[[0, 1, 4]], axis=1)) > 0.99


def naive_embeddings(encoder: ItemTextEncoder, texts: list[str], batch_size: int) -> np.ndarray:
    """The textbook loop: texts in given order, every batch padded to max_length."""
    out = []
    for start in range(0, len(texts), batch_size):
        batch = encoder.tokenizer(
            texts[start : start + batch_size], padding="max_length", truncation=True,
            max_length=encoder.max_length, return_tensors="pt",
        )  # fmt: skip
        out.append(encoder.forward(batch["input_ids"], batch["attention_mask"]).numpy())
    return np.concatenate(out)


def test_sorted_dynamic_padding_gives_the_vectors_of_fixed_padding(tiny):
    texts = [t for t in TEXTS if t.strip()] + ["medium length text " * 4, "x " * 50]
    ours = tiny.encode(texts)
    np.testing.assert_allclose(ours.embeddings, naive_embeddings(tiny, texts, 2), atol=1e-5)
    assert 0 < ours.padding_efficiency <= 1 and ours.tokens < ours.padded_tokens


def test_token_budget_bounds_every_batch(tiny_encoder_dir):
    encoder = ItemTextEncoder(
        tiny_encoder_dir, max_length=32, batch_size=16, max_batch_tokens=64, device="cpu"
    )
    texts = ["word " * n for n in (1, 2, 3, 5, 8, 13, 21, 34, 2, 1, 1, 4)]
    ids, _ = encoder.tokenize(texts)
    batches = encoder.batches(ids)
    assert sorted(int(i) for b in batches for i in b) == list(range(len(texts)))
    for batch in batches:
        assert len(batch) * max(len(ids[i]) for i in batch) <= 64
    # short texts share a batch up to the cap, long ones travel in small batches
    sizes = {max(len(ids[i]) for i in b): len(b) for b in batches}
    assert sizes[min(sizes)] > sizes[max(sizes)]


def test_batch_defaults_follow_the_device_unless_given(tiny_encoder_dir):
    from recsys_core.encoders.item_text_encoder import DEVICE_BATCH_DEFAULTS

    default = ItemTextEncoder(tiny_encoder_dir, device="cpu")
    assert (default.batch_size, default.max_batch_tokens) == DEVICE_BATCH_DEFAULTS["cpu"]
    assert default.autocast_dtype is None  # fp32 on CPU
    given = ItemTextEncoder(tiny_encoder_dir, device="cpu", batch_size=8, max_batch_tokens=999)
    assert (given.batch_size, given.max_batch_tokens) == (8, 999)
    assert DEVICE_BATCH_DEFAULTS["cuda"][0] > DEVICE_BATCH_DEFAULTS["cpu"][0]


def test_progress_bar_reports_items_per_second(tiny, capsys):
    tiny.encode(TEXTS * 4, progress=True)
    assert "items/s" in capsys.readouterr().err


def test_pooling_comes_from_the_sentence_transformers_config(tiny_encoder_dir, tmp_path):
    cls_dir = tmp_path / "cls-model"
    shutil.copytree(tiny_encoder_dir, cls_dir)
    (cls_dir / "1_Pooling").mkdir()
    (cls_dir / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    encoder = ItemTextEncoder(cls_dir, max_length=32, device="cpu")
    assert encoder.pooling == "cls" and ":cls:32:" in encoder.encoder_id
    ids, _ = encoder.tokenize(["Title: Heat."])
    input_ids, mask = encoder.pad(ids)
    with torch.inference_mode():
        hidden = encoder.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    expected = torch.nn.functional.normalize(hidden[:, 0], dim=-1).numpy()
    np.testing.assert_allclose(encoder.encode(["Title: Heat."]).embeddings, expected, atol=1e-6)


def test_saved_folder_loads_with_the_same_vectors_and_a_new_id(tiny, tmp_path):
    saved = tiny.save(tmp_path / "copy", metadata={"note": "fine-tuned elsewhere"})
    assert (saved / "model.safetensors").is_file()
    assert (saved / "tokenizer.json").is_file() or (saved / "vocab.txt").is_file()
    again = ItemTextEncoder(saved, max_length=32, device="cpu")
    assert again.pooling == tiny.pooling
    np.testing.assert_allclose(again.encode(TEXTS).embeddings, tiny.encode(TEXTS).embeddings,
                               atol=1e-6)  # fmt: skip
    assert again.encoder_id != tiny.encoder_id


def test_unknown_precision_and_pooling_are_input_errors(tiny_encoder_dir):
    with pytest.raises(InputError, match="precision 'fp8'"):
        ItemTextEncoder(tiny_encoder_dir, device="cpu", precision="fp8")
    with pytest.raises(InputError, match="pooling 'max'"):
        ItemTextEncoder(tiny_encoder_dir, device="cpu", pooling="max")


def test_int8_keeps_close_vectors_under_an_id_of_its_own(tiny, tiny_encoder_dir):
    int8 = ItemTextEncoder(tiny_encoder_dir, max_length=32, batch_size=2, precision="int8")
    assert int8.encoder_id == f"{tiny.encoder_id}:int8"
    for other in ("auto", "fp32", "bf16", "fp16"):  # the ids vectors are stored under today
        assert encoder_identity(tiny_encoder_dir, max_length=32, precision=other) == tiny.encoder_id
    assert encoder_identity(tiny_encoder_dir, max_length=32, precision="int8") == int8.encoder_id
    exact, close = tiny.encode(TEXTS).embeddings, int8.encode(TEXTS).embeddings
    cosine = (exact * close).sum(1)
    assert cosine[[0, 1, 4]].min() > 0.98 and (close[[2, 3]] == 0).all()
    assert not np.array_equal(exact, close)  # it really ran the quantized copy
    np.testing.assert_allclose(np.linalg.norm(close[[0, 1, 4]], axis=1), 1.0, rtol=1e-5)


def test_int8_quantizes_a_copy_and_leaves_the_model_trainable(tiny_encoder_dir):
    from recsys_core.encoders.item_text_encoder import Int8Linear

    int8 = ItemTextEncoder(tiny_encoder_dir, max_length=32, precision="int8")
    quantized = [m for m in int8.inference_model.modules() if isinstance(m, Int8Linear)]
    kept = [
        m for m in int8.inference_model.modules()
        if isinstance(m, torch.nn.Linear) and m.in_features > m.out_features
    ]  # fmt: skip
    assert quantized and kept  # the narrowing feed-forward outputs stay float32
    assert not any(isinstance(m, Int8Linear) for m in int8.model.modules())
    ids, mask = int8.pad(int8.tokenize(["Title: Alien. Categories: Horror."])[0])
    int8.embed(ids, mask).sum().backward()  # what fine-tuning does, on float32 weights
    assert int8.model.embeddings.word_embeddings.weight.grad is not None


def test_int8_on_a_gpu_is_an_input_error(tiny_encoder_dir, monkeypatch):
    import recsys_core.encoders.item_text_encoder as module

    monkeypatch.setattr(module, "resolve_device", lambda _: torch.device("cuda"))
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: self)
    with pytest.raises(InputError, match="int8 runs on the CPU only"):
        ItemTextEncoder(tiny_encoder_dir, device="cuda", precision="int8")


def test_a_stop_request_ends_encoding_between_batches(tiny_encoder_dir, monkeypatch):
    from recsys_core import cancel

    encoder = ItemTextEncoder(tiny_encoder_dir, max_length=32, batch_size=1, device="cpu")
    real, calls = encoder.forward, []

    def forward(*args):
        calls.append(1)
        if len(calls) == 2:
            cancel.request_stop("test stop")
        return real(*args)

    monkeypatch.setattr(encoder, "forward", forward)
    try:
        got = []
        with pytest.raises(cancel.Stopped, match="test stop"):
            for batch in encoder.encode_batches([f"text number {i}" for i in range(6)]):
                got.append(batch)
    finally:
        cancel.clear_stop()
    assert len(calls) == 2 and len(got) == 2  # the batch under way finished, no new one began
