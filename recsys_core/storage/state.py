"""Identity of a table's current contents, for caching work that depends on it."""

from __future__ import annotations

from deltalake import DeltaTable

from recsys_core.storage.lake import Lake


def table_state(lake: Lake, table: str) -> str:
    """`<table id>@<version>`, or `absent`.

    The Delta table id changes when a table is deleted and created again, so a state never
    matches a table that merely reached the same version number.
    """
    if not lake.exists(table):
        return "absent"
    delta = DeltaTable(str(lake.path(table)))
    return f"{delta.metadata().id}@{delta.version()}"
