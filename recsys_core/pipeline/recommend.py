"""Recommend: champion model -> top-K for every user -> one atomic commit of `recommendations`."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl

from recsys_core import schemas
from recsys_core.data.interactions import Interactions
from recsys_core.data.vocab import Vocabulary
from recsys_core.ranking import top_k
from recsys_core.registry.tracking import CHAMPION, Tracker
from recsys_core.settings import Settings
from recsys_core.storage import Lake


@dataclass
class PublishReport:
    model: str
    users: int = 0
    rows: int = 0
    users_with_k: int = 0
    catalog_coverage: float = 0.0
    version: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def recommend(
    lake: Lake, settings: Settings, *, run_id: str = "", progress: bool = False
) -> PublishReport:
    """Score every user with the champion and replace the recommendations table in one commit."""
    start = time.perf_counter()
    tracker = Tracker(lake, settings.experiment, settings.registered_model)
    try:
        bundle, version = tracker.load(CHAMPION)
    except LookupError as exc:
        from recsys_core.errors import InputError

        raise InputError(str(exc)) from None
    events = lake.read("events", ["user_id", "item_id", "timestamp", "value"])
    users = Vocabulary.from_values(events["user_id"])
    # tonight's histories, in the model's item index space (items it never saw are dropped)
    data = Interactions.from_events(events, users=users, items=bundle.items)
    histories = data.histories()
    model_users = bundle.users.index(users.ids)
    histories = type(histories)(
        user_index=model_users, indptr=histories.indptr, items=histories.items,
        timestamps=histories.timestamps, n_items=histories.n_items,
    )  # fmt: skip
    ranked = top_k(
        bundle.model, histories, settings.k, explain=True,
        memory_mb=settings.score_memory_mb, progress=progress,
    )  # fmt: skip
    rows, ranks = np.nonzero(ranked.items >= 0)
    table = pl.DataFrame(
        {
            "user_id": users.ids.gather(pl.Series(rows)),
            "rank": (ranks + 1).astype(np.int32),
            "item_id": bundle.items.lookup(ranked.items[rows, ranks]),
            "score": ranked.scores[rows, ranks].astype(np.float32),
            "reason_item_id": bundle.items.lookup(ranked.reasons[rows, ranks]),
        }
    ).with_columns(
        model=pl.lit(version.label),
        generated_at=pl.lit(datetime.now(UTC)).cast(schemas.UTC_TIME),
    )
    table = table.sort(["user_id", "rank"])
    per_user = table.group_by("user_id").len()
    report = PublishReport(model=version.label)
    report.users = per_user.height
    report.rows = table.height
    report.users_with_k = per_user.filter(pl.col("len") == settings.k).height
    report.catalog_coverage = round(table["item_id"].n_unique() / max(len(bundle.items), 1), 4)
    report.version = lake.write(
        "recommendations",
        table,
        mode="overwrite",
        metadata={
            "run_id": run_id, "stage": "recommend", "model": version.label,
            "rows": report.rows, "users": report.users, "k": settings.k,
            "user_coverage": round(report.users / max(users.__len__(), 1), 4),
        },
    )  # fmt: skip
    report.seconds = round(time.perf_counter() - start, 3)
    return report
