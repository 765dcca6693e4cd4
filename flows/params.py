"""Typed flow parameters: Prefect renders them as a form in the UI, and the CLI's options
come from the same fields.

Each flow's `options` form is derived from the option groups its stages read
(`flows.options.OFFERED`): one optional field per option, with the option's type, bounds and
description; an empty field means "the `RECSYS_*` variable of the process that runs the flow,
else the default". Kept free of torch and polars, so the CLI starts fast.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from flows.options import describe, offered_options, without_none
from recsys_core.encoders.finetune_config import FinetuneConfig
from recsys_core.settings import OPTION_GROUP, Settings

if TYPE_CHECKING:
    from recsys_core.data.sources import SourceSpec


class Source(BaseModel):
    """Where raw data comes from. Left empty, an empty data directory gets the bundled
    MovieLens-100K sample and one that holds data is left as it is (the run goes on with
    the data it has)."""

    movielens: str | None = Field(
        None, description="A GroupLens MovieLens folder (ml-100k, ml-latest, ml-25m, ml-32m)."
    )
    events: list[str] = Field(
        default_factory=list, description="Generic event files, folders or globs (repeatable)."
    )
    items: str | None = Field(None, description="Generic item catalog file.")
    sample: str | None = Field(
        None,
        description="A bundled sample by name: movielens-100k (MovieLens-100K from the recbole "
        "wheel). With no source at all, only an empty data directory gets it.",
    )

    def spec(self) -> SourceSpec:
        from recsys_core.data.sources import SourceSpec

        return SourceSpec(
            movielens=self.movielens, events=tuple(self.events), items=self.items,
            sample=self.sample,
        )  # fmt: skip


# how an option's type reads in a form (a JSON value): paths as text, tuples as lists
_FORM_TYPES = {Path: str, tuple[str, ...]: list[str]}


def _form_field(name: str, info: FieldInfo) -> tuple[Any, Any]:
    """An optional form field for option `name`: None means "the setting's value"."""
    kind = without_none(info.annotation)
    kind = _FORM_TYPES.get(kind, kind)
    if info.metadata:  # bounds such as ge=1, le=1000
        kind = Annotated[kind, *info.metadata]
    return kind | None, Field(None, description=describe(name, info))


class OptionsForm(BaseModel):
    """The options of one run, as a form (CLI and Prefect UI); unset ones stay None."""

    model_config = ConfigDict(extra="forbid")

    def settings(self) -> Settings:
        """The run's settings: the options filled in, the rest from `RECSYS_*` or defaults."""
        given = self.model_dump(exclude_none=True, include={"data_dir", *OPTION_GROUP})
        return Settings(**given)


def options_form(name: str, command: str, **extras: tuple[Any, Any]) -> type[OptionsForm]:
    """The form of the options `command` offers (and of the data directory)."""
    fields = {"data_dir": Settings.option("data_dir"), **offered_options(command)}
    return create_model(
        name,
        __base__=OptionsForm,
        __doc__=f"Options of the {command} run; unset values come from RECSYS_* variables, "
        "then the defaults of `recsys_core.settings`.",
        __module__=__name__,
        **{option: _form_field(option, info) for option, info in fields.items()},
        **extras,
    )


RunOptions = options_form(
    "RunOptions", "nightly",
    refresh=(bool, Field(
        False, description="Run every stage even when its inputs did not change since last time."
    )),
)  # fmt: skip
IngestOptions = options_form("IngestOptions", "ingest")
EncodeOptions = options_form("EncodeOptions", "encode")
TrainOptions = options_form("TrainOptions", "train")
RecommendOptions = options_form("RecommendOptions", "recommend")
EncoderOptions = options_form("EncoderOptions", "finetune-encoder")
DataOptions = options_form("DataOptions", "forget-user")


def _tuning(name: str, text: str) -> str:
    """`text` and FinetuneConfig's default for `name` (declared there, once)."""
    default = next(f.default for f in dataclasses.fields(FinetuneConfig) if f.name == name)
    return f"{text} (default {default})."


class FinetuneOptions(BaseModel):
    """Encoder fine-tuning on co-occurring items; unset values keep FinetuneConfig's defaults
    (the seed is the run's)."""

    split: str = Field(
        "global_temporal",
        description="Train only on this split's training part: global_temporal (what `train` "
        "evaluates on), cold_items, or all (every event).",
    )
    evaluate: bool = Field(
        False,
        description="Score the content model on the split's held-out part with the base and "
        "the fine-tuned encoder (Recall/NDCG@10,20).",
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
        None, ge=1, description=_tuning("window", "Items this many positions apart co-occur")
    )

    def config(self, settings: Settings) -> FinetuneConfig:
        given = self.model_dump(exclude={"split", "evaluate", "output"}, exclude_none=True)
        return FinetuneConfig(seed=settings.compute.seed, **given)
