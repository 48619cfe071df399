"""state.json never lags a finished run by more than the write throttle (issue #20).

The daemon rewrites state.json at most every STATE_WRITE_INTERVAL (a write per run costs more
than the rotations with many credentials on short intervals), so a change right after a write
is deferred: a trailing write must follow, carrying the latest state, or `rotator status`
shows a stale last_success. Driven through Daemon._changed (what every finished run calls)
with a stand-in for the scheduler's snapshot; the file is real.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.config import load_config
from rotator.daemon import service as daemon_module
from rotator.daemon.service import STATE_WRITE_INTERVAL, Daemon
from tests.conftest import write_config


class Runs:
    """The two things the state writer asks of the scheduler: the entries and the summary."""

    def __init__(self) -> None:
        self.finished = 0
        self._lock = threading.Lock()

    def finish(self) -> None:
        with self._lock:
            self.finished += 1

    def entries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        with self._lock:
            yield "sf", {"runs": self.finished}

    def summary(self) -> str:
        return "1 credentials, 1 healthy"


@pytest.fixture
def wired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Daemon, Runs, list[float]]:
    config_path = write_config(tmp_path / "rotator.toml", login_url="https://login.salesforce.com",
                               daemon={"state_dir": "state"})
    daemon = Daemon(config_path, env={})
    daemon.config = load_config(config_path)
    runs = Runs()
    daemon.rotations = runs  # type: ignore[assignment]
    writes: list[float] = []
    real = daemon_module.write_state

    def counted(state_dir: Path, data: dict[str, Any]) -> None:
        writes.append(time.monotonic())
        real(state_dir, data)

    monkeypatch.setattr(daemon_module, "write_state", counted)
    return daemon, runs, writes


def recorded_runs(tmp_path: Path) -> int | None:
    try:
        return json.loads((tmp_path / "state" / "state.json").read_text())["credentials"]["sf"]["runs"]
    except FileNotFoundError:
        return None


def wait_for(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def test_first_change_is_written_at_once(wired, tmp_path: Path) -> None:
    daemon, runs, writes = wired
    runs.finish()
    daemon._changed()
    assert recorded_runs(tmp_path) == 1 and len(writes) == 1


def test_a_burst_is_throttled_and_its_last_run_written_within_the_interval(wired, tmp_path: Path) -> None:
    daemon, runs, writes = wired
    runs.finish()
    daemon._changed()  # written at once; the interval starts now
    began = time.monotonic()
    for _ in range(50):
        runs.finish()
        daemon._changed()
    burst = time.monotonic() - began
    assert len(writes) <= 2 + int(burst / STATE_WRITE_INTERVAL), (len(writes), burst)
    # the trailing write carries the last run, one interval after the first write at most
    # (plus whatever a busy machine adds: the deadline is generous, the write is not late)
    wait_for(lambda: recorded_runs(tmp_path) == 51, STATE_WRITE_INTERVAL + 8)
    first_to_trailing = writes[-1] - writes[0]
    assert first_to_trailing >= STATE_WRITE_INTERVAL * 0.9, writes  # throttled, not one per run
    assert len(writes) <= 3 + int(burst / STATE_WRITE_INTERVAL)


def test_a_lone_change_after_a_write_is_not_lost(wired, tmp_path: Path) -> None:
    """One run finishing just after a write (the schedule test's case) reaches the file."""
    daemon, runs, _writes = wired
    daemon._changed()  # e.g. the write at start-up
    assert recorded_runs(tmp_path) == 0
    runs.finish()
    daemon._changed()
    assert recorded_runs(tmp_path) == 0  # deferred, not dropped:
    wait_for(lambda: recorded_runs(tmp_path) == 1, STATE_WRITE_INTERVAL + 8)


def test_stop_flushes_at_once(wired, tmp_path: Path) -> None:
    """A pending deferred write does not make the final state wait (or get lost at exit)."""
    daemon, runs, writes = wired
    daemon._changed()
    runs.finish()
    daemon._changed()  # deferred
    daemon._write_state()  # what stop() does after the last run
    assert recorded_runs(tmp_path) == 1
    count = len(writes)
    time.sleep(STATE_WRITE_INTERVAL + 0.5)  # the deferred timer was cancelled: no extra write
    assert len(writes) == count
