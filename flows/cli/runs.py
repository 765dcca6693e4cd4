"""What the commands do before a run starts: check the input, point Prefect at the data
directory, and build the run's options."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recsys_core.errors import InputError


def point_at_data_dir(data_dir: Path) -> None:
    """Create the data directory and point Prefect and the run at it, before Prefect is
    imported (a PREFECT_HOME already set, e.g. for a server, is kept)."""
    root = data_dir.expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"data directory {root} cannot be created: {exc.strerror}") from None
    if not os.access(root, os.W_OK):
        raise InputError(f"data directory {root} is not writable (read-only or no permission)")
    os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ["RECSYS_DATA_DIR"] = str(root)


def run_options(
    data_dir: Path,
    k: int | None = None,
    models: str | None = None,
    encoder: str | None = None,
    protocol: str | None = None,
) -> Any:
    """The flows' `RunOptions` from the command's options (unset ones stay None)."""
    from flows.params import RunOptions

    return RunOptions(
        data_dir=str(data_dir),
        k=k,
        models=model_specs(models) if models else None,
        encoder=encoder,
        protocol=protocol,
    )


def model_specs(models: str) -> list[str]:
    """Split `ease,blend` or `ease(reg=300, history_half_life=5),content` at top-level commas."""
    from recsys_core.models.registry import split_top_level

    return [s.strip() for s in split_top_level(models) if s.strip()]


def check_models(models: str | None, protocol: str | None = None) -> None:
    """Refuse unknown models, bad model parameters or an unknown protocol before a run starts."""
    from recsys_core.data.splits import check_protocol
    from recsys_core.models import create

    for spec in model_specs(models or ""):
        create(spec)
    if protocol is not None:
        check_protocol(protocol)


def checked_source(movielens: str | None, events: list[str] | None, items: str | None) -> Any:
    """The flows' `Source`, after its files and required columns are checked."""
    from flows.params import Source
    from recsys_core.data.sources import preflight

    source = Source(movielens=movielens, events=list(events or []), items=items)
    preflight(source.spec())  # files and required columns, before any run starts
    return source


@contextlib.contextmanager
def environment_variable(name: str, value: str | None) -> Iterator[None]:
    """Set an environment variable for the block (unless `value` is None), then restore it."""
    if value is None:
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
