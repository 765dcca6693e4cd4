"""Table locations under the data directory, and atomic Delta Lake reads and writes."""

from recsys_core.storage.lake import Lake

__all__ = ["Lake"]
