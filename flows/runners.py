"""Which engine runs mapped shard tasks: threads on this machine, or a Dask cluster.

`RECSYS_TASK_RUNNER=dask` with `RECSYS_DASK_ADDRESS=tcp://scheduler:8786` uses an existing
cluster; without an address a local cluster of `RECSYS_DASK_WORKERS` processes is started
for the run. The flows carry a `ChosenTaskRunner`: the engine is picked from the settings of
the flow run (its `options` form, whose unset values come from `RECSYS_*` where the run
runs: a CLI call, a deployment run on a worker) when the run first hands it a task, not when
the module is imported. Shard tasks submitted inside `gpu_resources()` ask the scheduler for
a worker that advertises a `GPU` resource (`dask worker --resources GPU=1`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.params import OptionsForm
from recsys_core.errors import InputError
from recsys_core.settings import Settings
from tasks.cluster import start_the_run_s_engine


def build_task_runner(settings: Settings) -> TaskRunner:
    """The task runner the settings ask for.

    Args:
        settings: The run's settings (`runtime.task_runner` and the Dask options).
    """
    runtime = settings.runtime
    if runtime.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=max(2, os.cpu_count() or 2))
    if runtime.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if runtime.dask_address:
            return DaskTaskRunner(address=runtime.dask_address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": runtime.dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            },
        )
    raise InputError(f"task runner {runtime.task_runner!r} is not one of: thread, dask")


class ChosenTaskRunner(TaskRunner):
    """A task runner that becomes the one its flow run's settings ask for.

    Prefect enters a fresh copy (`duplicate`) for each flow run, before the run's parameters
    are at hand; the engine (threads, or a Dask cluster) is built from the run's `options`
    form and started when the run first submits a task (or enters `gpu_resources`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.engine: TaskRunner | None = None

    def duplicate(self) -> ChosenTaskRunner:
        return type(self)()

    def __enter__(self) -> ChosenTaskRunner:
        super().__enter__()
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        try:
            if self.engine is not None:
                self.engine.__exit__(exc_type, exc_value, traceback)
        finally:
            self.engine = None
            super().__exit__(exc_type, exc_value, traceback)

    def submit(self, task, parameters, wait_for=None, dependencies=None):
        return self.started().submit(task, parameters, wait_for, dependencies)

    def map(self, task, parameters, wait_for=None):
        return self.started().map(task, parameters, wait_for)

    def started(self, settings: Settings | None = None) -> TaskRunner:
        """The engine, built from `settings` (by default: the flow run's) and started on
        first use."""
        if not self._started:
            raise RuntimeError("the task runner is not started (use it in a flow run)")
        if self.engine is None:
            self.engine = build_task_runner(settings or flow_run_settings()).__enter__()
        return self.engine


def flow_run_settings() -> Settings:
    """The settings of the flow run in progress: those of its `options` form.

    Raises:
        RuntimeError: Outside a flow run, or in a flow without an `options` form.
    """
    context = FlowRunContext.get()
    if context is None or context.flow is None:
        raise RuntimeError("no flow run in progress")
    # a deployment run's parameters arrive as JSON: validated into the flow's types here
    options = context.flow.validate_parameters(dict(context.parameters or {})).get("options")
    if not isinstance(options, OptionsForm):
        raise RuntimeError(f"flow {context.flow.name!r} takes no `options` form")
    return options.settings()


@contextlib.contextmanager
def gpu_resources() -> Iterator[None]:
    """Submit tasks inside this block to Dask workers with a GPU, when the cluster has any.

    Outside a Dask run, or on a cluster without GPU workers, it changes nothing.
    """
    start_the_run_s_engine()  # a Dask client exists once the run's engine has started
    try:
        import dask
        from distributed import get_client
    except ImportError:
        yield
        return
    try:
        client = get_client()
    except ValueError:  # no Dask client in this run
        yield
        return
    workers = client.scheduler_info().get("workers", {}).values()
    if any(w.get("resources", {}).get("GPU", 0) for w in workers):
        with dask.annotate(resources={"GPU": 1}):
            yield
    else:
        yield
