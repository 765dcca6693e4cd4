"""Every benchmark runs at its tiny size, so a broken benchmark fails the tests.

Each script in benchmarks/ declares the arguments of its tiny size as a module-level list,
`TINY_ARGS` (`{tmp}` stands for a fresh temporary folder). The test reads it without
importing the script, runs the script with those arguments in a subprocess, and checks that
it exits 0 and prints exactly one JSON line on stdout. A script without `TINY_ARGS` fails.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))

pytestmark = pytest.mark.slow


def tiny_args(script: Path) -> list[str] | None:
    """The script's `TINY_ARGS` list, read from its source, or None when it declares none."""
    for node in ast.parse(script.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "TINY_ARGS" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            assert isinstance(value, list) and all(isinstance(a, str) for a in value)
            return value
    return None


def json_lines(stdout: str) -> list[dict]:
    found = []
    for line in stdout.splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            found.append(parsed)
    return found


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 9, [p.name for p in SCRIPTS]


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_runs_at_its_tiny_size(script: Path, tmp_path: Path):
    args = tiny_args(script)
    assert args is not None, f"{script.name} declares no TINY_ARGS (its tiny size for CI)"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "TMPDIR": str(tmp_path),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        # a benchmark that runs `recsys` starts a temporary Prefect server: slow on busy cores
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{script.name} exited {done.returncode}:\n{done.stderr[-3000:]}"
    found = json_lines(done.stdout)
    assert len(found) == 1, f"{script.name} printed {len(found)} JSON lines:\n{done.stdout[-3000:]}"


def test_a_script_without_a_tiny_size_is_found(tmp_path: Path):
    script = tmp_path / "untested.py"
    script.write_text('"""A benchmark."""\nprint("{}")\n')
    assert tiny_args(script) is None
    script.write_text('TINY_ARGS = ["--events", "100"]\n')
    assert tiny_args(script) == ["--events", "100"]
