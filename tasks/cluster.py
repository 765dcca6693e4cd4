"""Work a task hands to the run's Dask cluster itself: evaluation's chunks of test users."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any


def start_the_run_s_engine() -> None:
    """Start the engine of the flow run in progress, when its runner builds it on first use
    (`flows.runners.ChosenTaskRunner.started`).

    A task called directly in a flow (not submitted) runs without the runner; code that looks
    for the run's Dask client calls this first. Outside a flow run, or with a runner that
    starts with the run, it does nothing.
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    started = getattr(context.task_runner, "started", None) if context is not None else None
    if callable(started):
        # a copy of the runner that no flow run entered (a Dask worker's) has no engine
        with contextlib.suppress(RuntimeError):
            started()


def dask_chunk_map() -> Callable[..., list] | None:
    """A `ChunkMap` (recsys_core.evaluation.evaluate) over this run's Dask workers, or None
    when the run has no Dask client (then evaluation ranks its chunks in-process).

    The shared objects (the fitted model) are scattered to every worker once per call; each
    chunk of test users is one Dask task. Called from inside a task on a Dask worker, the
    task's thread leaves the worker's pool while it waits (`worker_client`), so the chunks
    can run on that worker too.
    """
    try:
        from distributed import get_client, get_worker, worker_client
    except ImportError:
        return None
    start_the_run_s_engine()  # the flow's runner builds its engine on first use
    try:
        get_client()
    except ValueError:  # no Dask client in this run
        return None

    def map_chunks(fn: Callable[..., Any], chunks: Sequence[Any], **shared: Any) -> list:
        try:
            get_worker()
            context = worker_client()
        except ValueError:  # the flow's own process: its client is the run's
            context = contextlib.nullcontext(get_client())
        with context as client:
            scattered = {k: client.scatter(v, broadcast=True) for k, v in shared.items()}
            return client.gather(client.map(fn, list(chunks), pure=False, **scattered))

    return map_chunks
