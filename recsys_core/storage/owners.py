"""Who owns staged files: the host and process of the run that will commit them.

A run that stages files (encode shards, recommendation shards) first writes an owner file.
A later run removes what an owner left only when that owner can no longer commit it: its
process is gone (same host), or, for another host sharing the data directory, it has not
been heard of for a long time. Files of a live run are never touched.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path


def claim(path: Path, **details: object) -> None:
    """Write the owner file `path` for this host and process (atomically).

    Args:
        path: The owner file; its folder is created.
        details: Recorded with the owner (e.g. the plan id).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = {"host": socket.gethostname(), "pid": os.getpid(), **details}
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(owner))
    os.replace(partial, path)


def owner_is_live(path: Path, *, other_host_seconds: float, this_process: bool = True) -> bool:
    """Whether the run that wrote owner file `path` may still commit what it staged.

    Args:
        path: An owner file written by `claim`.
        other_host_seconds: An owner on another host (whose process cannot be checked from
            here) counts as live while the owner file is younger than this.
        this_process: What an owner that is this very process counts as.

    Returns:
        False for an unreadable or missing owner file, an owner process that is gone, or an
        owner on another host not heard of for `other_host_seconds`.
    """
    try:
        owner = json.loads(path.read_text())
        written = path.stat().st_mtime
    except (OSError, ValueError):
        return False
    if owner.get("host") != socket.gethostname():
        return time.time() - written < other_host_seconds
    pid = int(owner.get("pid", 0))
    if pid == os.getpid():
        return this_process
    return process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    # a killed child not yet reaped by its parent still answers kill(pid, 0)
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return bool(fields) and fields[0] == "Z"
