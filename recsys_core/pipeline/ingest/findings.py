"""The report's findings: bot-like users (more events on one day than a limit, kept and
reported), and the tables' totals after the run."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from recsys_core.pipeline.ingest.dedupe import SeenKeys
from recsys_core.pipeline.ingest.keys import buckets, user_hash
from recsys_core.pipeline.ingest.report import EXAMPLES, IngestReport
from recsys_core.storage import Lake


def busy_user_days(seen: SeenKeys, limit: int) -> tuple[pl.DataFrame, int]:
    """(_u, event_date, events) for each user with more than `limit` events on a date the
    run touched (stored events included), and the number of distinct user hashes among the
    keys held. Dates are counted one at a time, then the users by one streaming query."""
    found = [_no_busy()]
    users = []
    for day, hashes in seen.user_hashes_per_date():
        users.append(hashes)
        found.append(_busy(hashes, day, limit))
    if not users:
        return pl.concat(found), 0
    held = pl.DataFrame([pl.concat(users, rechunk=False)]).lazy()
    distinct = held.select(pl.col("_u").n_unique()).collect(engine="streaming").item()
    return pl.concat(found), int(distinct)


def _busy(users: pl.Series, day: date, limit: int) -> pl.DataFrame:
    """(_u, event_date, events) for the user hashes with over `limit` events on `day`.

    Users are first counted into hash buckets (about one per event, so the counts stay in
    cache): a user over the limit fills its bucket over the limit, so only the events of
    such buckets (usually none) are counted exactly.
    """
    if len(users) <= limit:
        return _no_busy()
    bucket = buckets(users, per_row=1)  # a chance bucket never reaches a useful limit
    full = np.flatnonzero(np.bincount(bucket) > limit)
    if not len(full):
        return _no_busy()
    suspects = users.filter(pl.Series(np.isin(bucket, full)))
    counts = suspects.value_counts(name="events").filter(pl.col("events") > limit)
    return counts.select(
        pl.col("_u"), pl.lit(day).alias("event_date"), pl.col("events").cast(pl.UInt32)
    )


def _no_busy() -> pl.DataFrame:
    return pl.DataFrame(schema={"_u": pl.UInt64, "event_date": pl.Date, "events": pl.UInt32})


def name_bots(lake: Lake, busy: pl.DataFrame, report: IngestReport) -> None:
    """Name the users behind the busy (user hash, date) pairs, reading only those dates."""
    if busy.is_empty():
        return
    users = (
        lake.scan("events")
        .filter(pl.col("event_date").is_in(busy["event_date"].unique().implode()))
        .select(pl.col("user_id").unique())
        .with_columns(user_hash(pl.col("user_id")).alias("_u"))
        .collect()
    )
    found = busy.join(users, on="_u").sort(
        ["events", "user_id", "event_date"], descending=[True, False, False]
    )
    report.bot_users = found["user_id"].n_unique()
    report.bot_user_days = [
        {"user_id": r["user_id"], "date": r["event_date"].isoformat(), "events": r["events"]}
        for r in found.head(EXAMPLES).iter_rows(named=True)
    ]


def totals(lake: Lake, report: IngestReport) -> None:
    """Rows, users and items in the tables after the run (users counted only when the run
    did not already count them from its keys)."""
    if lake.exists("events"):
        report.events_total = sum(lake.rows_per_partition("events", "event_date").values())
        if not report.users_total:  # this run did not see every date: count the table
            users = lake.scan("events").select(pl.col("user_id").n_unique())
            report.users_total = int(users.collect(engine="streaming").item())
    report.items_total = lake.read_or_empty("items", ["item_id"]).height
