"""Local paths as deltalake gives and takes them (no heavy imports: the CLI checks a data
directory with it before a run starts)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from recsys_core.errors import InputError

_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def local_path(uri: str) -> str:
    """A path deltalake gives (a `file://` URI or a percent-encoded path) as the path on disk."""
    return unquote(uri.removeprefix("file://"))


def check_data_dir(root: str | Path) -> None:
    """Refuse a data directory whose path the Delta Lake library cannot hold.

    Spaces, `#`, `%` and non-ASCII letters are fine; a `%` followed by two hex digits is not:
    deltalake writes such a table where the path says but decodes the escape when it reads
    the table back (`/data/sale%41` is read as `/data/saleA`), and Prefect's database URL
    fails on it too.

    Raises:
        InputError: The path holds a `%` followed by two hex digits.
    """
    escape = _ESCAPE.search(str(root))
    if escape:
        raise InputError(
            f"data directory {root}: its path holds {escape.group()!r}, which the Delta Lake "
            "library reads as an escaped character; choose a path without a '%' followed by "
            "two hex digits"
        )
