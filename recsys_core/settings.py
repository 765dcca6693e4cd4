"""Run-level settings, read from `RECSYS_*` environment variables with CLI overrides."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODELS = ("popularity", "ease", "content")


class Settings(BaseSettings):
    """Settings shared by every stage. Model hyper-parameters live in each model's config."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore", frozen=True)

    data_dir: Path = Field(Path("lake"), description="Root folder of the tables and MLflow store.")
    k: int = Field(20, ge=1, le=1000, description="Recommendations per user.")
    encoder: str | None = Field(
        None,
        description="Hugging Face model id or local folder; default: the bundled all-MiniLM-L6-v2.",
    )
    encoder_max_length: int = Field(256, ge=8, le=8192)
    encoder_batch_size: int = Field(64, ge=1)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    encoder_batch_tokens: int | None = Field(
        None,
        ge=8,
        description="Most padded tokens per encoder batch (texts x longest text); default "
        "16,384 on CPU and 131,072 on CUDA. An encoder_batch_size left unset means 64 texts "
        "per batch on CPU and 1,024 on CUDA.",
    )
    encoder_precision: str = Field(
        "auto", description="auto (bf16 autocast on CUDA, fp32 elsewhere), fp32, bf16 or fp16."
    )
    encode_shards: int = Field(
        1, ge=1, le=4096, description="Shards the items to encode are split into (one task each)."
    )
    seed: int = 42
    models: tuple[str, ...] = Field(DEFAULT_MODELS, description="Candidate models to train.")
    selection_metric: str = Field(
        "ndcg@10", description="Validation metric that picks the champion."
    )
    min_improvement: float = Field(
        0.0, ge=0.0, description="How much a challenger must beat the champion's metric by."
    )
    holdout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    registered_model: str = Field("recsys", description="MLflow registered model name.")
    experiment: str = Field("recsys-nightly", description="MLflow experiment name.")
    score_memory_mb: int = Field(
        512, ge=16, description="Memory budget for one chunk of the user x item score matrix."
    )
