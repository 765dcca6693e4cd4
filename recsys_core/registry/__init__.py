"""Model artifacts (safetensors + JSON + Parquet), MLflow tracking and the champion gate."""
