"""What the commands do before a run starts: check the input, and point Prefect at the data
directory."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flows.params import Source
from flows.server import ServerRecord, shared_server
from recsys_core.errors import InputError
from recsys_core.settings import Settings
from recsys_core.storage.paths import check_data_dir


def point_at_data_dir(data_dir: Path) -> None:
    """Create the data directory and point Prefect at it, before Prefect is imported (a
    PREFECT_HOME already set, e.g. for a server, is kept). The run itself is given the data
    directory in its options."""
    root = data_dir.expanduser().resolve()
    check_data_dir(root)  # before anything is created there
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"data directory {root} cannot be created: {exc.strerror}") from None
    if not os.access(root, os.W_OK):
        raise InputError(f"data directory {root} is not writable (read-only or no permission)")
    os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class FlowModule:
    """A flow module by name, imported on first use of one of its names.

    The flow modules import Prefect, torch and polars (about 20 s on a busy machine), which
    `recsys --help` never needs and which must wait until `point_at_data_dir` has set
    PREFECT_HOME. Commands bind one at import (`stage_flows = FlowModule("flows.stages")`,
    with a plain import of the module for type checkers and readers) and call its flows
    after pointing at the data directory.

    Args:
        name: The module, e.g. "flows.stages".
    """

    def __init__(self, name: str) -> None:
        self.module_name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self.module_name), attribute)


class ServerStart:
    """The data directory's shared Prefect server (`flows.server`), looked up or started in
    a background thread, so a cold start overlaps the command's imports."""

    def __init__(self, prefect_home: Path) -> None:
        self.lease = contextlib.ExitStack()
        self.record: ServerRecord | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._start, args=(prefect_home,), name="prefect-server", daemon=True
        )
        self.thread.start()

    def _start(self, prefect_home: Path) -> None:
        try:
            self.record = self.lease.enter_context(shared_server(prefect_home))
        except BaseException as exc:  # handed to the command's thread by `wait`
            self.error = exc

    def wait(self) -> ServerRecord:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.record is not None
        return self.record


def start_prefect_server() -> ServerStart | None:
    """Begin getting a Prefect server for this command's flow run, unless PREFECT_API_URL
    names one. Call after `point_at_data_dir`, before importing the flows."""
    if "prefect.settings" in sys.modules:  # a caller already imported Prefect (tests)
        from prefect.settings import PREFECT_API_URL

        if PREFECT_API_URL.value():
            return None
    elif os.environ.get("PREFECT_API_URL"):
        return None
    return ServerStart(Path(os.environ["PREFECT_HOME"]))


@contextlib.contextmanager
def prefect_api(server: ServerStart | None) -> Iterator[None]:
    """Send this process's flow runs to a Prefect server for the length of the block.

    A server named by PREFECT_API_URL (that of `make ui`, a worker's, one of your own) is
    used as it is. Otherwise the data directory's shared server, from
    `start_prefect_server`, is used, and the variable is set for child processes too.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if server is None:
        yield
        return
    with server.lease:
        url = server.wait().url
        if PREFECT_API_URL.value():  # named in a Prefect profile
            yield
            return
        before = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                yield
        finally:
            os.environ.pop("PREFECT_API_URL")
            if before is not None:
                os.environ["PREFECT_API_URL"] = before


def checked_options(options: dict[str, Any]) -> dict[str, Any]:
    """The run options given on the command line, after what a run would refuse late is
    checked: every option with the `RECSYS_*` variables (bounds and types), unknown models or
    bad model parameters, an unknown protocol, an unreadable unavailable-items file (made
    absolute, as the run may start elsewhere)."""
    from recsys_core.data.splits import check_protocol
    from recsys_core.models import create
    from recsys_core.models.registry import name_model_modules

    # a bad value, given or in the environment, fails before Prefect starts
    settings = Settings(**options)
    name_model_modules(settings.runtime.model_modules)
    for spec in options.get("models", ()):
        create(spec)
    if "protocol" in options:
        check_protocol(options["protocol"])
    if "unavailable_items" in options:
        from recsys_core.pipeline.recommend import read_item_ids

        path = Path(options["unavailable_items"]).expanduser().resolve()
        read_item_ids(path)
        options = {**options, "unavailable_items": str(path)}
    return options


def checked_source(source: dict[str, Any]) -> Source:
    """The flows' `Source` from the source options given, after its files and required
    columns are checked."""
    from recsys_core.data.sources import preflight

    checked = Source(**source)
    preflight(checked.spec())  # files and required columns, before any run starts
    return checked
