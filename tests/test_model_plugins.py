"""A new model is one file: registered by its decorator, found without touching any other file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from recsys_core.context import RunContext
from recsys_core.errors import InputError
from recsys_core.models import MODELS, create, discover, registered
from recsys_core.models import registry as model_registry
from recsys_core.ranking import top_k
from recsys_core.registry.artifacts import ModelBundle, load_bundle, save_bundle
from recsys_core.settings import Settings
from recsys_core.testing.recommenders import fit_for_test

ROOT = Path(__file__).resolve().parents[1]

# a complete model in one file: item co-occurrence with the user's history, plus popularity
THROWAWAY = '''
"""Co-occurrence with the history, plus a pinch of popularity."""

from dataclasses import dataclass

import numpy as np
import torch

from recsys_core.models import Capabilities, Recommender, TestProfile, register


@dataclass(frozen=True)
class CoCountConfig:
    popularity_weight: float = 0.01


@register
class CoCount(Recommender):
    name = "{name}"
    config_class = CoCountConfig
    description = "Counts of items met with the history, plus popularity."
    capabilities = Capabilities(explains=True)
    test_profile = TestProfile(quick={{"popularity_weight": 0.1}})

    def fit(self, data, options):
        x = data.interactions.matrix()
        self.counts = torch.from_numpy((x.T @ x).toarray().astype(np.float32))
        self.counts.fill_diagonal_(0.0)
        self.popularity = torch.from_numpy(np.asarray(x.sum(axis=0), dtype=np.float32).ravel())
        self.n_items = data.n_items
        return []

    def score(self, histories):
        rows = torch.from_numpy(histories.csr().toarray().astype(np.float32))
        return rows @ self.counts + self.config.popularity_weight * self.popularity

    def pair_weights(self, history, candidates):
        return self.counts[history.clamp_min(0).unsqueeze(-1), candidates.clamp_min(0).unsqueeze(1)]

    def state_dict(self):
        return {{"counts": self.counts, "popularity": self.popularity}}

    def load_state_dict(self, state):
        self.counts, self.popularity = state["counts"], state["popularity"]
        self.n_items = len(self.popularity)
'''


def _write_model(folder: Path, module: str, name: str) -> None:
    (folder / f"{module}.py").write_text(textwrap.dedent(THROWAWAY.format(name=name)))


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A folder on the Python path for model modules; registrations made there are undone."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = dict(registered())
    yield tmp_path
    MODELS.clear()
    MODELS.update(before)
    for module in [m for m in sys.modules if m.startswith("throwaway_")]:
        sys.modules.pop(module)
    model_registry._loaded.difference_update(
        {m for m in model_registry._loaded if m.startswith("throwaway_")}
    )
    for module in [m for m in model_registry._named if m.startswith("throwaway_")]:
        model_registry._named.pop(module)
    model_registry._problems.clear()


def test_a_model_in_a_module_named_by_the_setting_trains_ranks_saves_and_loads(
    plugin_path, monkeypatch, planted, tmp_path
):
    _write_model(plugin_path, "throwaway_cocount", "throwaway")
    assert "throwaway" not in MODELS
    RunContext.of(tmp_path / "lake", model_modules="throwaway_cocount")  # a run names it
    assert "throwaway" in MODELS
    data, expected = planted
    model = fit_for_test("throwaway", data)
    scores = model.score(data.histories(np.arange(4)))
    assert scores.shape == (4, data.n_items)
    users = list(expected)
    ranked = top_k(model, data.histories(data.users.index(users)), 1, explain=True)
    assert data.items.lookup(ranked.items[:, 0]).to_list() == [expected[u] for u in users]
    assert (ranked.reasons[:, 0] >= 0).all()
    loaded = load_bundle(save_bundle(ModelBundle.from_fit(model, data), tmp_path / "bundle"))
    assert type(loaded.model).__name__ == "CoCount"
    np.testing.assert_array_equal(
        loaded.model.score(data.histories()), model.score(data.histories())
    )


def test_discovery_reads_the_run_s_setting_not_the_process_environment(
    plugin_path, monkeypatch, tmp_path
):
    _write_model(plugin_path, "throwaway_named", "throwaway-named")
    monkeypatch.setenv("RECSYS_MODEL_MODULES", "throwaway_named")
    discover()
    assert "throwaway-named" not in MODELS  # the registry reads no settings of its own
    RunContext(Settings(data_dir=tmp_path / "lake"))  # the run's settings (RECSYS_* read here)
    assert "throwaway-named" in MODELS
    discover()  # a later look goes through the named module again
    assert "throwaway_named" in model_registry.plugin_modules()


def test_an_installed_plugin_is_found_by_its_entry_point(plugin_path):
    _write_model(plugin_path, "throwaway_plugin", "throwaway-plugin")
    info = plugin_path / "throwaway_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[recsys.models]\ncocount = throwaway_plugin\n")
    discover()
    assert "throwaway-plugin" in MODELS
    assert create("throwaway-plugin(popularity_weight=0.5)").config.popularity_weight == 0.5


def test_a_broken_plugin_leaves_the_others_and_is_named_when_its_model_is_asked_for(
    plugin_path, monkeypatch
):
    (plugin_path / "throwaway_broken.py").write_text("raise RuntimeError('half-written file')\n")
    RunContext.of(plugin_path / "lake", model_modules="throwaway_broken")
    assert create("ease").name == "ease"  # the built-in models still work
    with pytest.raises(
        InputError, match=r"unknown model 'cocount'.*throwaway_broken.*half-written"
    ):
        create("cocount")


def test_a_second_model_under_a_taken_name_is_refused():
    from dataclasses import dataclass

    from recsys_core.models import Recommender, register

    @dataclass(frozen=True)
    class Config:
        pass

    class Impostor(Recommender):
        name = "ease"
        config_class = Config

    with pytest.raises(TypeError, match="taken"):
        register(Impostor)
    assert MODELS["ease"].__name__ == "EASE"


def test_recsys_train_offers_a_model_from_its_own_file(plugin_path, trained_lake, tiny_encoder_dir):
    """The CLI trains, evaluates and reports the new model with no other file touched."""
    lake = trained_lake.lake
    _write_model(plugin_path, "throwaway_cli", "throwaway-cli")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(plugin_path), os.environ.get("PYTHONPATH")])
        ),
        "RECSYS_MODEL_MODULES": "throwaway_cli",
    }
    command = [
        str(ROOT / ".venv" / "bin" / "recsys"), "train", "--models", "throwaway-cli",
        "--data-dir", str(lake.root), "--encoder", str(tiny_encoder_dir),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "throwaway-cli" in done.stdout
