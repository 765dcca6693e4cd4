"""Progress lines: time-based (every 30 s, not per batch), with done/total, elapsed and an
estimate of the time left; the stages' loops log through them."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch

from recsys_core import progress
from recsys_core.data.interactions import UserHistories
from recsys_core.environment import OFFLINE_DEFAULTS
from recsys_core.progress import Progress, duration, track
from recsys_core.ranking import top_k


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_line_comes_after_30_seconds_and_not_before():
    clock, lines = FakeClock(), []
    shown = Progress("encode", 60_000, clock=clock, log=lines.append)
    for _ in range(1, 30):  # a batch a second, 50 items each: nothing for 29 s
        clock.t += 1
        shown.advance(50)
    assert lines == []
    clock.t += 1
    shown.advance(50)  # 30 s, 1,500 items: 58,500 left at 50 items/s = 1,170 s
    assert lines == ["encode: 1,500/60,000 items (2%), 30s elapsed, about 19m30s left"]
    clock.t += 29.9
    shown.advance(1)
    assert len(lines) == 1  # the next one is 30 s after the last, not per batch


def test_the_silent_encode_of_the_issue_logs_every_30_seconds_with_a_sane_estimate():
    """60,000 titles in batches of 64 at about 67 items/s: 15 minutes, once silent."""
    clock, lines = FakeClock(), []
    total, batch, seconds_per_batch = 60_000, 64, 64 / 66.7
    start = clock.t
    times, estimates = [start], []  # when lines came; (true seconds left, estimated)
    with Progress("encode", total, clock=clock, log=lines.append) as shown:
        for first in range(0, total, batch):
            clock.t += seconds_per_batch
            before = len(lines)
            shown.advance(min(batch, total - first))
            if len(lines) > before:
                times.append(clock.t)
                estimates.append((total / 66.7 - (clock.t - start), shown.seconds_left()))
    assert 14.5 < (clock.t - start) / 60 < 15.5
    gaps = np.diff(times)
    # a line at the first batch boundary 30 s after the last one: never per batch
    assert gaps.min() >= 30 and gaps.max() <= 30 + seconds_per_batch, gaps
    assert 28 <= len(lines) <= 30
    for truth, estimate in estimates:
        assert estimate == pytest.approx(truth, abs=2.0)  # a steady rate: an exact estimate
    assert lines[0] == "encode: 2,048/60,000 items (3%), 31s elapsed, about 14m29s left"


def test_a_step_that_never_returns_to_the_loop_still_logs_from_the_heartbeat():
    lines: list[str] = []
    logged = threading.Event()

    def log(line: str) -> None:
        lines.append(line)
        logged.set()

    with Progress("train", 3, unit="candidates", every=0.05, heartbeat=True, log=log,
                  step="fitting blend"):  # fmt: skip
        assert logged.wait(timeout=30)  # nothing advanced: only the thread can log
    count = len(lines)
    assert lines[0].startswith("train [fitting blend]: 0/3 candidates (0%), ")
    assert lines[0].endswith("time left unknown")
    threading.Event().wait(0.2)
    assert len(lines) == count  # the block ended: the heartbeat stopped


def test_an_expected_duration_gives_the_estimate_when_there_is_no_total():
    clock = FakeClock()
    shown = Progress("train", 0, expected=300.0, step="refitting blend", clock=clock)
    clock.t += 120
    assert shown.line() == "train [refitting blend]: 2m00s elapsed, about 3m00s left"
    clock.t += 400
    assert shown.seconds_left() == 0


def test_track_counts_sizes_and_names_the_running_step(monkeypatch):
    clock, lines = FakeClock(), []
    monkeypatch.setattr(progress, "now", clock)
    monkeypatch.setattr(progress.LOGGER, "info", lines.append)
    seen = []
    for batch in track([[1, 2], [3, 4, 5], [6]], "encode", total=6, size=len,
                       step=lambda b: f"batch of {len(b)}"):  # fmt: skip
        seen.append(batch)
        clock.t += 31
    assert seen == [[1, 2], [3, 4, 5], [6]]
    assert lines == [
        "encode [batch of 2]: 2/6 items (33%), 31s elapsed, about 1m02s left",
        "encode [batch of 3]: 5/6 items (83%), 1m02s elapsed, about 12s left",
        "encode [batch of 1]: 6/6 items (100%), 1m33s elapsed, about 0s left",
    ]


def test_ranking_logs_users_done_through_the_progress_logger(monkeypatch, caplog):
    clock = FakeClock()
    monkeypatch.setattr(progress, "now", clock)
    n_users, n_items = 40, 50

    class Ticking(StaticScores):
        def score(self, histories):
            clock.t += 31  # every chunk takes 31 s
            return super().score(histories)

    model = Ticking(torch.randn(n_users, n_items))
    caplog.set_level(logging.INFO, logger="recsys_core.progress")
    # a budget of a few users per chunk: several chunks
    top_k(model, empty_histories(n_users, n_items), 5, memory_mb=0, what="recommend shard 1/1")
    lines = [r.getMessage() for r in caplog.records if r.name == "recsys_core.progress"]
    assert lines, "no progress line from a ranking of several 31-second chunks"
    assert lines[0].startswith("recommend shard 1/1: ")
    assert f"/{n_users} users" in lines[0] and "elapsed" in lines[0] and "left" in lines[0]


def test_prefect_sends_the_progress_lines_to_the_flow_run_logs():
    assert OFFLINE_DEFAULTS["PREFECT_LOGGING_EXTRA_LOGGERS"] == "recsys_core"
    assert progress.LOGGER.getEffectiveLevel() <= logging.INFO


@pytest.mark.parametrize(
    "seconds, text", [(0, "0s"), (59.4, "59s"), (60, "1m00s"), (3599, "59m59s"), (7800, "2h10m")]
)
def test_duration(seconds, text):
    assert duration(seconds) == text


# -- helpers ------------------------------------------------------------------------------------
class StaticScores:
    """A model whose scores are given: (users, items)."""

    def __init__(self, scores: torch.Tensor):
        self.scores = scores

    def factors(self, histories):
        return None

    def sparse_score(self, histories):
        return None

    def score_floats_per_user(self, n_items: int) -> int:
        return 3 * n_items

    def score(self, histories):
        return self.scores[torch.from_numpy(histories.user_index)]

    def score_into(self, histories, out):
        out.copy_(self.score(histories))


def empty_histories(n_users: int, n_items: int) -> UserHistories:
    return UserHistories(
        user_index=np.arange(n_users), indptr=np.zeros(n_users + 1, dtype=np.int64),
        items=np.zeros(0, dtype=np.int64), timestamps=np.zeros(0, dtype=np.int64),
        n_items=n_items,
    )  # fmt: skip


def test_the_running_units_share_counts_down_and_an_expected_one_replaces_the_average():
    clock, lines = FakeClock(), []
    shown = Progress("train", 4, unit="candidates", clock=clock, log=lines.append)
    for _ in range(3):  # three candidates of 40 s each
        clock.t += 40
        shown.advance()
    assert shown.seconds_left() == 40  # the fourth at the average
    clock.t += 30
    assert shown.seconds_left() == 10  # ... of which 30 s have run
    clock.t += 60
    assert shown.seconds_left() == 0  # past the average: no more than that is known
    shown.advance(0, step="fitting blend", expected=240)  # the last one takes longer
    clock.t += 60
    assert shown.line() == (
        "train [fitting blend]: 3/4 candidates (75%), 4m30s elapsed, about 3m00s left"
    )
    shown.advance()
    assert shown.seconds_left() == 0


def test_an_expected_first_unit_has_an_estimate_and_later_units_use_the_average():
    clock = FakeClock()
    shown = Progress("train", 3, unit="candidates", clock=clock)
    assert shown.seconds_left() is None  # nothing to estimate from
    shown.advance(0, expected=100)
    clock.t += 30
    assert shown.seconds_left() == 70
    clock.t += 20
    shown.advance()  # it took 50 s: the two left at 50 s each
    assert shown.seconds_left() == 100


def test_a_blend_is_expected_to_take_as_long_as_its_members_models_did():
    from recsys_core.models.registry import ModelSpec
    from recsys_core.pipeline.train import expected_seconds

    blend = ModelSpec("blend", {"members": ["sparse_ease", "sparse_ease(history_half_life=5)",
                                            "itemknn", "content(whiten=1.0)"]})  # fmt: skip
    assert expected_seconds(blend, {}) is None  # nothing finished: nothing to go by
    took = {"popularity": 10.0, "sparse_ease": 90.0, "content": 20.0}
    # itemknn did not run as a candidate: the finished ones' average, 40 s
    assert expected_seconds(blend, took) == pytest.approx(90 + 90 + 40 + 20)
    assert expected_seconds(ModelSpec("ease"), took) is None  # the average
