"""How a command ends: failures mapped onto the exit-code contract, and the entry point.

`recsys_core.errors.exit_status` decides the code and the line; this module only prints the
line and exits.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import typer

from recsys_core.cancel import Stopped, install_signal_handlers
from recsys_core.errors import EXIT_FAILURE, exit_status


def guard(action: Callable[[], Any]) -> Any:
    """Run `action`; on failure print its one line and exit with its code.

    Typer's own exits and aborts pass through. Set RECSYS_DEBUG to also print the traceback
    of an internal failure.
    """
    try:
        return action()
    except Stopped as exc:
        raise _exit(exc) from None
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # an internal failure: say what, keep the traceback on request
        raise _exit(exc) from None


def _exit(exc: BaseException) -> typer.Exit:
    code, message = exit_status(exc)
    if code == EXIT_FAILURE and os.environ.get("RECSYS_DEBUG"):
        traceback.print_exc()
    typer.echo(message, err=True)
    return typer.Exit(code)


def main() -> None:
    """Entry point of `recsys`: Ctrl-C and SIGTERM stop the run at the next check of every
    thread and exit with code 130 (a second one kills at once)."""
    from flows.cli.app import app

    install_signal_handlers()
    try:
        app()
    except Stopped as exc:  # stopped outside a command's guard (while starting or printing)
        code, message = exit_status(exc)
        typer.echo(message, err=True)
        sys.exit(code)
