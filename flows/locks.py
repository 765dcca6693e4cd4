"""One run at a time over a data directory: two nightlies (or a nightly and a forget-user)
that overlap would both read the same tables and both register a "first champion".

The lock is a file lock (`filelock`, an OS lock on `DATA_DIR/.locks/runs.lock`) taken inside
the flows, so it holds between CLI runs, deployment runs on workers and Python callers alike.
The OS releases it when its holder dies, however it dies, so a killed run never blocks the
next one. Beside it, `runs.json` says who holds it (what, pid, host, since when), for the
line a refused run prints. The holder writes it just after taking the lock, so a run refused
in that instant waits a moment for it (and passes over one left by a holder on this host
that has died).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from recsys_core.errors import InputError

LOCKS = ".locks"
HOLDER_WAIT_S = 3.0


class DataDirBusy(InputError):
    """Another run holds the data directory (exit code 2: run again when it is done)."""


def _alive(held: dict) -> bool:
    """Whether the process named in `held` may still hold the lock (on another host: unknown,
    so yes)."""
    if held["host"] != socket.gethostname():
        return True
    try:
        os.kill(int(held["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(folder: Path) -> str:
    deadline = time.monotonic() + HOLDER_WAIT_S
    while True:
        try:
            held = json.loads((folder / "runs.json").read_text())
            if _alive(held):
                return (
                    f"{held['what']} (pid {held['pid']} on host {held['host']}, "
                    f"since {held['since']})"
                )
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if time.monotonic() >= deadline:
            return "another process (its details are not written yet)"
        time.sleep(0.05)


@contextlib.contextmanager
def exclusive_run(data_dir: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold the data directory's run lock for the length of the block.

    Args:
        data_dir: The data directory.
        what: What holds it, as the refused run names it (`nightly`, `forget-user`).

    Raises:
        DataDirBusy: Another run holds it; nothing was read or written.
    """
    folder = Path(data_dir).expanduser().resolve() / LOCKS
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / "runs.lock"), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise DataDirBusy(
            f"data directory {folder.parent} is in use by {_holder(folder)}; "
            "run again when it has finished"
        ) from None
    try:
        since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        held = {"what": what, "pid": os.getpid(), "host": socket.gethostname(), "since": since}
        partial = folder / f"runs.{os.getpid()}.tmp"
        partial.write_text(json.dumps(held))
        partial.replace(folder / "runs.json")
        yield
    finally:
        (folder / "runs.json").unlink(missing_ok=True)
        lock.release()
