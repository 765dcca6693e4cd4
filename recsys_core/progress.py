"""Progress lines for long stages: done/total, elapsed time and an estimate of what is left.

A stage wraps its main loop in `Progress` and calls `advance` as work gets done. A line is
logged when `every` seconds (30 by default) have passed since the last one, never per batch,
so a 15-minute encode prints about 30 lines and a 2-second one prints none:

    encode: 12,000/60,000 items (20%), 3m00s elapsed, about 12m00s left

Lines go to the standard `logging` logger `recsys_core.progress` (INFO). `recsys_core` sets
Prefect's `PREFECT_LOGGING_EXTRA_LOGGERS=recsys_core` by default (`environment.py`), so in a
flow run they appear in the CLI's output and in the run's logs in the Prefect UI.

A step that does not return to the loop for a long time (one model's fit during training)
would leave the loop silent; with `heartbeat=True` a background thread also logs at least
every `every` seconds while the block runs, naming the current step (`step`). The thread runs
in a copy of the caller's context, so Prefect still files its lines under the flow run.

The estimate of what is left assumes the units to come take as long as the finished ones, on
average; while a unit runs, its share counts down. A caller that expects the next unit to take
longer or shorter than the average (a blend after the models it is made of) says so with
`advance(..., expected=seconds)`.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")

LOGGER = logging.getLogger("recsys_core.progress")
# INFO passes even where the root logger is at WARNING (Prefect's console): the handlers
# decide where lines go; a logging configuration of the user's set later still wins
if LOGGER.level == logging.NOTSET:
    LOGGER.setLevel(logging.INFO)
EVERY_SECONDS = 30.0


def now() -> float:
    """The progress clock: monotonic seconds."""
    return time.monotonic()


def duration(seconds: float) -> str:
    """Short human duration: `45s`, `3m05s`, `2h10m`.

    Args:
        seconds: A non-negative duration.
    """
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Logs how far a loop is, at most every `every` seconds (and with `heartbeat`, at least).

    Args:
        what: The stage or loop, first word of each line (`encode`, `recommend`).
        total: Units of work in all (items, users, candidates); 0 when unknown.
        unit: Name of one unit in the lines.
        every: Seconds between lines.
        heartbeat: Also log from a background thread while the block runs, so a single long
            step cannot silence it.
        expected: Seconds the whole block is expected to take, for the estimate when there
            is no total to count against (a refit whose fit on the split took that long).
        step: What runs first (shown in the lines).
        clock: Seconds, monotonic (default `now`; tests pass a fake one).
        log: Where lines go (default: the `recsys_core.progress` logger at INFO).
    """

    def __init__(
        self,
        what: str,
        total: int,
        *,
        unit: str = "items",
        every: float = EVERY_SECONDS,
        heartbeat: bool = False,
        expected: float | None = None,
        step: str = "",
        clock: Callable[[], float] | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.what, self.total, self.unit, self.every = what, max(int(total), 0), unit, every
        self.clock = clock or now
        self.log = log or LOGGER.info
        self.expected = expected
        self.done = 0
        self.step = step  # what is running now, e.g. "fitting blend"
        self.started = self.last = self.since = self.clock()  # since: the last advance
        self.next_expected: float | None = None  # seconds the running unit should take
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if heartbeat:
            context = contextvars.copy_context()
            self._thread = threading.Thread(
                target=context.run, args=(self._beat,), name=f"progress-{what}", daemon=True
            )

    def __enter__(self) -> Progress:
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the heartbeat (if any); logs nothing more."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()

    def advance(
        self, count: int = 1, *, step: str | None = None, expected: float | None = None
    ) -> None:
        """Count `count` more units done; logs a line when `every` seconds have passed.

        Args:
            count: Units just finished.
            step: What runs next (shown in the lines), when it changes.
            expected: Seconds the next unit should take, when known better than the average
                of the finished ones (None: that average).
        """
        with self._lock:
            self.done += count
            self.since = self.clock()
            self.next_expected = expected
            if step is not None:
                self.step = step
        self.poll()

    def poll(self) -> bool:
        """Log a line if `every` seconds passed since the last one; returns whether it did."""
        now = self.clock()
        with self._lock:
            if now - self.last < self.every:
                return False
            self.last = now
            line = self.line(now)
        self.log(line)
        return True

    def line(self, now: float | None = None) -> str:
        """The progress line at time `now` (default: the clock's)."""
        now = self.clock() if now is None else now
        elapsed = now - self.started
        parts = []
        if self.total:
            parts.append(f"{self.done:,}/{self.total:,} {self.unit} "
                         f"({100 * self.done // self.total}%)")  # fmt: skip
        parts.append(f"{duration(elapsed)} elapsed")
        left = self.seconds_left(now)
        parts.append("time left unknown" if left is None else f"about {duration(left)} left")
        step = f" [{self.step}]" if self.step else ""
        return f"{self.what}{step}: " + ", ".join(parts)

    def seconds_left(self, now: float | None = None) -> float | None:
        """Estimate of the seconds left at the rate so far (or from `expected` when there is
        no total); None when there is nothing to estimate from yet."""
        now = self.clock() if now is None else now
        if not self.total:
            return None if self.expected is None else max(self.expected - (now - self.started), 0)
        if self.done >= self.total:
            return 0.0
        if self.done <= 0:
            if self.next_expected is None:
                return None
            return max(self.next_expected - (now - self.started), 0.0)
        rate = (self.since - self.started) / self.done  # seconds per finished unit
        running = rate if self.next_expected is None else self.next_expected
        # the running unit's share counts down; the units after it at the average
        return max(running - (now - self.since), 0.0) + rate * (self.total - self.done - 1)

    def _beat(self) -> None:
        # wakes a few times per period so a line is never more than a little late
        while not self._stop.wait(max(self.every / 4, 0.01)):
            self.poll()


def track(
    items: Iterable[T],
    what: str,
    *,
    total: int | None = None,
    unit: str = "items",
    size: Callable[[T], int] | None = None,
    step: Callable[[T], str] | None = None,
    heartbeat: bool = False,
    every: float = EVERY_SECONDS,
) -> Iterator[T]:
    """Yield `items` unchanged, logging progress as each one is finished (`Progress`).

    Wrapping a loop's iterable is the whole hook: `for batch in track(batches, "encode",
    total=n, size=len): ...`. An item counts as done when the loop asks for the next one.

    Args:
        items: What the loop iterates over.
        what: First word of each line.
        total: Units in all (default: `len(items)` when it has one).
        unit: Name of one unit.
        size: Units in one item (default: 1 each), e.g. the rows of a batch.
        step: Label of the step an item starts (shown while it runs), e.g. the model fitted.
        heartbeat: Also log while one item runs longer than `every` seconds.
        every: Seconds between lines.
    """
    if total is None:
        total = len(items) if hasattr(items, "__len__") else 0  # type: ignore[arg-type]
    with Progress(what, total, unit=unit, heartbeat=heartbeat, every=every) as shown:
        for item in items:
            if step is not None:
                shown.step = step(item)
            yield item
            shown.advance(size(item) if size is not None else 1)
