"""Shared fixtures: tiny planted-structure data, a tiny random BERT, one nightly run."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Before Prefect or MLflow are imported: keep their state inside a throwaway folder.
_STATE = Path(tempfile.mkdtemp(prefix="recsys-tests-"))
os.environ["PREFECT_HOME"] = str(_STATE / "prefect")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.pop("PREFECT_API_URL", None)
for _name in list(os.environ):
    if _name.startswith("RECSYS_"):
        os.environ.pop(_name)

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import recsys_core  # noqa: E402, F401
from recsys_core.data.interactions import Interactions  # noqa: E402
from recsys_core.data.synth import SynthConfig, write_synthetic  # noqa: E402
from recsys_core.encoders.item_text_encoder import default_encoder_path  # noqa: E402

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_STATE, ignore_errors=True)


@pytest.fixture(scope="session")
def harness():
    """One temporary Prefect server and database for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with the real tokenizer: fast, no weights needed."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        source = default_encoder_path() / name
        if source.exists():
            shutil.copy(source, folder / name)
    return folder


@pytest.fixture(scope="session")
def small_source(tmp_path_factory) -> tuple[Path, Path]:
    """Generic-format CSVs: 60 users, 40 items in 4 taste clusters, 1,500 events."""
    config = SynthConfig(users=60, items=40, events=1500, clusters=4, max_words=30, seed=3)
    return write_synthetic(config, tmp_path_factory.mktemp("small-source"))


def planted_interactions(n_groups: int = 4, per_group: int = 5, users_per_group: int = 6):
    """Checkerboard: users of group g saw every item of group g except one (item g*per_group).

    Returns the interactions and, per user, the planted item its top recommendation must be.
    """
    rows, expected = [], {}
    t = 1_000_000
    for g in range(n_groups):
        items = [g * per_group + j for j in range(per_group)]
        for u in range(users_per_group):
            user = f"u{g}-{u}"
            expected[user] = f"i{items[0]:03d}"
            for item in items[1:]:
                t += 60
                rows.append((user, f"i{item:03d}", t))
    # the held-out item of each group is seen by one extra user, so it has some signal
    for g in range(n_groups):
        for item in range(g * per_group, (g + 1) * per_group):
            t += 60
            rows.append((f"w{g}", f"i{item:03d}", t))
    events = pl.DataFrame(
        rows, schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64},
        orient="row",
    ).with_columns(
        pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC"), value=pl.lit(1.0)
    )  # fmt: skip
    catalog = pl.Series([f"i{i:03d}" for i in range(n_groups * per_group)])
    return Interactions.from_events(events, catalog), expected


@pytest.fixture
def planted():
    return planted_interactions()


def group_embeddings(data: Interactions, n_groups: int = 4, per_group: int = 5) -> torch.Tensor:
    """Text vectors that share a direction within a group (what a good encoder would give)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(n_groups, 16))
    ids = data.items.ids.to_list()
    rows = [centers[int(i[1:]) // per_group] + 0.1 * rng.normal(size=16) for i in ids]
    return torch.nn.functional.normalize(torch.tensor(np.array(rows), dtype=torch.float32), dim=1)


@pytest.fixture(scope="session")
def trained_lake_template(tmp_path_factory, small_source, tiny_encoder_dir):
    """A data directory after ingest, encode (tiny BERT) and train (EASE champion).

    Tests take a private copy through `trained_lake`.
    """
    from recsys_core.data.sources import SourceSpec
    from recsys_core.pipeline import encode_items, ingest, train
    from recsys_core.settings import Settings
    from recsys_core.storage import Lake

    lake = Lake(tmp_path_factory.mktemp("trained") / "lake")
    events, items = small_source
    ingest(SourceSpec(events=(str(events),), items=str(items)), lake)
    settings = Settings(
        data_dir=lake.root, encoder=str(tiny_encoder_dir), encoder_max_length=64, models=("ease",)
    )
    encode_items(lake, settings)
    train(lake, settings)
    return lake.root, settings


@pytest.fixture
def trained_lake(trained_lake_template, tmp_path):
    """A private copy of `trained_lake_template`: (Lake, Settings) with a champion model."""
    from recsys_core.storage import Lake

    root, settings = trained_lake_template
    copy = tmp_path / "lake"
    shutil.copytree(root, copy)
    return Lake(copy), settings.model_copy(update={"data_dir": copy})
