"""No pickle anywhere, only the project's own model code, servers on loopback only."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import recsys_core
from recsys_core.registry import tracking

ROOT = Path(__file__).resolve().parents[2]
PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".pt", ".pth", ".bin", ".npy", ".npz"}


def test_stored_models_hold_no_pickle(trained_lake_template):
    root = trained_lake_template.lake.root
    artifacts = list((Path(root) / "mlflow").rglob("*"))
    files = [p for p in artifacts if p.is_file()]
    assert any(p.name == "weights.safetensors" for p in files)
    for path in files:
        assert path.suffix not in PICKLE_SUFFIXES, path
        head = path.read_bytes()[:2]
        # pickle protocols 2-5 start with 0x80 and the protocol number
        assert not (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5), path


def test_registered_models_run_only_the_projects_own_code(trained_lake_template):
    root = trained_lake_template.lake.root
    mlmodels = list((Path(root) / "mlflow").rglob("MLmodel"))
    assert mlmodels
    ours = tracking.PYFUNC_CODE.read_bytes()
    package = Path(recsys_core.__file__).parent
    for mlmodel in mlmodels:
        spec = yaml.safe_load(mlmodel.read_text())["flavors"]["python_function"]
        # models-from-code: MLflow runs our file; there is no pickled python_model
        assert spec["loader_module"] == "mlflow.pyfunc.loaders.code_model"
        assert "python_model" not in spec
        code = mlmodel.parent / Path(spec["model_code_path"]).name
        assert code.read_bytes() == ours
        for shipped in (mlmodel.parent / "code").rglob("*.py"):
            relative = shipped.relative_to(mlmodel.parent / "code" / "recsys_core")
            assert (package / relative).read_bytes() == shipped.read_bytes()


def test_the_source_never_unpickles():
    sources = [p for d in ("recsys_core", "flows", "tasks") for p in (ROOT / d).rglob("*.py")]
    for path in sources:
        text = path.read_text()
        assert not re.search(
            r"^\s*(import|from)\s+(pickle|cloudpickle|joblib|dill)\b", text, re.M
        ), path
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in call.group(1), f"{path}: {call.group(0)}"


def test_servers_bind_to_loopback_by_default():
    stack = (ROOT / "flows" / "stack.py").read_text()
    hosts = re.findall(r'"--host",\s*"([^"]+)"', stack)
    assert hosts and set(hosts) == {"127.0.0.1"}
    deployments = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    assert deployments["deployments"]
