"""Run settings: one typed configuration with a group of options per stage.

Every option is declared once, here: its type, bounds, default and description. Its name is
unique across the groups and is the same everywhere a user meets it: the environment variable
`RECSYS_<NAME>`, the CLI option `--<name>` and the field of a Prefect form. Stages read their
own group (`settings.train.models`, `settings.recommend.k`); the data directory is the only
option outside a group.

Settings take options by their flat names (`Settings(k=5, models=("ease",))`, or
`settings.updated(k=5)`), so a caller never needs to know which group holds an option.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

# the blend is meant to win; the single models are its baselines and fallbacks
DEFAULT_MODELS = ("popularity", "ease", "content", "blend")
ENV_PREFIX = "RECSYS_"
# where the tables and the MLflow store live unless a run names another folder
DEFAULT_DATA_DIR = Path("lake")

Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split at `sep` outside parentheses, brackets and double-quoted strings.

    `ease,sasrec(augment="crop,mask", epochs=2)` gives two parts, not four.
    """
    parts, depth, quoted, current = [], 0, False, []
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "([{":
            depth += 1
        elif not quoted and char in ")]}":
            depth -= 1
        if char == sep and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def written_list(value: Any) -> Any:
    """A list option written as text: a JSON list, or items separated by top-level commas
    (`ease(reg=300, window=5),content`); other values as they are."""
    if not isinstance(value, str):
        return value
    if value.lstrip().startswith("["):
        return json.loads(value)
    return [part.strip() for part in split_top_level(value) if part.strip()]


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ComputeSettings(_Group):
    """Where models compute and how they draw random numbers."""

    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    seed: int = Field(42, description="Seeds every random choice of a run: splits, fits, samples.")
    score_memory_mb: int = Field(
        512, ge=16, description="Memory budget for one chunk of the user x item score matrix."
    )


class IngestSettings(_Group):
    """How ingest reads, checks and deduplicates a source."""

    bot_events_per_day: int = Field(
        1000, ge=1, description="Events by one user on one day above which ingest reports a bot."
    )
    max_item_text_chars: int = Field(
        20_000, ge=100, description="Longer item text fields are cut at ingest (and flagged)."
    )
    ingest_batch_rows: int = Field(
        500_000, ge=1, description="Event rows read, checked and deduplicated at a time."
    )
    dedupe_key_memory_mb: int = Field(
        256,
        ge=0,
        description="Memory for duplicate-detection keys (24 bytes per event) before the keys "
        "of the least recently seen dates are spilled to a temporary folder.",
    )
    ingest_flush_rows: int = Field(
        1_000_000, ge=1, description="New rows buffered before they are written as Parquet files."
    )


class EmbeddingSettings(_Group):
    """Which item embeddings a run makes and reads: the encoder and how it sees the text."""

    encoder: str | None = Field(
        None,
        description="Hugging Face id, local model folder, or a fine-tuned version "
        "(models:/recsys-encoder/N); default: the bundled all-MiniLM-L6-v2.",
    )
    encoder_max_length: int = Field(
        256, ge=8, le=8192, description="Encoder token limit per item text."
    )
    encoder_precision: Precision = Field(
        "auto",
        description="auto (bf16 autocast on CUDA, fp32 elsewhere), fp32, bf16, fp16, or int8 "
        "(CPU only: dynamic int8 quantization, vectors within a cosine of ~0.99 of fp32 and "
        "stored under their own encoder id ending in :int8).",
    )


class EncodeSettings(_Group):
    """How the encode stage spreads its work: batches and shards."""

    encoder_batch_size: int | None = Field(
        None, ge=1, description="Texts per encoder batch; default 64 on CPU and 1,024 on CUDA."
    )
    encoder_batch_tokens: int | None = Field(
        None,
        ge=8,
        description="Most padded tokens per encoder batch (texts x longest text); default "
        "16,384 on CPU and 131,072 on CUDA.",
    )
    encode_shards: int = Field(
        1, ge=1, le=4096, description="Shards the items to encode are split into (one task each)."
    )
    encode_part_seconds: float = Field(
        30.0,
        ge=0.0,
        description="Seconds of encoding between a shard's staged part files: what a killed "
        "or stopped encode loses is at most this much work per shard.",
    )


class TrainSettings(_Group):
    """Which candidates train, how they are judged, and what a fit may use."""

    models: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_MODELS, description="Candidate models to train."
    )
    protocol: str = Field(
        "user_temporal",
        description="Evaluation protocol that picks the champion: user_temporal, "
        "global_temporal, leave_one_out, user_random (see recsys_core.data.splits).",
    )
    holdout_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Share of events held out to evaluate candidates."
    )
    selection_metric: str = Field(
        "ndcg@10", description="Validation metric that picks the champion."
    )
    min_improvement: float = Field(
        0.0, ge=0.0, description="How much a challenger must beat the champion's metric by."
    )
    eval_users: int = Field(
        20_000,
        ge=100,
        description="Validation users ranked against the whole catalog per candidate; a "
        "seeded sample of this many when there are more (the report gives the sample size).",
    )
    memory_budget_gb: float | None = Field(
        None,
        gt=0,
        description="Memory a model may use while training; models that need more (EASE's "
        "dense item x item matrices) are replaced by a sparse stand-in or left out when they "
        "are default candidates, and refused when requested. Default: 60% of the machine's "
        "memory.",
    )

    _models_as_text = field_validator("models", mode="before")(written_list)

    def memory_budget_bytes(self) -> int:
        """`memory_budget_gb` in bytes, or 60% of the machine's physical memory."""
        if self.memory_budget_gb is not None:
            return int(self.memory_budget_gb * 2**30)
        return int(0.6 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


class RecommendSettings(_Group):
    """What the recommend stage publishes, and how long replaced nights stay restorable."""

    k: int = Field(20, ge=1, le=1000, description="Recommendations per user.")
    shard_users: int = Field(
        100_000, ge=1, description="Users per recommend shard (one staged file, one task)."
    )
    unavailable_items: Path | None = Field(
        None,
        description="File of item ids never to recommend (.txt one per line, or CSV/TSV/"
        "JSONL/Parquet with an item_id column).",
    )
    retention_days: float = Field(
        7.0,
        ge=0.0,
        le=30.0,
        description="Days a replaced recommendations version stays readable and restorable "
        "(the rollback window) before vacuum deletes its files; at most 30, the Delta log's "
        "own retention.",
    )
    # guardrails: tonight's table is compared with the published one before the commit; a
    # breach holds the night (readers keep the published table) unless `force`
    guard_min_user_coverage: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="Share of the published table's users that tonight's table must still "
        "hold, or the night is held (0 turns this guardrail off).",
    )
    guard_min_catalog_ratio: float = Field(
        0.2,
        ge=0.0,
        description="Distinct items recommended tonight relative to the published table (in "
        "the top ranks both have), below which the night is held (0 turns it off).",
    )
    guard_min_list_overlap: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="Mean share of a user's list (the top ranks both tables have) that "
        "tonight keeps from the published table, below which the night is held (0 turns it "
        "off).",
    )
    guard_max_score_shift: float = Field(
        1.0,
        ge=0.0,
        description="Largest move of the median score, in widths of the published table's "
        "10th-90th percentile range, when the champion is the version that made the published "
        "table (another version scores on a scale of its own); above it the night is held.",
    )
    guard_max_bad_scores: int = Field(
        0, ge=0, description="NaN or infinite scores tonight's table may hold before it is held."
    )
    force: bool = Field(
        False,
        description="Publish even when a guardrail holds the night (the breach is still reported).",
    )


class QuerySettings(_Group):
    """How one user's list is ranked live for a text query (`recsys recs --query`)."""

    query_weight: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of query relevance when ranking with --query."
    )


class TrackingSettings(_Group):
    """Where runs and models are tracked in MLflow."""

    registered_model: str = Field("recsys", description="MLflow registered model name.")
    experiment: str = Field("recsys-nightly", description="MLflow experiment name.")
    log_weights_max_mb: int = Field(
        512, ge=0, description="Largest candidate weights file logged to MLflow each night (MB)."
    )
    mlflow_ui_url: str = Field(
        "http://127.0.0.1:5000", description="Base URL of the MLflow UI, for links in reports."
    )


class RuntimeSettings(_Group):
    """What runs the work: the task runner, a Dask cluster, a remote encode, model plugins."""

    task_runner: str = Field(
        "thread",
        description="thread (one machine) or dask (RECSYS_DASK_ADDRESS or a local cluster).",
    )
    dask_address: str | None = Field(None, description="Scheduler of an existing Dask cluster.")
    dask_workers: int = Field(2, ge=1, description="Workers of the local Dask cluster.")
    encode_deployment: str | None = Field(
        None,
        description="Run the encode stage as this deployment (e.g. encode/encode-gpu on the gpu "
        "work pool) instead of inside the nightly run.",
    )
    model_modules: str = Field(
        "",
        description="Comma-separated modules on the Python path that register more models "
        "(a model is one file; see recsys_core/models/registry.py).",
    )


class _EnvironmentOfEachOption(EnvSettingsSource):
    """`RECSYS_<NAME>` for every option, in whichever group it is declared (a group has no
    variable of its own)."""

    def __call__(self) -> dict[str, Any]:
        found = self._read(Settings.model_fields.items())
        for group, model in GROUPS.items():
            if values := self._read(model.model_fields.items()):
                found[group] = values
        return found

    def _read(self, fields: Iterable[tuple[str, FieldInfo]]) -> dict[str, Any]:
        values = {}
        for name, info in fields:
            if name in GROUPS:
                continue
            value, _, is_complex = self.get_field_value(info, name)
            if value is not None:
                values[name] = self.prepare_field_value(name, info, value, is_complex)
        return values


class Settings(BaseSettings):
    """The settings of a run: the data directory and one group of options per stage.

    Model hyper-parameters live in each model's config, not here.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    data_dir: Path = Field(
        DEFAULT_DATA_DIR, description="Root folder of the tables and MLflow store."
    )
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    encode: EncodeSettings = Field(default_factory=EncodeSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    recommend: RecommendSettings = Field(default_factory=RecommendSettings)
    query: QuerySettings = Field(default_factory=QuerySettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _EnvironmentOfEachOption(settings_cls)

    @model_validator(mode="before")
    @classmethod
    def _options_into_their_groups(cls, data: Any) -> Any:
        """Options given by flat name (`k=5`) go into their group; given ones win."""
        if not isinstance(data, dict) or not OPTION_GROUP.keys() & data.keys():
            return data
        out = {key: value for key, value in data.items() if key not in OPTION_GROUP}
        for name, value in data.items():
            group = OPTION_GROUP.get(name)
            if group is None:
                continue
            given = out.get(group, {})
            if isinstance(given, BaseModel):
                given = given.model_dump(exclude_unset=True)
            out[group] = {**given, name: value}
        return out

    def updated(self, **changes: Any) -> Settings:
        """These settings with some options changed, by flat name (`data_dir` included).

        Options that were set stay set (what `model_fields_set` tells a stage: e.g. models
        asked for rather than the default candidates); the environment is not read again.
        """
        return type(self).model_validate({**self.model_dump(exclude_unset=True), **changes})

    @classmethod
    def option(cls, name: str) -> FieldInfo:
        """The declaration of option `name` (a flat name, `data_dir` included)."""
        group = OPTION_GROUP.get(name)
        model = GROUPS[group] if group else cls
        if name not in model.model_fields or name in GROUPS:
            raise KeyError(f"no option {name!r}")
        return model.model_fields[name]

    @classmethod
    def variable(cls, name: str) -> str:
        """The environment variable that sets option `name` (`RECSYS_K` for `k`)."""
        cls.option(name)  # a name that is no option fails here
        return f"{ENV_PREFIX}{name.upper()}"

    def value(self, name: str) -> Any:
        """The value of option `name` (a flat name)."""
        group = OPTION_GROUP.get(name)
        return getattr(getattr(self, group) if group else self, name)


# the groups, by the name a stage reads them under (`settings.train`), as Settings declares them
GROUPS: dict[str, type[_Group]] = {
    name: info.annotation for name, info in Settings.model_fields.items() if name != "data_dir"
}
# set by the environment of the process that runs a stage (a deployment's worker, a cluster),
# not per run: the CLI and the Prefect forms do not offer them
SERVICE_GROUPS = ("tracking", "runtime")


def _group_of_each_option() -> dict[str, str]:
    found: dict[str, str] = {}
    for group, model in GROUPS.items():
        for name in model.model_fields:
            if name in found or name in Settings.model_fields:
                raise TypeError(f"option {name!r} of group {group!r} is declared twice")
            found[name] = group
    return found


OPTION_GROUP = _group_of_each_option()  # flat option name -> its group
