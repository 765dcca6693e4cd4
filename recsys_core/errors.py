"""Errors that carry the pipeline's exit-code contract."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input or usage: the message is one line naming the file, row or column, and why.

    The CLI turns it into exit code 2. Raised before anything is written, so a failed run
    publishes nothing.
    """

    exit_code = 2
