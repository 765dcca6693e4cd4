"""Run-level settings, read from `RECSYS_*` environment variables with CLI overrides."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# the blend is meant to win; the single models are its baselines and fallbacks
DEFAULT_MODELS = ("popularity", "ease", "content", "blend")


class Settings(BaseSettings):
    """Settings shared by every stage. Model hyper-parameters live in each model's config."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore", frozen=True)

    data_dir: Path = Field(Path("lake"), description="Root folder of the tables and MLflow store.")
    k: int = Field(20, ge=1, le=1000, description="Recommendations per user.")
    encoder: str | None = Field(
        None,
        description="Hugging Face id, local model folder, or a fine-tuned version "
        "(models:/recsys-encoder/N); default: the bundled all-MiniLM-L6-v2.",
    )
    encoder_max_length: int = Field(
        256, ge=8, le=8192, description="Encoder token limit per item text."
    )
    encoder_batch_size: int = Field(
        64, ge=1, description="Texts per encoder batch (on CUDA 1,024 when left unset)."
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    encoder_batch_tokens: int | None = Field(
        None,
        ge=8,
        description="Most padded tokens per encoder batch (texts x longest text); default "
        "16,384 on CPU and 131,072 on CUDA. An encoder_batch_size left unset means 64 texts "
        "per batch on CPU and 1,024 on CUDA.",
    )
    encoder_precision: str = Field(
        "auto",
        description="auto (bf16 autocast on CUDA, fp32 elsewhere), fp32, bf16, fp16, or int8 "
        "(CPU only: dynamic int8 quantization, vectors within a cosine of ~0.99 of fp32 and "
        "stored under their own encoder id ending in :int8). Checked when the encoder loads.",
    )
    encode_shards: int = Field(
        1, ge=1, le=4096, description="Shards the items to encode are split into (one task each)."
    )
    seed: int = Field(42, description="Seeds every random choice of a run: splits, fits, samples.")
    models: tuple[str, ...] = Field(DEFAULT_MODELS, description="Candidate models to train.")
    model_modules: str = Field(
        "",
        description="Comma-separated modules on the Python path that register more models "
        "(a model is one file; see recsys_core/models/registry.py).",
    )
    selection_metric: str = Field(
        "ndcg@10", description="Validation metric that picks the champion."
    )
    min_improvement: float = Field(
        0.0, ge=0.0, description="How much a challenger must beat the champion's metric by."
    )
    holdout_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Share of events held out to evaluate candidates."
    )
    protocol: str = Field(
        "user_temporal",
        description="Evaluation protocol that picks the champion: user_temporal, "
        "global_temporal, leave_one_out, user_random (see recsys_core.data.splits).",
    )
    log_weights_max_mb: int = Field(
        512, ge=0, description="Largest candidate weights file logged to MLflow each night (MB)."
    )
    registered_model: str = Field("recsys", description="MLflow registered model name.")
    experiment: str = Field("recsys-nightly", description="MLflow experiment name.")
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
    mlflow_ui_url: str = Field(
        "http://127.0.0.1:5000", description="Base URL of the MLflow UI, for links in reports."
    )
    memory_budget_gb: float | None = Field(
        None,
        gt=0,
        description="Memory a model may use while training; models that need more (EASE's "
        "dense item x item matrices) are replaced by a sparse stand-in or left out when they "
        "are default candidates, and refused when requested. Default: 60% of the machine's "
        "memory.",
    )
    eval_users: int = Field(
        20_000,
        ge=100,
        description="Validation users ranked against the whole catalog per candidate; a "
        "seeded sample of this many when there are more (the report gives the sample size).",
    )
    score_memory_mb: int = Field(
        512, ge=16, description="Memory budget for one chunk of the user x item score matrix."
    )
    retention_days: float = Field(
        7.0,
        ge=0.0,
        le=30.0,
        description="Days a replaced recommendations version stays readable and restorable "
        "(the rollback window) before vacuum deletes its files; at most 30, the Delta log's "
        "own retention.",
    )
    unavailable_items: Path | None = Field(
        None,
        description="File of item ids never to recommend (.txt one per line, or CSV/TSV/"
        "JSONL/Parquet with an item_id column).",
    )
    shard_users: int = Field(
        100_000, ge=1, description="Users per recommend shard (one staged file, one task)."
    )
    query_weight: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of query relevance when ranking with --query."
    )
    bot_events_per_day: int = Field(
        1000, ge=1, description="Events by one user on one day above which ingest reports a bot."
    )
    max_item_text_chars: int = Field(
        20_000, ge=100, description="Longer item text fields are cut at ingest (and flagged)."
    )

    def memory_budget_bytes(self) -> int:
        """`memory_budget_gb` in bytes, or 60% of the machine's physical memory."""
        if self.memory_budget_gb is not None:
            return int(self.memory_budget_gb * 2**30)
        return int(0.6 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
