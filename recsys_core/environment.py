"""Offline, telemetry-free defaults for the libraries the pipeline drives.

Applied when `recsys_core` is imported, before Prefect, MLflow or transformers read their
settings. Every value is a default: a variable the user already set wins.
"""

from __future__ import annotations

import os

OFFLINE_DEFAULTS: dict[str, str] = {
    # Hugging Face: never reach the hub at run time; models load from local folders.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # MLflow and Prefect: no usage reporting.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # the stages' progress lines (`recsys_core.progress`) go to the flow run's logs and console
    "PREFECT_LOGGING_EXTRA_LOGGERS": "recsys_core",
    # a temporary Prefect server (a flow run without PREFECT_API_URL outside the CLI, which
    # shares one per data directory) takes 15-25 s to start on two busy cores; Prefect's own
    # limit is 20 s
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    # artifact downloads are local copies; a bar per download only clutters logs
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # implicit's ALS is slower, not faster, with a threaded BLAS underneath it.
    "OPENBLAS_NUM_THREADS": "1",
}


def apply_defaults() -> None:
    """Set each offline default unless the variable is already present."""
    for name, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(name, value)
