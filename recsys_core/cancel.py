"""Stop when asked: one process-wide stop flag, checked where long loops turn.

A signal handler can only run in the main thread, but the work of a stage often runs in
other threads (Prefect runs mapped tasks on a thread pool) and a thread cannot be killed
from outside. So SIGINT and SIGTERM set a flag, and every long loop (encoder batches,
ranking chunks, training batches) calls `raise_if_stopped()` once per turn: the threads
end at their next check, within one batch, instead of running their work to the end while
the process waits for them at exit.

`Stopped` derives from `BaseException`, like `KeyboardInterrupt`, so that the
`except Exception` of retry loops, candidate skipping or error mapping never swallows it.
Work that stops commits nothing: every stage writes its table in one commit at its end.

A second signal of the same kind restores the default action and re-sends the signal, so
a second Ctrl-C (or SIGTERM) always ends the process at once.

Why a watcher thread as well as the handler: Python runs a signal handler only when the main
thread executes bytecode, and polars installs its own SIGINT handler with SA_RESTART, under
which a main thread blocked on a lock (Prefect waiting for its task futures) is never woken.
Python's C-level handler also writes the signal number to the wakeup fd
(`signal.set_wakeup_fd`), from whichever thread took the signal, so a daemon thread reading
that fd sets the flag at once; the worker threads stop, their futures complete, the main
thread wakes and its handler raises `Stopped`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_stop = threading.Event()
_reason: str | None = None
_signals_seen: set[int] = set()  # by the handler, in the main thread
_watched_seen: set[int] = set()  # by the wakeup-fd watcher thread
_lock = threading.Lock()
_process_wide = False  # `install_signal_handlers` ran: scoped installs leave it alone
_armed = 0  # the watcher acts on signals only while handlers are installed (depth)
_watcher: threading.Thread | None = None


class Stopped(BaseException):
    """Work stopped because a stop was requested (a signal, a cancel from the UI).

    Args:
        reason: Why, e.g. "SIGTERM received".
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def request_stop(reason: str) -> None:
    """Ask every loop of this process to stop at its next check.

    Args:
        reason: Why; the first reason given is kept and reported.
    """
    global _reason
    with _lock:
        if _reason is None:
            _reason = reason
    _stop.set()


def stop_requested() -> bool:
    """Whether a stop was requested since the process started (or `clear_stop`)."""
    return _stop.is_set()


def stop_reason() -> str | None:
    """The reason of the first stop request, or None."""
    return _reason


def raise_if_stopped() -> None:
    """Raise `Stopped` when a stop was requested; a no-op costing one flag read otherwise."""
    if _stop.is_set():
        raise Stopped(_reason or "stop requested")


def clear_stop() -> None:
    """Forget an earlier stop request, so that a new run in this process can start."""
    global _reason
    with _lock:
        _reason = None
        _signals_seen.clear()
        _watched_seen.clear()
    _stop.clear()


def _handler(previous: Any) -> Callable[[int, FrameType | None], None]:
    """A signal handler that requests a stop, then lets `previous` act if it is a Python
    handler of someone else (Prefect's SIGTERM bridge, which marks the flow run cancelled
    or crashed), else raises `Stopped` in the main thread, as Ctrl-C raises KeyboardInterrupt.
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum in _signals_seen:  # the second one: no more grace
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        _signals_seen.add(signum)
        request_stop(f"{name} received")
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)
        raise Stopped(_reason or f"{name} received")

    on_signal.recsys_stop_handler = True  # type: ignore[attr-defined]
    return on_signal


def _is_ours(handler: Any) -> bool:
    return bool(getattr(handler, "recsys_stop_handler", False))


def _install(signals: tuple[int, ...]) -> dict[int, Any]:
    """Install the stop handler for `signals`; returns the handlers it replaced.

    Signals that are ignored (SIG_IGN, as for a background job of a non-interactive shell)
    stay ignored, as Python itself leaves them.
    """
    replaced: dict[int, Any] = {}
    for signum in signals:
        current = signal.getsignal(signum)
        if current == signal.SIG_IGN or _is_ours(current):
            continue
        replaced[signum] = signal.signal(signum, _handler(current))
    return replaced


def _start_watcher() -> None:
    """Read the signal wakeup fd in a daemon thread (main thread only; once per process)."""
    global _watcher
    if _watcher is not None:
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # the C handler must never block on a full pipe
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _watcher = threading.Thread(
        target=_watch, args=(read_fd, previous), name="recsys-stop-watcher", daemon=True
    )
    _watcher.start()


def _watch(read_fd: int, previous_fd: int) -> None:
    while data := os.read(read_fd, 64):
        if previous_fd >= 0:  # whoever had the wakeup fd before still hears about signals
            with contextlib.suppress(OSError):
                os.write(previous_fd, data)
        if not _armed:
            continue
        for signum in data:
            if signum not in SIGNALS:
                continue
            # A second SIGINT here means the main thread has not got to its handler (it may
            # be blocked): end the process as the default action would. Not for SIGTERM:
            # Prefect's SIGTERM handler sends the signal again itself after its own cleanup.
            if signum == signal.SIGINT and signum in _watched_seen:
                os._exit(128 + signum)
            _watched_seen.add(signum)
            request_stop(f"{signal.Signals(signum).name} received")


def install_signal_handlers(signals: tuple[int, ...] = SIGNALS) -> bool:
    """Make SIGINT and SIGTERM request a stop, for the rest of the process.

    The first signal sets the stop flag (worker threads stop at their next check) and raises
    `Stopped` in the main thread; a second one of the same kind kills the process.

    Args:
        signals: Which signals to handle.

    Returns:
        False when not called from the main thread (Python allows signal handlers only
        there), so nothing was installed; True otherwise.
    """
    global _process_wide, _armed
    if threading.current_thread() is not threading.main_thread():
        return False
    _install(signals)
    _start_watcher()
    if not _process_wide:
        _armed += 1
    _process_wide = True
    return True


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = SIGNALS) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM request a stop; the old handlers come back after.

    For flow bodies: a deployment's flow-run process never passes through the `recsys` CLI,
    and a Prefect cancel sends that process SIGTERM. Prefect's own SIGTERM handler keeps
    running after ours, so the run is still marked cancelled. Where the CLI already installed
    the handlers for the whole process, or off the main thread, this does nothing. A stop
    requested by an earlier run of this process is cleared on entry.

    Args:
        signals: Which signals to handle.
    """
    global _armed
    if _process_wide or threading.current_thread() is not threading.main_thread():
        yield
        return
    clear_stop()
    replaced = _install(signals)
    _start_watcher()
    _armed += 1
    try:
        yield
    finally:
        _armed -= 1
        for signum, previous in replaced.items():
            # leave a handler someone installed inside the block in place
            if _is_ours(signal.getsignal(signum)):
                signal.signal(signum, previous)
