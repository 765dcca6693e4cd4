"""Privacy requests as a flow, so they can be triggered from the UI or a deployment."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.params import DataOptions
from recsys_core.context import RunContext
from recsys_core.pipeline.forget import forget_user


@flow(name="forget-user")
def forget_user_flow(user_id: str, options: DataOptions = DataOptions()) -> dict:
    """Remove a user's events, recommendations, quarantined rows and model-bundle entries,
    and purge the old file versions that still hold them."""
    report = forget_user(RunContext(options.settings()), user_id)
    get_run_logger().info(
        "forgot user %r: %s rows deleted, %d old files removed, %d model files rewritten",
        user_id, report.rows_deleted, report.files_vacuumed, report.model_files_rewritten,
    )  # fmt: skip
    return report.as_dict()
