"""Plan a source: ask the registered layouts which one it is, and let that one name the
files and how to read each; `preflight` checks their headers before any run starts."""

from __future__ import annotations

from recsys_core.data.sources.headers import inspect
from recsys_core.data.sources.integrity import check_complete
from recsys_core.data.sources.layout import LAYOUTS
from recsys_core.data.sources.spec import SourcePlan, SourceSpec
from recsys_core.errors import InputError


def plan_source(spec: SourceSpec) -> SourcePlan:
    """Name the files of `spec` and how to read each (no data is read).

    Raises:
        InputError: A file or folder is missing or not a known layout.
    """
    folder = spec.folder
    if folder is not None and not folder.is_dir():
        raise InputError(f"{folder}: MovieLens folder not found")
    for layout in LAYOUTS.values():
        if layout.recognises(spec):
            return layout.plan(spec)
    raise InputError(
        f"{folder}: not a MovieLens folder (expected u.data and u.item, or ratings.csv and "
        "movies.csv)"
    )


def preflight(spec: SourceSpec) -> None:
    """Check that the source's files exist, have their required columns and, when
    compressed, are whole, so bad input fails fast and before any run starts.

    A spec that names no source is not checked: the run decides what it means by the data
    directory (the default sample for an empty one, nothing for one that holds data).

    Raises:
        InputError: naming the file and the missing column, or the damaged file.
    """
    if not spec.given:
        return
    plan = plan_source(spec)
    for file in [*plan.events, *plan.items]:
        inspect(file)
    for path in plan.files:
        check_complete(path)
