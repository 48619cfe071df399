"""The daemon's parts in-process: health server, sd_notify, metrics, state file, job safety."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from apscheduler.events import EVENT_JOB_ERROR
from apscheduler.schedulers.background import BackgroundScheduler

from rotator.audit import pipeline as audit
from rotator.config import parse_config
from rotator.daemon.fair_executor import FairExecutor
from rotator.daemon.health import HealthServer
from rotator.daemon.memory import Trimmer
from rotator.daemon.metrics import Metrics
from rotator.daemon.scheduling import Rotations
from rotator.daemon.sdnotify import Notifier, socket_address, watchdog_interval
from rotator.daemon.statefile import read_recent_requests, write_state
from rotator.errors import RecordError

FAKE_SECRET = "00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog.39AsX.LVhF"


def get(url: str, method: str = "GET") -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.read().decode(), dict(reply.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


# ---------------------------------------------------------------------------- health server


def test_health_server_routes_and_status_codes() -> None:
    """/healthz follows liveness, /readyz 503 carries the reason, /metrics as given, 404, 500 on a bug."""
    verdict = {"ready": False, "credentials": {"sf": {"ready": False, "reason": "no token yet"}}}
    answers = [(False, verdict)]

    def readiness():
        if not answers:
            raise RuntimeError("bug")
        return answers[0]

    alive = [True]
    server = HealthServer("127.0.0.1:0", readiness=readiness, liveness=lambda: alive[0],
                          metrics=lambda: (b"rotator_up 1\n", "text/plain; version=0.0.4")).start()
    try:
        base = f"http://{server.address}"
        assert server.address.startswith("127.0.0.1:") and not server.address.endswith(":0")
        assert get(base + "/healthz")[0] == 200
        status, body, headers = get(base + "/readyz")
        assert status == 503 and json.loads(body) == verdict
        assert headers["Content-Type"] == "application/json"
        answers[0] = (True, {"ready": True})
        assert get(base + "/readyz?verbose=1")[0] == 200
        status, body, headers = get(base + "/metrics")
        assert (status, body) == (200, "rotator_up 1\n") and headers["Content-Type"].startswith("text/plain")
        status, body, _ = get(base + "/healthz", method="HEAD")
        assert status == 200 and body == ""
        assert get(base + "/secrets")[0] == 404
        alive[0] = False  # the scheduler thread died: liveness fails, a restart would help
        assert get(base + "/healthz")[0] == 503
        answers.clear()
        status, body, _ = get(base + "/readyz")
        assert status == 500 and "RuntimeError" in body
    finally:
        server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(base + "/healthz", timeout=2)


def test_health_server_reports_a_taken_port() -> None:
    """A port in use is one clear error naming daemon.listen, not an OSError traceback."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(Exception, match=r"daemon\.listen: cannot listen on 127\.0\.0\.1"):
            HealthServer(f"127.0.0.1:{port}", readiness=lambda: (True, {}),
                         metrics=lambda: (b"", "text/plain")).start()


# ---------------------------------------------------------------------------- sd_notify


def test_notifier_sends_to_a_path_socket() -> None:
    """A filesystem NOTIFY_SOCKET receives READY=1 with STATUS and MAINPID as one datagram."""
    directory = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")  # AF_UNIX paths must stay short
    try:
        path = os.path.join(directory, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(5)
            notifier = Notifier({"NOTIFY_SOCKET": path})
            assert notifier.enabled and notifier.ready("3 credentials, 3 healthy")
            message = sock.recv(4096).decode().splitlines()
            assert message == ["READY=1", "STATUS=3 credentials, 3 healthy", f"MAINPID={os.getpid()}"]
            assert notifier.status("two\nlines")
            assert sock.recv(4096).decode() == "STATUS=two lines"
        os.unlink(path)
        assert notifier.watchdog() is False  # the supervisor went away: no exception
        notifier.close()
    finally:
        shutil.rmtree(directory)


def test_notifier_without_socket_is_a_no_op() -> None:
    """No NOTIFY_SOCKET (or one we cannot speak, like vsock) means every call returns False."""
    assert not Notifier({}).notify("READY=1")
    assert socket_address("vsock:2:1234") is None
    assert socket_address("@name") == "\0name" and socket_address("/run/x") == "/run/x"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "500000"}, 0.25),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_rules(env, expected) -> None:
    """WATCHDOG=1 goes every WATCHDOG_USEC/2, only for the process WATCHDOG_PID names (if set)."""
    assert watchdog_interval(env, os.getpid()) == expected


# ---------------------------------------------------------------------------- logging


def test_apscheduler_job_traceback_is_never_printed(secret_guard) -> None:
    """A job that raises: APScheduler's logger.exception comes out as one redacted line, no traceback."""
    secret_guard.add(FAKE_SECRET)
    out = io.StringIO()
    audit.configure(fmt="json", stream=out)
    failed = threading.Event()
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_listener(lambda _event: failed.set(), EVENT_JOB_ERROR)

    def job() -> None:
        session_id = FAKE_SECRET  # a local a traceback with locals would show
        raise RuntimeError(f"exchange failed for {session_id}")

    scheduler.add_job(job, id="boom")
    scheduler.start()
    try:
        assert failed.wait(10)
    finally:
        scheduler.shutdown(wait=True)
    logging.getLogger("apscheduler.executors.default").exception("direct %s", FAKE_SECRET)
    text = out.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert any(e["event"] == "library.log" and e["logger"] == "apscheduler.executors.default"
               and "raised an exception" in e["message"] for e in lines)
    assert "Traceback" not in text and "RuntimeError" not in text and FAKE_SECRET not in text


# ---------------------------------------------------------------------------- metrics, state file


def test_metrics_series_follow_credentials() -> None:
    """Series exist from the start at zero, carry only names, and vanish with the credential."""
    metrics = Metrics(process=False)
    metrics.add_credential("sf")
    text = metrics.render()[0].decode()
    assert 'rotator_rotation_total{credential="sf",result="failure"} 0.0' in text
    assert 'rotator_build_info{version="' in text and "_created" not in text
    metrics.rotation("sf", "superseded", 0.2)
    metrics.token("sf", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 2, tzinfo=UTC))
    text = metrics.render()[0].decode()
    assert 'rotator_rotation_total{credential="sf",result="superseded"} 1.0' in text
    assert 'rotator_token_expiration_timestamp_seconds{credential="sf"} 1.7672328e+09' in text
    metrics.token("sf", datetime(2026, 1, 1, tzinfo=UTC), None)
    assert "rotator_token_expiration_timestamp_seconds{" not in metrics.render()[0].decode()
    metrics.remove_credential("sf")
    assert 'credential="sf"' not in metrics.render()[0].decode()


def test_state_file_is_atomic_private_and_tolerant(tmp_path: Path) -> None:
    """state.json is 0600, leaves no temp file, and a garbled one reads as no history."""
    state_dir = tmp_path / "state"
    write_state(state_dir, {"credentials": {"sf": {"recent_requests": [1.5, 2.5]}}})
    path = state_dir / "state.json"
    assert path.stat().st_mode & 0o777 == 0o600 and state_dir.stat().st_mode & 0o777 == 0o700
    assert json.loads(path.read_text())["version"] == 1
    assert [p.name for p in state_dir.iterdir()] == ["state.json"]
    assert read_recent_requests(state_dir) == {"sf": [1.5, 2.5]}
    path.write_text("{garbled")
    assert read_recent_requests(state_dir) == {}
    assert read_recent_requests(None) == {}


def test_state_file_streams_one_credential_at_a_time(tmp_path: Path) -> None:
    """300 credentials with 1,800 request times each: written from (name, entry) pairs made on
    demand, the writer holds one credential's times at once - the whole fleet's as Python
    floats (what a dict of every entry held) is about 20 MiB."""
    import tracemalloc

    def entries():
        for index in range(300):
            yield f"c{index:03d}", {"next_run": None, "recent_requests":
                                    [1_800_000_000.0 + i + index / 1000 for i in range(1800)]}

    tracemalloc.start()
    try:
        write_state(tmp_path, {"pid": 1, "credentials": entries()})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20, f"{peak / 2**20:.1f} MiB"
    data = json.loads((tmp_path / "state.json").read_text())
    assert data["version"] == 1 and data["pid"] == 1 and len(data["credentials"]) == 300
    assert data["credentials"]["c299"]["recent_requests"][-1] == 1_800_001_799.299
    assert len(read_recent_requests(tmp_path)["c007"]) == 1800
    write_state(tmp_path, {"credentials": {}})
    assert json.loads((tmp_path / "state.json").read_text()) == {"version": 1, "credentials": {}}


# ---------------------------------------------------------------------------- one job


class _CrashingEngine:
    """Stands in for a broken Engine: rotate() raises what no module converted."""

    def __init__(self, config) -> None:
        self.config = config
        self.stores = _NoStores()

    def rotate(self, name: str, **_options: object):
        raise RuntimeError(f"bug holding {FAKE_SECRET}")

    def read_token(self, name: str):
        return None, None

    def read_key_record(self, name: str):
        raise RecordError("local:sf/key", "no key record")


class _NoStores:
    def names(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


def test_a_crashing_rotation_never_escapes_the_job(tmp_path: Path, secret_guard) -> None:
    """An unexpected exception becomes a permanent failure: slow retry (retry_max), no secret kept."""
    secret_guard.add(FAKE_SECRET)
    config = parse_config({
        "stores": {"local": {"type": "file", "path": "store"}},
        "credentials": {"sf": {"provider": "salesforce", "client_id": "x", "username": "u@example.com",
                               "key": "local:sf/key", "token": "local:sf/token",
                               "every": "30m", "retry_max": "10m"}},
    }, base_dir=tmp_path)
    now = 1_800_000_000.0
    rotations = Rotations(Metrics(process=False), workers=1, clock=lambda: now)
    rotations.use(_CrashingEngine(config))  # type: ignore[arg-type]
    first = rotations.add("sf")
    assert first.timestamp() == now  # no token: run at once
    rotations._run("sf")  # what the scheduler calls
    state = rotations.snapshot()["sf"]
    assert state["consecutive_failures"] == 1 and state["permanent_error"]
    assert state["last_error"].startswith("internal error (RuntimeError)")
    assert FAKE_SECRET not in json.dumps(state)
    assert state["next_run"] == datetime.fromtimestamp(now + 600, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ready, body = rotations.readiness()
    assert not ready and "no usable token" in body["credentials"]["sf"]["reason"]
    assert "internal error" in body["credentials"]["sf"]["reason"]


def test_request_times_are_a_compact_sliding_window() -> None:
    """The per-credential request history: oldest first, pruned from the front, 8 bytes a
    request (the cap's window holds up to an hour of them)."""
    import sys
    import tracemalloc

    from rotator import policy
    from rotator.daemon.scheduling import RequestTimes

    times = RequestTimes([1.0, 2.0])
    times.extend([3.0, 4.0])
    times.append(5.0)
    times.prune(2.0)
    assert list(times) == [3.0, 4.0, 5.0] and len(times) == 3
    assert (times[0], times[-1], times[2]) == (3.0, 5.0, 5.0)
    with pytest.raises(IndexError):
        times[3]
    assert policy.request_wait(times, now=10.0, limit=3, window=100.0) == 3.0 + 100.0 - 10.0
    times.prune(4.5)
    assert list(times) == [5.0]
    times.prune(9.0)
    assert list(times) == [] and len(times) == 0
    assert policy.request_wait(times, now=10.0, limit=1) == 0.0

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = RequestTimes()
        for i in range(18_000):
            held.append(1.7e9 + i * 0.2 + 0.123)  # distinct floats, as time.time() gives
        size = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert size / 18_000 < 10, f"{size / 18_000:.1f} bytes a request"
    assert sys.getsizeof(held) < 200  # the times live in the array, not in the object


def test_fair_executor_serves_the_least_recently_served_job_first() -> None:
    """With every worker busy, queued runs start oldest-previous-run first (never run: first),
    not in the order they were queued: an overloaded daemon serves each credential in turn."""
    scheduler = BackgroundScheduler()  # not started: the executor needs its lock and events
    executor = FairExecutor(1)
    executor.start(scheduler, "default")
    started: list[str] = []
    release = threading.Event()
    all_done = threading.Event()
    expected = 6

    def run(name: str) -> None:
        started.append(name)
        if name == "blocker":
            release.wait(10)
        if len(started) == expected:
            all_done.set()

    def submit(name: str) -> None:
        job = SimpleNamespace(id=name, max_instances=1, misfire_grace_time=None, func=run,
                              args=(name,), kwargs={}, _jobstore_alias="default")
        executor.submit_job(job, [datetime.now(UTC)])

    try:
        submit("a")
        submit("b")  # a, then b: b is the more recently served
        deadline = time.monotonic() + 10
        while executor._instances and time.monotonic() < deadline:  # both runs over
            time.sleep(0.01)
        assert not executor._instances
        submit("blocker")  # holds the only worker while the next three queue up
        for name in ("b", "c", "a"):  # queued in this order
            submit(name)
        release.set()
        assert all_done.wait(10), started
        assert started == ["a", "b", "blocker", "c", "a", "b"]
        assert executor.queued() == 0
    finally:
        release.set()
        executor.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        submit("late")


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Trimmer().available, reason="the C library has no malloc_trim (not glibc)")
def test_trimmer_hands_freed_heap_memory_back_and_not_too_often() -> None:
    """80 MiB freed in a worker thread's heap, its top pinned by one live block: the resident
    size stays up until a trim; a second trim within the interval does not run."""
    held: list[bytes] = []

    def churn() -> None:
        blocks = [bytes(2048) + bytes([i % 256]) for i in range(40_000)]  # malloc, not obmalloc
        held.append(blocks[-1])  # the heap's top stays in use: free() alone cannot shrink it
        del blocks

    worker = threading.Thread(target=churn)
    worker.start()
    worker.join()
    now = [1000.0]
    trimmer = Trimmer(clock=lambda: now[0], min_interval=10.0)
    before = _rss_mib()
    assert trimmer.trim()
    after = _rss_mib()
    assert before - after > 40, (before, after)
    now[0] += 5
    assert not trimmer.trim() and trimmer.trims == 1  # within the interval
    assert trimmer.trim(force=True) and trimmer.trims == 2
    now[0] += 10
    assert trimmer.trim() and trimmer.trims == 3
