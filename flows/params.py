"""Typed flow parameters: Prefect renders them as a form in the UI."""

from __future__ import annotations

from pydantic import BaseModel, Field

from recsys_core.data.sources import SourceSpec
from recsys_core.encoders.finetune import FinetuneConfig
from recsys_core.settings import DEFAULT_MODELS, Settings


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


class RunOptions(BaseModel):
    """Run-level options shared by every stage; unset values come from RECSYS_* variables."""

    data_dir: str | None = Field(None, description="Data directory (default ./lake).")
    k: int | None = Field(None, ge=1, le=1000, description="Recommendations per user (20).")
    models: list[str] | None = Field(
        None, description=f"Candidate models (default: {', '.join(DEFAULT_MODELS)})."
    )
    encoder: str | None = Field(
        None, description="Hugging Face id or local folder (default: bundled all-MiniLM-L6-v2)."
    )
    device: str | None = Field(None, description="auto, cpu, cuda or mps.")
    refresh: bool = Field(
        False, description="Run every stage even when its inputs did not change since last time."
    )
    retention_days: float | None = Field(
        None, ge=0, le=30, description="Days replaced recommendations stay restorable (7)."
    )
    unavailable_items: str | None = Field(
        None, description="File of item ids never to recommend (.txt, or a table with item_id)."
    )
    shard_users: int | None = Field(None, ge=1, description="Users per recommend shard.")
    bot_events_per_day: int | None = Field(
        None, ge=1, description="Ingest reports users with more events on one day (1000)."
    )
    protocol: str | None = Field(
        None,
        description="Evaluation protocol that picks the champion (default user_temporal; "
        "also global_temporal, leave_one_out, user_random).",
    )
    encoder_max_length: int | None = Field(
        None, ge=8, le=8192, description="Encoder token limit per item text (256)."
    )
    encoder_batch_size: int | None = Field(
        None, ge=1, description="Texts per encoder batch (64 on CPU, 1,024 on CUDA)."
    )
    encode_shards: int | None = Field(
        None, ge=1, le=4096, description="Shards the items to encode are split into (1)."
    )
    encoder_precision: str | None = Field(
        None, description="auto (fp32 on CPU, bf16 on CUDA), fp32, bf16, fp16 or int8 (CPU)."
    )
    memory_budget_gb: float | None = Field(
        None, gt=0, description="Memory a model may use while training (60% of the machine's)."
    )
    eval_users: int | None = Field(
        None, ge=100, description="Validation users ranked per candidate, at most (20,000)."
    )

    def settings(self) -> Settings:
        given = {k: v for k, v in self.model_dump(exclude={"refresh"}).items() if v is not None}
        if "models" in given:
            given["models"] = tuple(given["models"])
        return Settings(**given)


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
    pairs: int | None = Field(None, ge=2, description="Training pairs (2,048).")
    epochs: int | None = Field(None, ge=1, description="Passes over the pairs (1).")
    batch_size: int | None = Field(None, ge=2, description="Pairs per step (32).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    learning_rate: float | None = Field(None, description="Peak learning rate (3e-5).")
    max_length: int | None = Field(None, ge=8, description="Token limit while training (128).")
    window: int | None = Field(None, ge=1, description="Co-occurrence window in a history (5).")
    seed: int | None = Field(None, description="Seed for pair sampling and training (42).")

    def config(self) -> FinetuneConfig:
        given = self.model_dump(exclude={"split", "evaluate", "output"}, exclude_none=True)
        return FinetuneConfig(**given)
