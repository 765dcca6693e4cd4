"""Wall time and peak memory of a stage, for reports and the scale benchmark."""

from __future__ import annotations

import ctypes
import functools
import gc
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_rss_mb() -> float:
    """The process's peak resident memory in MB since start or the last `reset_peak_rss`."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def reset_peak_rss() -> bool:
    """Start a new peak from the current resident memory (Linux); False where unsupported,
    and `peak_rss_mb` then keeps counting from the start of the process."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """Hand memory the process no longer uses back to the system: unreachable objects first,
    then the C heap's free pages (glibc's `malloc_trim`; nothing where there is none).

    Large arrays freed by one stage otherwise stay in the process's heap, and the next
    stage's resident memory starts from the last one's peak instead of what it holds."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:  # the C library the interpreter runs on, without searching for it
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


@contextmanager
def measured() -> Iterator[dict[str, float]]:
    """Fills the yielded dict with `seconds` and `peak_rss_mb` of the block when it ends."""
    figures: dict[str, float] = {}
    release_memory()  # the stage's peak counts what it holds, not what the last one freed
    reset_peak_rss()
    start = time.perf_counter()
    try:
        yield figures
    finally:
        figures["seconds"] = round(time.perf_counter() - start, 2)
        figures["peak_rss_mb"] = round(peak_rss_mb(), 1)
