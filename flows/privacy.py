"""Privacy requests as a flow, so they can be triggered from the UI or a deployment.

The id to forget must not outlive the request in Prefect's own records. It is a `SecretStr`
parameter, which Prefect stores as `**********`; the flow logs no id and its failures do not
repeat it. A run whose id reached Prefect in clear (typed into a deployment's form) masks
its stored parameters when done, and compacts the data directory's Prefect database
(`DATA_DIR/prefect/prefect.db`, where `recsys` and `make ui` keep it), so the old row does
not linger in the database's free pages or its write-ahead log.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from pydantic import SecretStr

from flows.locks import exclusive_run
from flows.params import DataOptions
from recsys_core.context import RunContext
from recsys_core.pipeline.forget import forget_user

MASK = str(SecretStr("x"))  # how Prefect stores a SecretStr parameter


@flow(name="forget-user")
def forget_user_flow(user_id: SecretStr, options: DataOptions = DataOptions()) -> dict:
    """Remove a user's events, recommendations, quarantined rows and model-bundle entries,
    and purge the old file versions that still hold them."""
    settings = options.settings()
    with exclusive_run(settings.data_dir, "forget-user"):
        secret = user_id.get_secret_value() if isinstance(user_id, SecretStr) else str(user_id)
        report = forget_user(RunContext(settings), secret)
        forget_own_parameters(Path(settings.data_dir))
    get_run_logger().info(
        "forgot a user: %s rows deleted, %d old files removed, %d model files rewritten",
        report.rows_deleted, report.files_vacuumed, report.model_files_rewritten,
    )  # fmt: skip
    done = report.as_dict()
    done.pop("user_id")
    return done


def forget_own_parameters(data_dir: Path) -> bool:
    """Mask this flow run's stored `user_id` if it was stored in clear; returns whether it was.

    Args:
        data_dir: The data directory whose Prefect database is compacted afterwards.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return False
    stored = dict(context.flow_run.parameters)
    if stored.get("user_id") in (None, MASK):
        return False
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.update_flow_run(context.flow_run.id, parameters={**stored, "user_id": MASK})
    database = data_dir / "prefect" / "prefect.db"
    if not compact_prefect_database(database):
        get_run_logger().warning(
            "%s stayed busy: its free pages may still hold the id until it is compacted "
            "(sqlite3 %s 'VACUUM')", database, database,
        )  # fmt: skip
    return True


def compact_prefect_database(path: Path, timeout: float = 60.0) -> bool:
    """Rewrite a sqlite database without its free pages and empty its write-ahead log, so
    deleted or overwritten rows leave no bytes behind. Retries while the server is busy.

    Args:
        path: The database file; nothing is done when it does not exist.
        timeout: Seconds to keep trying while other connections hold it.

    Returns:
        Whether it was compacted (or does not exist).
    """
    if not path.exists():
        return True
    deadline = time.monotonic() + timeout
    with contextlib.closing(sqlite3.connect(path, timeout=5.0, isolation_level=None)) as db:
        while True:
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                db.execute("VACUUM")
                if db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0:
                    return True
            except sqlite3.OperationalError:  # locked by the server for a moment
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
