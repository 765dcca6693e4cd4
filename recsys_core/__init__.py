"""recsys_core: the pipeline's library. Pure Python, polars and torch; never imports Prefect."""

from recsys_core.environment import apply_defaults

apply_defaults()

__version__ = "0.1.0"
