"""Table locations under the data directory, and atomic Delta Lake reads and writes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys_core.storage.lake import Lake

__all__ = ["Lake"]


def __getattr__(name: str) -> Any:
    # `Lake` is imported on first use, so `storage.paths` stays cheap to import (the CLI
    # checks a data directory with it before polars and deltalake are loaded)
    if name == "Lake":
        from recsys_core.storage.lake import Lake

        return Lake
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
