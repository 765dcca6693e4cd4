"""Typed flow parameters: Prefect renders them as a form in the UI."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import BaseModel, Field, create_model

from flows.settings_help import setting_help
from recsys_core.data.sources import SourceSpec
from recsys_core.encoders.finetune import FinetuneConfig
from recsys_core.settings import Settings


class Source(BaseModel):
    """Where raw data comes from. Leave everything empty for the bundled MovieLens-100K."""

    movielens: str | None = Field(
        None, description="A GroupLens MovieLens folder (ml-100k, ml-latest, ml-25m, ml-32m)."
    )
    events: list[str] = Field(
        default_factory=list, description="Generic event files, folders or globs."
    )
    items: str | None = Field(None, description="Generic item catalog file.")

    def spec(self) -> SourceSpec:
        return SourceSpec(movielens=self.movielens, events=tuple(self.events), items=self.items)


# The run options a Prefect form and the CLI offer: one name per line, everything else (type,
# bounds, description, default) comes from the `Settings` field of that name.
RUN_OPTIONS = (
    "data_dir", "k", "models", "encoder", "device", "retention_days", "unavailable_items",
    "shard_users", "bot_events_per_day", "protocol", "encoder_max_length", "encoder_batch_size",
    "encode_shards", "encoder_precision", "memory_budget_gb", "eval_users",
)  # fmt: skip
# how a setting's type reads in a form (a JSON value): paths as text, tuples as lists
_FORM_TYPES = {Path: str, Path | None: str, tuple[str, ...]: list[str]}


def _form_field(name: str) -> tuple[Any, Any]:
    """An optional form field for setting `name`: None means "the setting's value"."""
    info = Settings.model_fields[name]
    kind = _FORM_TYPES.get(info.annotation, info.annotation)
    if type(None) in get_args(kind):  # `float | None`: the form's None already means unset
        kind = next(a for a in get_args(kind) if a is not type(None))
    if info.metadata:  # bounds such as ge=1, le=1000
        kind = Annotated[kind, *info.metadata]
    return kind | None, Field(None, description=setting_help(name))


class _RunOptionsBase(BaseModel):
    def settings(self) -> Settings:
        given = {k: v for k, v in self.model_dump(exclude={"refresh"}).items() if v is not None}
        if "models" in given:
            given["models"] = tuple(given["models"])
        return Settings(**given)


RunOptions = create_model(
    "RunOptions",
    __base__=_RunOptionsBase,
    __doc__="Run-level options shared by every stage; unset values come from RECSYS_* "
    "variables, then the defaults of `recsys_core.settings.Settings`.",
    __module__=__name__,
    **{name: _form_field(name) for name in RUN_OPTIONS},
    refresh=(
        bool,
        Field(
            False,
            description="Run every stage even when its inputs did not change since last time.",
        ),
    ),
)


def _tuning(name: str, text: str) -> str:
    """`text` and FinetuneConfig's default for `name` (declared there, once)."""
    default = next(f.default for f in dataclasses.fields(FinetuneConfig) if f.name == name)
    return f"{text} (default {default})."


class FinetuneOptions(BaseModel):
    """Encoder fine-tuning on co-occurring items; unset values keep FinetuneConfig's defaults."""

    split: str = Field(
        "global_temporal",
        description="Train on this split's training part: global_temporal, cold_items or all.",
    )
    evaluate: bool = Field(
        False, description="Score the content model with the base and the fine-tuned encoder."
    )
    output: str | None = Field(None, description="Also save the Hugging Face folder here.")
    pairs: int | None = Field(None, ge=2, description=_tuning("pairs", "Training pairs"))
    epochs: int | None = Field(None, ge=1, description=_tuning("epochs", "Passes over the pairs"))
    batch_size: int | None = Field(None, ge=2, description=_tuning("batch_size", "Pairs per step"))
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    learning_rate: float | None = Field(
        None, description=_tuning("learning_rate", "Peak learning rate")
    )
    max_length: int | None = Field(
        None, ge=8, description=_tuning("max_length", "Token limit while training")
    )
    window: int | None = Field(
        None, ge=1, description=_tuning("window", "Co-occurrence window in a history")
    )
    seed: int | None = Field(
        None, description=_tuning("seed", "Seed for pair sampling and training")
    )

    def config(self) -> FinetuneConfig:
        given = self.model_dump(exclude={"split", "evaluate", "output"}, exclude_none=True)
        return FinetuneConfig(**given)
