"""How a failure maps onto the exit-code contract (what every `recsys` command reports)."""

from __future__ import annotations

import errno

from recsys_core.cancel import Stopped
from recsys_core.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_STOPPED,
    InputError,
    exit_status,
    storage_problem,
)


def test_stops_and_bad_input_have_their_own_codes():
    assert exit_status(Stopped("SIGTERM received")) == (
        EXIT_STOPPED, "stopped: SIGTERM received; nothing was committed",
    )  # fmt: skip
    assert exit_status(InputError("events.csv: file not found")) == (
        EXIT_BAD_INPUT, "error: events.csv: file not found",
    )  # fmt: skip
    assert (EXIT_STOPPED, EXIT_BAD_INPUT) == (130, 2)


def test_a_failing_disk_is_named_along_the_chain_of_causes():
    full = OSError(errno.ENOSPC, "No space left on device", "/lake/events/part-0.parquet")
    code, message = exit_status(full)
    assert code == EXIT_FAILURE == 1
    assert message == (
        "error: no space left on the device writing /lake/events/part-0.parquet; "
        "tables keep their previous version"
    )
    # the Delta Lake (Rust) layer words it as text, wrapped in another error
    try:
        try:
            raise Exception("Generic error: Read-only file system (os error 30)")
        except Exception as inner:
            raise RuntimeError("commit failed") from inner
    except RuntimeError as wrapped:
        assert storage_problem(wrapped) == "the file system is read-only"


def test_anything_else_is_an_internal_error():
    assert exit_status(KeyError("user_id")) == (EXIT_FAILURE, "internal error: KeyError: 'user_id'")
    assert storage_problem(ValueError("shape mismatch")) is None
