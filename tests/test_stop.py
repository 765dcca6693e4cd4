"""Stop when asked: SIGINT and SIGTERM stop every thread within a batch, commit nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from recsys_core import cancel
from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.data.synth import SynthConfig, write_synthetic
from recsys_core.models import registered
from recsys_core.pipeline import ingest, plan_encode
from recsys_core.settings import Settings
from recsys_core.storage import Lake

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def handlers():
    """Default SIGINT/SIGTERM behaviour for the test, whatever the runner started with (a
    background job of a shell ignores SIGINT); the runner's handlers come back after."""
    saved = {s: signal.getsignal(s) for s in cancel.SIGNALS}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    cancel.clear_stop()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    cancel.clear_stop()


def test_stopped_is_not_an_exception_so_retry_code_cannot_swallow_it():
    assert issubclass(cancel.Stopped, BaseException)
    assert not issubclass(cancel.Stopped, Exception)
    cancel.clear_stop()
    cancel.raise_if_stopped()  # nothing requested: a no-op
    cancel.request_stop("first")
    cancel.request_stop("second")
    try:
        with pytest.raises(cancel.Stopped, match="first"):
            try:
                cancel.raise_if_stopped()
            except Exception:  # what candidate-skipping and retry loops do
                pytest.fail("Stopped was caught as an Exception")
        assert cancel.stop_requested() and cancel.stop_reason() == "first"
    finally:
        cancel.clear_stop()
    assert not cancel.stop_requested()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_main_thread_and_a_worker_thread(handlers, signum):
    stopped: list[BaseException] = []

    def worker() -> None:
        try:
            while True:
                cancel.raise_if_stopped()
                time.sleep(0.01)
        except cancel.Stopped as exc:
            stopped.append(exc)

    with cancel.stop_on_signals():
        assert getattr(signal.getsignal(signum), "recsys_stop_handler", False)
        thread = threading.Thread(target=worker)
        thread.start()
        with pytest.raises(cancel.Stopped, match=f"{signum.name} received"):
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler interrupts this
        thread.join(timeout=5)
    assert not thread.is_alive() and len(stopped) == 1
    # the handlers in place before the block are back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_handler_that_was_there_first_still_runs(handlers):
    calls: list[int] = []

    class Bridge(BaseException):  # what Prefect's SIGTERM handler raises
        pass

    def previous(signum, frame):
        calls.append(signum)
        raise Bridge

    signal.signal(signal.SIGTERM, previous)
    with cancel.stop_on_signals():
        with pytest.raises(Bridge):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert cancel.stop_requested()  # the flag is set before the old handler runs
    assert calls == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is previous


def test_nothing_is_installed_off_the_main_thread(handlers):
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(cancel.install_signal_handlers()))
    thread.start()
    thread.join()
    assert results == [False]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize(
    "name", sorted(n for n, c in registered().items() if "cuda" in c.capabilities.devices)
)
def test_training_checks_for_a_stop_at_every_batch(name, planted, monkeypatch):
    from recsys_core.models import FitOptions, TrainingData, create, training
    from recsys_core.testing.recommenders import group_embeddings

    checks: list[int] = []

    def check() -> None:
        checks.append(1)
        if len(checks) == 3:  # a Ctrl-C arrives during the third batch
            raise cancel.Stopped("SIGINT received")

    monkeypatch.setattr(training, "raise_if_stopped", check)  # the one training loop
    data, _ = planted
    model = create(name, {"epochs": 50, "batch_size": 4})
    embeddings = group_embeddings(data) if model.uses_text else None
    with pytest.raises(cancel.Stopped):
        model.fit(TrainingData(data, embeddings), FitOptions(seed=0))
    assert len(checks) == 3  # checked once per batch, stopped at the first check after


def test_ranking_checks_for_a_stop_at_every_chunk(planted):
    from recsys_core.models import FitOptions, TrainingData, create
    from recsys_core.ranking import top_k

    data, _ = planted
    model = create("popularity")
    model.fit(TrainingData(data, None), FitOptions(seed=0))
    cancel.request_stop("SIGTERM received")
    try:
        with pytest.raises(cancel.Stopped, match="SIGTERM"):
            top_k(model, data.histories(), 3)
    finally:
        cancel.clear_stop()
    assert len(top_k(model, data.histories(), 3).items) == len(data.histories())


# -- the real thing: `recsys encode` in a subprocess ------------------------------------
@pytest.fixture(scope="module")
def long_text_lake(tmp_path_factory) -> Path:
    """2,000 items of 150-300 words: minutes of work for MiniLM on 2 cores."""
    root = tmp_path_factory.mktemp("long-text")
    config = SynthConfig(users=50, items=2000, events=2000, min_words=150, max_words=300, seed=1)
    events, items = write_synthetic(config, root / "source")
    lake = Lake(root / "lake")
    ingest(RunContext.of(lake.root), SourceSpec(events=(str(events),), items=str(items)))
    return lake.root


def _default_sigint() -> None:
    # a terminal's Ctrl-C reaches a foreground process whose SIGINT is not ignored; the test
    # runner may itself be a background job with SIGINT ignored, which children inherit
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_recsys_encode_stops_within_seconds_and_commits_nothing(long_text_lake, tmp_path, signum):
    lake = Lake(tmp_path / "lake")
    shutil.copytree(long_text_lake, lake.root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(RECSYS_ENCODE_PART_SECONDS="1", PREFECT_HOME=str(tmp_path / "prefect"))
    command = [sys.executable, "-m", "flows.cli", "encode", "--data-dir", str(lake.root),
               "--batch-size", "8"]  # fmt: skip
    with open(tmp_path / "stderr", "w+") as stderr:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
            preexec_fn=_default_sigint,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 45
            while not list((lake.staging("encode").root).rglob("part-*.parquet")):  # encoding began
                assert proc.poll() is None, "recsys encode ended before staging anything"
                assert time.monotonic() < deadline, "no part staged within 45 s"
                time.sleep(0.2)
            proc.send_signal(signum)
            sent = time.monotonic()
            code = proc.wait(timeout=30)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr.seek(0)
        output = stderr.read()
    assert code == 130, output[-2000:]
    assert took < 10, f"exited {took:.1f} s after {signum.name}"
    lines = [line for line in output.splitlines() if line.startswith("stopped:")]
    assert lines == [f"stopped: {signum.name} received; nothing was committed"]
    assert not lake.exists("item_embeddings")
    # what it encoded stays staged, and the next run with this encoder takes it over
    plan = plan_encode(RunContext(Settings(data_dir=lake.root)))
    assert 0 < plan.resumed < 2000
    assert plan.resumed + sum(len(s.item_ids) for s in plan.shards) == 2000
