"""Work a task hands to the run's Dask cluster itself: evaluation's chunks of test users."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any


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
