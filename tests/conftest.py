"""Shared fixtures: tiny planted-structure data, the test device, a tiny random BERT, one
nightly run."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Before Prefect or MLflow are imported: keep their state inside a throwaway folder. One per
# process: a second import of this module (as `tests.conftest`) must not point PREFECT_HOME at
# a folder whose servers the session would never stop.
_STATE = Path(os.environ.get("_RECSYS_TESTS_STATE") or tempfile.mkdtemp(prefix="recsys-tests-"))
os.environ["_RECSYS_TESTS_STATE"] = str(_STATE)
os.environ["PREFECT_HOME"] = str(_STATE / "prefect")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.pop("PREFECT_API_URL", None)
for _name in list(os.environ):
    if _name.startswith("RECSYS_"):
        os.environ.pop(_name)

import pytest  # noqa: E402
import torch  # noqa: E402

import recsys_core  # noqa: E402, F401
from recsys_core.data.synth import SynthConfig, write_synthetic  # noqa: E402
from recsys_core.encoders.item_text_encoder import default_encoder_path  # noqa: E402
from recsys_core.testing.recommenders import (  # noqa: E402
    group_embeddings,
    planted_interactions,
    test_device,
)

__all__ = ["group_embeddings", "planted_interactions"]  # fixtures of the tests

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_STATE, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def shared_prefect_servers(tmp_path_factory):
    """Commands run by the tests share a Prefect server per Prefect home (`flows.server`);
    stop each one the session started, by its recorded pid."""
    yield
    from flows.server import record_path, stop_server

    records = [record_path(_STATE / "prefect")]
    records += tmp_path_factory.getbasetemp().glob("**/server/server.json")
    for record in records:
        stop_server(record.parent.parent)


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


@pytest.fixture
def planted():
    return planted_interactions()


@pytest.fixture
def device() -> str:
    """Where torch models train in tests: cuda when this machine has one, else cpu."""
    return test_device()


@pytest.fixture(scope="session")
def trained_lake_template(tmp_path_factory, small_source, tiny_encoder_dir):
    """A data directory after ingest, encode (tiny BERT) and train (EASE champion).

    Tests take a private copy through `trained_lake`.
    """
    from recsys_core.context import RunContext
    from recsys_core.data.sources import SourceSpec
    from recsys_core.pipeline import encode_items, ingest, train

    context = RunContext.of(
        tmp_path_factory.mktemp("trained") / "lake", encoder=str(tiny_encoder_dir),
        encoder_max_length=64, models=("ease",),
    )  # fmt: skip
    events, items = small_source
    ingest(context, SourceSpec(events=(str(events),), items=str(items)))
    encode_items(context)
    train(context)
    return context


@pytest.fixture
def trained_lake(trained_lake_template, tmp_path):
    """A private copy of `trained_lake_template`: a RunContext with a champion model."""
    copy = tmp_path / "lake"
    shutil.copytree(trained_lake_template.lake.root, copy)
    return trained_lake_template.with_settings(data_dir=copy)
