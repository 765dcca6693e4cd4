"""Every benchmark runs at its tiny size, so a broken benchmark fails the tests.

Each script in benchmarks/ declares the arguments of its tiny size as a module-level list,
`TINY_ARGS` (`{tmp}` stands for a fresh temporary folder). The test reads it without
importing the script, runs the script with those arguments in a subprocess, and checks that
it exits 0 and prints exactly one JSON line on stdout. A script without `TINY_ARGS` fails.
The scripts run two at a time (most are one busy thread), each in its own temporary folder.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))

pytestmark = pytest.mark.slow


# Python 3.11's `ast.parse` is not safe on several threads at once ("AST constructor
# recursion depth mismatch"), and the scripts run from a pool's threads
_PARSING = threading.Lock()


def tiny_args(script: Path) -> list[str] | None:
    """The script's `TINY_ARGS` list, read from its source, or None when it declares none."""
    source = script.read_text(encoding="utf-8")
    with _PARSING:
        tree = ast.parse(source)
    for node in tree.body:
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


def run_tiny(script: Path, folder: Path) -> subprocess.CompletedProcess | str:
    """Run `script` at its tiny size in `folder`; a declaration that is missing is a str."""
    args = tiny_args(script)
    if args is None:
        return f"{script.name} declares no TINY_ARGS (its tiny size for CI)"
    folder.mkdir(parents=True, exist_ok=True)
    args = [a.replace("{tmp}", str(folder)) for a in args]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "TMPDIR": str(folder),
        "PREFECT_HOME": str(folder / "prefect"),
        # a benchmark that runs `recsys` starts a temporary Prefect server: slow on busy cores
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=folder, env=env, capture_output=True,
        text=True, timeout=900, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_runs(request, tmp_path_factory) -> dict[str, Future]:
    """The selected scripts started at their tiny size, two at a time; each test waits for
    its own."""
    selected = [
        item.callspec.params["script"]
        for item in request.session.items
        if item.originalname == "test_benchmark_runs_at_its_tiny_size"
    ]
    pool = ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1))
    base = tmp_path_factory.mktemp("benchmarks")
    runs = {p.name: pool.submit(run_tiny, p, base / p.stem) for p in selected}
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_runs_at_its_tiny_size(script: Path, tiny_runs):
    done = tiny_runs[script.name].result()
    assert not isinstance(done, str), done
    assert done.returncode == 0, f"{script.name} exited {done.returncode}:\n{done.stderr[-3000:]}"
    found = json_lines(done.stdout)
    assert len(found) == 1, f"{script.name} printed {len(found)} JSON lines:\n{done.stdout[-3000:]}"


def test_a_script_without_a_tiny_size_is_found(tmp_path: Path):
    script = tmp_path / "untested.py"
    script.write_text('"""A benchmark."""\nprint("{}")\n')
    assert tiny_args(script) is None
    script.write_text('TINY_ARGS = ["--events", "100"]\n')
    assert tiny_args(script) == ["--events", "100"]
