"""What each layer may touch: only storage opens Delta tables, only the registry talks to
MLflow, the library never imports Prefect, and the CLI starts without loading torch, polars or
Prefect."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def _sources(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((PROJECT / folder).rglob("*.py"))]


def test_only_storage_opens_delta_tables():
    storage = PROJECT / "recsys_core" / "storage"
    outside = [
        str(p.relative_to(PROJECT))
        for p in _sources("recsys_core", "flows", "tasks")
        if "deltalake" in _imported_packages(p) and storage not in p.parents
    ]
    assert outside == []


def _mlflow_uses(path: Path) -> list[str]:
    """`import mlflow...`, `from mlflow... import`, and `<name>.mlflow.<attr>` (the MLflow
    module reached through an object) in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            modules = []
        if any(m.split(".")[0] == "mlflow" for m in modules):
            found.append(f"line {node.lineno}: import")
        if isinstance(node, ast.Attribute) and node.attr == "mlflow":
            found.append(f"line {node.lineno}: .mlflow")
    return found


def test_only_the_registry_calls_mlflow():
    """Runs, registered versions and downloads go through `Tracker` (writes) and
    `RegistryReader` (reads), which hold the store's URIs; code elsewhere cannot reach
    MLflow's process-wide state by accident."""
    registry = PROJECT / "recsys_core" / "registry"
    outside = {
        str(p.relative_to(PROJECT)): uses
        for p in _sources("recsys_core", "flows", "tasks")
        if registry not in p.parents and (uses := _mlflow_uses(p))
    }
    assert outside == {}


def test_the_library_never_imports_prefect():
    importing = [
        str(p.relative_to(PROJECT))
        for p in _sources("recsys_core")
        if "prefect" in _imported_packages(p)
    ]
    assert importing == []


def test_the_cli_binds_the_flow_modules_without_running_them():
    """Commands reach the flows through module-level names (followable by readers and type
    checkers) whose modules run on first use, after PREFECT_HOME is set."""
    probe = (
        "import sys, flows.cli.pipeline as p; "
        "print(p.stage_flows.module_name, p.nightly_flows.module_name, 'prefect' in sys.modules); "
        "print(p.stage_flows.train_flow.name, 'prefect' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["flows.stages", "flows.nightly", "False", "train", "True"]


@pytest.mark.parametrize("module", ["flows.cli", "flows.params"])
def test_the_cli_and_the_forms_load_without_torch_polars_or_prefect(module):
    probe = (
        f"import sys, {module}; "
        "print(sorted({'torch', 'polars', 'prefect', 'transformers'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
