"""Forget a user: their rows leave every table, old file versions and model artifacts.

Deleting rows from a Delta table only hides them from new reads: older versions keep the
files, and the transaction log keeps per-file statistics that may hold the id. So after the
deletes every touched table is vacuumed with zero retention and its log is cut back to a
fresh checkpoint. Registered model bundles carry users' histories (to score them offline);
the user is removed from those files as well. The cost: older versions of these tables can
no longer be read or rolled back to.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from recsys_core.context import RunContext
from recsys_core.errors import InputError
from recsys_core.storage import Lake

USER_TABLES = ("events", "recommendations")


@dataclass
class ForgetReport:
    user_id: str
    rows_deleted: dict[str, int] = field(default_factory=dict)
    files_vacuumed: int = 0
    model_files_rewritten: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def forget_user(context: RunContext, user_id: str) -> ForgetReport:
    """Remove every trace of `user_id` from the data directory.

    Args:
        context: The data directory.
        user_id: External user id, exactly as ingested.

    Raises:
        InputError: The id is empty, or no table holds it.
    """
    lake = context.lake
    if not user_id or not user_id.strip():
        raise InputError("forget-user: the user id is empty")
    report = ForgetReport(user_id=user_id)
    literal = "'" + user_id.replace("'", "''") + "'"
    for table in USER_TABLES:
        if lake.exists(table):
            report.rows_deleted[table] = lake.delete_rows(table, f"user_id = {literal}")
    report.rows_deleted["quarantine"] = _forget_in_quarantine(lake, user_id)
    report.model_files_rewritten = _forget_in_model_bundles(lake, user_id)
    if not any(report.rows_deleted.values()) and not report.model_files_rewritten:
        # the id is not repeated: this line may be stored in a run's logs and state
        raise InputError(f"forget-user: no data of user with the given id under {lake.root}")
    for table in (*USER_TABLES, "quarantine"):
        if lake.exists(table):
            report.files_vacuumed += lake.purge_history(table)
    return report


def _forget_in_quarantine(lake: Lake, user_id: str) -> int:
    """Quarantined rows are raw text (CSV fields or a JSON object): drop those that hold the
    id as a whole field or value."""
    if not lake.exists("quarantine"):
        return 0
    rows = lake.read("quarantine")
    edge = r"""[\s,;|\t"':{}\[\]]"""
    pattern = f"(^|{edge}){re.escape(user_id)}({edge}|$)"
    hit = rows["raw"].str.contains(pattern).fill_null(False)
    if not hit.any():
        return 0
    lake.write("quarantine", rows.filter(~hit), mode="overwrite", metadata={"stage": "forget"})
    return int(hit.sum())


def _forget_in_model_bundles(lake: Lake, user_id: str) -> int:
    """Blank the user in every stored bundle under the MLflow store.

    The user's vocabulary entry becomes a random tombstone id, their history row becomes
    empty, and rows of per-user weight tensors (names, or their last dotted part inside a
    blend, starting with `user`) become zero.
    Indexes do not move, so the bundle still loads and scores every other user identically.
    """
    rewritten = 0
    for users_file in sorted(lake.mlflow_dir.rglob("users.parquet")):
        folder = users_file.parent
        users = pl.read_parquet(users_file)
        hit = users["id"] == user_id
        if not hit.any():
            continue
        row = int(users.filter(hit)["index"][0])
        tombstone = f"forgotten-{uuid.uuid4().hex}"
        users.with_columns(
            pl.when(hit).then(pl.lit(tombstone)).otherwise(pl.col("id")).alias("id")
        ).write_parquet(users_file)
        rewritten += 1
        history_file = folder / "history.safetensors"
        if history_file.exists():
            save_file(_empty_history_row(load_file(str(history_file)), row), str(history_file))
            rewritten += 1
        weights_file = folder / "weights.safetensors"
        if weights_file.exists():
            weights = load_file(str(weights_file))
            per_user = {
                name
                for name, tensor in weights.items()
                if name.rsplit(".", 1)[-1].startswith("user")  # also blend members' `m0.user...`
                and tensor.ndim
                and tensor.shape[0] == users.height
            }
            if per_user:
                for name in per_user:
                    weights[name][row] = 0
                save_file(weights, str(weights_file))
                rewritten += 1
    return rewritten


def _empty_history_row(history: dict[str, torch.Tensor], row: int) -> dict[str, torch.Tensor]:
    indptr = history["indptr"].numpy()
    lo, hi = int(indptr[row]), int(indptr[row + 1])
    keep = np.ones(len(history["items"]), dtype=bool)
    keep[lo:hi] = False
    new_indptr = indptr.copy()
    new_indptr[row + 1 :] -= hi - lo
    return {
        "user_index": history["user_index"],
        "indptr": torch.from_numpy(new_indptr),
        "items": torch.from_numpy(history["items"].numpy()[keep].copy()),
        "timestamps": torch.from_numpy(history["timestamps"].numpy()[keep].copy()),
    }
