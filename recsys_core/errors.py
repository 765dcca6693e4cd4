"""Errors that carry the pipeline's exit-code contract, and how a failure maps onto it.

Exit codes: 0 ok; 2 bad input or usage (one line naming the file, row or column, and why);
1 internal failure (a failing disk is named as such); 3 a guardrail held the night's
recommendations (nothing published; `--force` publishes them); 130 stopped by SIGINT
(Ctrl-C) or SIGTERM. `exit_status` turns an exception into its code and the one line to
print, so every front end (the CLI, a service) reports failures the same way.
"""

from __future__ import annotations

import errno

from pydantic import ValidationError

from recsys_core.cancel import Stopped
from recsys_core.settings import Settings

EXIT_FAILURE = 1  # an internal failure, or the disk under the data directory failed
EXIT_BAD_INPUT = 2
EXIT_HELD = 3  # a publishing guardrail held the night: readers keep the published table
EXIT_STOPPED = 130  # what shells report for a process ended by Ctrl-C


class InputError(ValueError):
    """Bad input or usage: the message is one line naming the file, row or column, and why.

    The CLI turns it into exit code 2. Raised before anything is written, so a failed run
    publishes nothing.
    """

    exit_code = EXIT_BAD_INPUT


# OS error numbers that mean the storage failed, not the pipeline
STORAGE_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
}
# the same failures as the Delta Lake (Rust) and sqlite layers word them
STORAGE_MESSAGES = {
    "no space left on device": errno.ENOSPC,
    "os error 28": errno.ENOSPC,
    "database or disk is full": errno.ENOSPC,
    "read-only file system": errno.EROFS,
    "os error 30": errno.EROFS,
    "attempt to write a readonly database": errno.EROFS,
}


def storage_problem(exc: BaseException) -> str | None:
    """One line for a failure of the disk rather than of the pipeline, else None.

    Storage errors arrive as OSError from Python and pyarrow, but as plain exceptions with
    the OS message from the Delta Lake (Rust) and sqlite layers, so both are checked, along
    the chain of causes.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in STORAGE_ERRORS:
            where = f" writing {seen.filename}" if seen.filename else ""
            return f"{STORAGE_ERRORS[seen.errno]}{where}"
        text = str(seen).lower()
        for needle, code in STORAGE_MESSAGES.items():
            if needle in text:
                return STORAGE_ERRORS[code]
        seen = seen.__cause__ or seen.__context__
    return None


def invalid_options(exc: ValidationError) -> str:
    """One line for options that break their declared rules: which, why, what was given.

    An option of the run settings is named as on the command line and in the environment
    (`k (RECSYS_K)`), wherever its group is.
    """
    parts = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a rule between options: its message names them
            parts.append(message)
            continue
        name = str(error["loc"][-1])
        if exc.title == "Settings":
            name = f"{name} ({Settings.variable(name)})"
        parts.append(f"{name}: {message}, given {error['input']!r}")
    return "invalid options: " + "; ".join(parts)


def exit_status(exc: BaseException) -> tuple[int, str]:
    """The exit code of a failed or stopped run and the one line that says why.

    A stop and bad input say so; a failing disk is named, with the reassurance that no table
    moved; anything else is an internal error with its type and message.
    """
    if isinstance(exc, Stopped):
        return EXIT_STOPPED, f"stopped: {exc.reason}; nothing was committed"
    if isinstance(exc, InputError):
        return exc.exit_code, f"error: {exc}"
    if isinstance(exc, ValidationError):  # options or a form that break their declared rules
        return EXIT_BAD_INPUT, f"error: {invalid_options(exc)}"
    problem = storage_problem(exc)
    if problem is not None:
        return EXIT_FAILURE, f"error: {problem}; tables keep their previous version"
    return EXIT_FAILURE, f"internal error: {type(exc).__name__}: {exc}"
