"""The one thing every pipeline stage takes: the run's settings, its data directory, its id."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from recsys_core.settings import Settings
from recsys_core.storage import Lake


@dataclass(frozen=True)
class RunContext:
    """The settings of one run, the data directory they name, and the run's id.

    The lake is derived from `settings.data_dir` (one per context), so a stage's tables and
    its configuration can never point at different data directories.

    Attributes:
        settings: Run settings; `settings.data_dir` is the data directory.
        run_id: The pipeline run, recorded in commits and MLflow tags ("" outside a flow).
    """

    settings: Settings
    run_id: str = ""

    def __post_init__(self) -> None:
        # the models of the modules this run names are found in every process it runs in
        if self.settings.runtime.model_modules:
            from recsys_core.models.registry import name_model_modules  # imports torch

            name_model_modules(self.settings.runtime.model_modules)

    @cached_property
    def lake(self) -> Lake:
        """Tables and MLflow store of `settings.data_dir`."""
        return Lake(self.settings.data_dir)

    @classmethod
    def of(cls, data_dir: str | Path, *, run_id: str = "", **settings: Any) -> RunContext:
        """A context for `data_dir` with these options, by flat name (the rest from
        `RECSYS_*`)."""
        return cls(Settings(data_dir=Path(data_dir), **settings), run_id=run_id)

    def with_settings(self, **changes: Any) -> RunContext:
        """The same run with some options changed, by flat name (`data_dir` included)."""
        return RunContext(self.settings.updated(**changes), run_id=self.run_id)
