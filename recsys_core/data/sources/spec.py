"""Where the raw data comes from (`SourceSpec`) and the files planned from it (`SourcePlan`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recsys_core.data.sources.batch import InputFile
from recsys_core.errors import InputError


@dataclass(frozen=True)
class SourceSpec:
    """Where the raw data comes from. Nothing set = MovieLens-100K bundled in `recbole`.

    Args:
        movielens: A GroupLens MovieLens folder.
        events: Generic event files, folders or globs.
        items: Generic item catalog file.
    """

    movielens: str | None = None
    events: tuple[str, ...] = ()
    items: str | None = None

    def __post_init__(self) -> None:
        if self.movielens and (self.events or self.items):
            raise InputError("give either --movielens or --events/--items, not both")
        if bool(self.events) != bool(self.items):
            raise InputError("--events and --items go together: give both")

    @property
    def folder(self) -> Path | None:
        """The `--movielens` folder, expanded; None for the other sources."""
        return Path(self.movielens).expanduser() if self.movielens else None

    def describe(self) -> str:
        if self.movielens:
            return f"MovieLens folder {self.movielens}"
        if self.events:
            return f"events {', '.join(self.events)}; items {self.items}"
        return "MovieLens-100K (bundled in the recbole wheel)"


@dataclass
class SourcePlan:
    """The files of a source, in the order they are read."""

    events: list[InputFile]
    items: list[InputFile]

    @property
    def files(self) -> list[Path]:
        paths = [f.path for f in self.events]
        for f in self.items:
            paths += [f.path, *f.companions]
        return paths
