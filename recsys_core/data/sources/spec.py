"""Where the raw data comes from (`SourceSpec`) and the files planned from it (`SourcePlan`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recsys_core.data.sources.batch import InputFile
from recsys_core.errors import InputError

# the bundled samples, by the name `--sample` takes
SAMPLES = ("movielens-100k",)
DEFAULT_SAMPLE = "movielens-100k"  # what an empty data directory starts from


@dataclass(frozen=True)
class SourceSpec:
    """Where the raw data comes from.

    Nothing set means no source was named: an ingest then adds the default sample to an
    empty data directory and leaves one that holds data as it is (see `pipeline.ingest`).

    Args:
        movielens: A GroupLens MovieLens folder.
        events: Generic event files, folders or globs.
        items: Generic item catalog file.
        sample: A bundled sample, by name (see `SAMPLES`): `movielens-100k` is the copy of
            MovieLens-100K in the `recbole` wheel.
    """

    movielens: str | None = None
    events: tuple[str, ...] = ()
    items: str | None = None
    sample: str | None = None

    def __post_init__(self) -> None:
        named = [
            option
            for option, given in (
                ("--movielens", self.movielens),
                ("--events/--items", self.events or self.items),
                ("--sample", self.sample),
            )
            if given
        ]
        if len(named) > 1:
            raise InputError(f"give one source: {' or '.join(named)}, not both")
        if bool(self.events) != bool(self.items):
            raise InputError("--events and --items go together: give both")
        if self.sample and self.sample not in SAMPLES:
            raise InputError(f"unknown sample {self.sample!r} (known: {', '.join(SAMPLES)})")

    @property
    def given(self) -> bool:
        """Whether a source is named (files, a folder or a sample)."""
        return bool(self.movielens or self.events or self.sample)

    @property
    def folder(self) -> Path | None:
        """The `--movielens` folder, expanded; None for the other sources."""
        return Path(self.movielens).expanduser() if self.movielens else None

    def describe(self) -> str:
        if self.movielens:
            return f"MovieLens folder {self.movielens}"
        if self.events:
            return f"events {', '.join(self.events)}; items {self.items}"
        if self.sample:
            return f"sample {self.sample} (MovieLens-100K, bundled in the recbole wheel)"
        return "no source given"


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
