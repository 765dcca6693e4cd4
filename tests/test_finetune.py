"""Domain adaptation: co-occurrence pairs, the in-batch loss, training, MLflow registration."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recsys_core.context import RunContext
from recsys_core.data.interactions import Interactions
from recsys_core.data.sources import SourceSpec
from recsys_core.data.splits import cold_items
from recsys_core.encoders import ItemTextEncoder
from recsys_core.encoders.finetune import (
    FinetuneConfig,
    cooccurrence_pairs,
    finetune,
    in_batch_loss,
)
from recsys_core.encoders.registry import resolve_encoder
from recsys_core.errors import InputError
from recsys_core.pipeline import encode_items, ingest
from recsys_core.pipeline.finetune import finetune_encoder
from recsys_core.testing.recommenders import events_frame

TINY = FinetuneConfig(
    pairs=64, validation_pairs=16, batch_size=8, learning_rate=1e-3, max_length=32,
    warmup_fraction=0.0, freeze_embeddings=False,
)  # fmt: skip


def history_events(histories: dict[str, list[int]]) -> Interactions:
    rows = [
        (user, f"i{item:02d}", 1_000 + 60 * position)
        for user, items in histories.items()
        for position, item in enumerate(items)
    ]
    events = events_frame(rows)
    return Interactions.from_events(events, pl.Series([f"i{i:02d}" for i in range(12)]))


def test_pairs_are_items_within_the_window_of_one_history():
    data = history_events({"a": [0, 1, 2, 3, 4], "b": [5, 6, 7, 8, 9, 10, 11]})
    config = FinetuneConfig(window=2, pairs=2, validation_pairs=0, batch_size=2)
    pairs = cooccurrence_pairs(data, config)
    # a: 4 + 3 pairs, b: 6 + 5 pairs, all distinct; no pair crosses users
    assert pairs.distinct == 18
    every = cooccurrence_pairs(data, FinetuneConfig(window=2, pairs=18, validation_pairs=0,
                                                    batch_size=2))  # fmt: skip
    index = {data.items.ids[i]: i for i in range(len(data.items))}
    position = {index[f"i{item:02d}"]: (user, k) for user, items in
                {"a": [0, 1, 2, 3, 4], "b": [5, 6, 7, 8, 9, 10, 11]}.items()
                for k, item in enumerate(items)}  # fmt: skip
    for x, y in every.train:
        (ux, kx), (uy, ky) = position[int(x)], position[int(y)]
        assert ux == uy and 1 <= abs(kx - ky) <= 2


def test_pairs_never_touch_held_out_items(planted):
    data, _ = planted
    split = cold_items(data, 0.25, seed=1)
    held_out = set(np.flatnonzero(split.candidates).tolist())
    pairs = cooccurrence_pairs(split.train, FinetuneConfig(pairs=40, validation_pairs=8,
                                                           batch_size=4))  # fmt: skip
    used = set(pairs.train.ravel().tolist()) | set(pairs.validation.ravel().tolist())
    assert used and not used & held_out
    trained = set(map(tuple, np.sort(pairs.train, 1).tolist()))
    assert not trained & set(map(tuple, np.sort(pairs.validation, 1).tolist()))


def test_pair_counts_follow_the_config(planted):
    data, _ = planted
    pairs = cooccurrence_pairs(data, FinetuneConfig(pairs=12, validation_pairs=200, batch_size=4))
    assert len(pairs.train) == 12 and len(pairs.validation) == min(212, pairs.distinct) // 5


def test_items_without_text_are_left_out_of_pairs(planted):
    data, _ = planted
    has_text = np.ones(data.n_items, dtype=bool)
    has_text[:5] = False
    pairs = cooccurrence_pairs(data, FinetuneConfig(pairs=20, validation_pairs=0, batch_size=4),
                               has_text)  # fmt: skip
    assert pairs.train.min() >= 5


def test_too_few_pairs_is_a_clear_error():
    data = history_events({"a": [0, 1]})
    with pytest.raises(InputError, match="only 1 distinct co-occurring item pairs"):
        cooccurrence_pairs(data, FinetuneConfig(pairs=8, batch_size=4))
    two = history_events({"a": [0, 1, 2]})  # 3 distinct pairs: enough for one batch of 2
    assert len(cooccurrence_pairs(two, FinetuneConfig(pairs=8, batch_size=2)).train) == 3


def test_bad_config_values_are_named():
    with pytest.raises(InputError, match=r"invalid batch_size=1, learning_rate=0$"):
        FinetuneConfig(batch_size=1, learning_rate=0)


def test_in_batch_loss_is_low_for_matching_pairs_and_masks_repeats():
    eye = torch.eye(4)
    items_a, items_b = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])
    loss, hits = in_batch_loss(eye, eye, items_a, items_b, scale=20.0)
    assert hits.all() and float(loss) < 1e-6
    shuffled = eye[[1, 0, 3, 2]]
    worse, hits = in_batch_loss(eye, shuffled, items_a, items_b, scale=20.0)
    assert float(worse) > 10 and not hits.any()
    # row 0 and row 1 share their partner item 4: the copy in column 1 is not a negative
    repeated = torch.tensor([4, 4, 6, 7])
    positives = torch.nn.functional.normalize(torch.tensor(
        [[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]), dim=1)  # fmt: skip
    anchors = torch.nn.functional.normalize(torch.tensor(
        [[1.0, 0, 0, 0], [1.0, 0.1, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]), dim=1)  # fmt: skip
    masked, hits = in_batch_loss(anchors, positives, items_a, repeated, scale=20.0)
    assert hits.all()
    logits = 20.0 * anchors @ positives.T
    unmasked = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert float(masked) < float(unmasked)


def planted_texts(data: Interactions) -> list[str]:
    """Items of a planted group share topic words, as a catalog's genre would."""
    topics = ["galaxy starship alien orbit", "love wedding heart kiss",
              "recipe kitchen chef bake", "goal team coach stadium"]  # fmt: skip
    return [f"Title: {topics[int(i[1:]) // 5]} number {i}." for i in data.items.ids.to_list()]


def test_finetuning_lowers_the_validation_loss_and_is_deterministic(planted, tiny_encoder_dir):
    data, _ = planted
    texts = planted_texts(data)
    pairs = cooccurrence_pairs(data, TINY)
    runs = []
    for _ in range(2):
        encoder = ItemTextEncoder(tiny_encoder_dir, max_length=32, device="cpu")
        epochs, before = finetune(encoder, texts, pairs, TINY)
        runs.append((epochs, encoder.encode(texts).embeddings))
    epochs, after = runs[0]
    assert epochs[-1]["val_loss"] < before["val_loss"]
    assert epochs[-1]["steps"] == len(pairs.train) // TINY.batch_size
    np.testing.assert_allclose(after, runs[1][1], atol=1e-6)  # same seed, same model
    assert all(p.requires_grad for p in encoder.model.parameters())


def test_max_steps_stops_early_and_frozen_embeddings_stay_put(planted, tiny_encoder_dir):
    data, _ = planted
    config = replace(TINY, max_steps=3, freeze_embeddings=True)
    encoder = ItemTextEncoder(tiny_encoder_dir, max_length=32, device="cpu")
    table = encoder.model.get_input_embeddings().weight.detach().clone()
    layer = next(encoder.model.encoder.parameters()).detach().clone()
    epochs, _ = finetune(encoder, planted_texts(data), cooccurrence_pairs(data, config), config)
    assert epochs[-1]["steps"] == 3
    assert torch.equal(encoder.model.get_input_embeddings().weight, table)
    assert not torch.equal(next(encoder.model.encoder.parameters()), layer)


@pytest.fixture
def small_lake(tmp_path, small_source, tiny_encoder_dir):
    context = RunContext.of(tmp_path / "lake", encoder=str(tiny_encoder_dir), encoder_max_length=64)
    events, items = small_source
    ingest(context, SourceSpec(events=(str(events),), items=str(items)))
    return context


@pytest.mark.slow
def test_finetune_registers_an_encoder_version_that_encode_uses(small_lake):
    from mlflow import MlflowClient

    context = small_lake
    lake = context.lake
    base = encode_items(context)
    report = finetune_encoder(context, TINY, split="cold_items", evaluate_content=True)
    assert report.reference == "models:/recsys-encoder/1"
    assert report.encoder.startswith("recsys-encoder/1:mean:64:")
    assert report.encoder != base.encoder
    assert set(report.evaluation) == {"base", "finetuned"}
    assert 0 <= report.evaluation["finetuned"]["recall@20"] <= 1

    client = MlflowClient(tracking_uri=lake.tracking_uri)
    run = client.get_run(report.run_id)
    assert run.data.params["split"] == "cold_items"
    assert "val_loss" in run.data.metrics and "finetuned_recall_at_20" in run.data.metrics
    assert len(client.get_metric_history(report.run_id, "train_loss")) >= 1
    version = client.get_model_version("recsys-encoder", "1")
    assert version.tags["encoder_id"] == report.encoder
    folder = Path(resolve_encoder(report.reference, lake.root).source)
    assert folder == Path(report.folder) and (folder / "model.safetensors").is_file()
    provenance = json.loads((folder / "recsys_encoder.json").read_text())
    assert provenance["mlflow_run_id"] == report.run_id

    tuned = context.with_settings(encoder=report.reference)
    first = encode_items(tuned, shards=2)
    assert first.encoded == 40 and first.encoder == report.encoder
    assert encode_items(tuned).encoded == 0
    # both encoders' vectors are kept side by side
    assert lake.read("item_embeddings")["encoder"].n_unique() == 2


@pytest.mark.slow
def test_pairs_come_from_the_training_part_of_the_split(small_lake, monkeypatch):
    from recsys_core.pipeline import finetune as stage

    context = small_lake
    seen = {}
    real = stage.cooccurrence_pairs

    def spy(interactions, config, has_text=None):
        seen["events"] = len(interactions)
        return real(interactions, config, has_text)

    monkeypatch.setattr(stage, "cooccurrence_pairs", spy)
    report = finetune_encoder(context, replace(TINY, max_steps=1))
    total = context.lake.read("events").height
    assert seen["events"] == report.train_events < total  # the temporal holdout is left out


def test_unknown_split_and_registry_reference_are_input_errors(small_lake):
    context = small_lake
    with pytest.raises(InputError, match="unknown split 'random'"):
        finetune_encoder(context, TINY, split="random")
    with pytest.raises(InputError, match="needs a split with held-out events"):
        finetune_encoder(context, TINY, split="all", evaluate_content=True)
    with pytest.raises(InputError, match="no MLflow store"):
        resolve_encoder("models:/recsys-encoder/1", context.lake.root)
