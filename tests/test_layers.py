"""What each layer may touch: only storage opens Delta tables, the library never imports
Prefect, and the CLI starts without loading torch, polars or Prefect."""

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


def test_the_library_never_imports_prefect():
    importing = [
        str(p.relative_to(PROJECT))
        for p in _sources("recsys_core")
        if "prefect" in _imported_packages(p)
    ]
    assert importing == []


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
