"""`rotator run` as systemd and Kubernetes run it: a real child process against a live endpoint.

Every daemon writes its stdout/stderr to `<tmp_path>/*.out|*.err`, which the secret guard
scans, so no test here can pass while a token leaks into the daemon's output.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.audit import events
from tests.conftest import CLIENT_ID, USERNAME, rotator_subprocess_env, write_config

pytestmark = pytest.mark.integration

# Short intervals keep the suite fast; the policy's behaviour does not depend on the scale.
EVERY_1S = {"every": "1s", "jitter": "0s"}
FAST = {"every": "2s", "jitter": "0s", "retry_min": "1s", "retry_max": "2s", "timeout": "1s"}
# Retries (250ms .. 1s) come well before the next scheduled run (2s): backoff is observable.
FAULTY = {"every": "2s", "jitter": "0s", "retry_min": "250ms", "retry_max": "1s", "timeout": "500ms"}
METRIC_NAMES = (
    "rotator_rotation_total", "rotator_rotation_duration_seconds_bucket",
    "rotator_token_last_success_timestamp_seconds", "rotator_certificate_expiration_timestamp_seconds",
    "rotator_credential_ready", "rotator_token_requests_total", "rotator_build_info",
)


# ---------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class DaemonProc:
    """One `python -m rotator --config X run` child; its output goes to files under tmp_path."""

    def __init__(self, config: Path, tmp_path: Path, label: str, port: int | None,
                 env: dict[str, str] | None = None) -> None:
        self.out_path, self.err_path = tmp_path / f"{label}.out", tmp_path / f"{label}.err"
        self.port = port
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rotator", "--config", str(config), "run"],
                stdout=out, stderr=err, env=rotator_subprocess_env(**(env or {})),
            )

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        lines = self.out_path.read_text().splitlines()
        found = [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]
        return [e for e in found if name is None or e["event"] == name]

    def wait_event(self, name: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        def hit() -> dict[str, Any] | None:
            self.assert_alive()
            for event in self.events(name):
                if all(event.get(k) == v for k, v in match.items()):
                    return event
            return None

        return wait_for(hit, timeout, f"{name} {match or ''}")

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def readyz(self) -> tuple[int, dict[str, Any]]:
        status, body = self.http("/readyz")
        return status, json.loads(body) if body else {}

    def wait_ready(self, timeout: float = 10) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            self.assert_alive()
            status, body = self.readyz()
            return body if status == 200 else None

        return wait_for(ready, timeout, "/readyz 200")

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"daemon exited: {self.err_path.read_text()[-2000:]}"

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10) -> tuple[int, float]:
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - began


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProc]]:
    started: list[DaemonProc] = []

    def start(config: Path, *, label: str = "daemon", port: int | None = None,
              env: dict[str, str] | None = None) -> DaemonProc:
        daemon = DaemonProc(config, tmp_path, label, port, env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(10)


@pytest.fixture
def key_files(tmp_path: Path, rsa_keys) -> tuple[Path, Path]:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    (keys / "server.key").write_text(rsa_keys[0].key_pem)
    (keys / "server.crt").write_text(rsa_keys[0].cert_pem)
    return keys / "server.key", keys / "server.crt"


def make_config(tmp_path: Path, endpoint, *, creds: dict[str, dict[str, Any]], port: int | None = None,
                name: str = "rotator.toml", **daemon: Any) -> Path:
    settings = {"listen": f"127.0.0.1:{port}" if port else "", "state_dir": "state",
                "shutdown_timeout": "5s", **daemon}
    return write_config(tmp_path / name, login_url=endpoint.url, credentials=creds, daemon=settings)


def import_keys(run_cli, endpoint, config: Path, key_files: tuple[Path, Path], *names: str) -> None:
    """One key pair for every credential, its certificate uploaded to the connected app."""
    key, cert = key_files
    for name in names:
        result = run_cli("--config", config, "keys", "import", name, "--key", key, "--cert", cert)
        assert result.code == 0, result.err
    endpoint.register_app(CLIENT_ID, cert.read_text(), users=[USERNAME])


def token_path(config: Path, name: str = "sf") -> Path:
    return config.parent / "store" / name / "token.json"


def read_state(config: Path) -> dict[str, Any]:
    return json.loads((config.parent / "state" / "state.json").read_text())["credentials"]


def metric(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == (f"{name}{{{want}}}" if labels else name):
            return float(value)
    return None


def assert_clean_output(daemon: DaemonProc) -> None:
    """Every line is a catalogued audit event; nothing on stderr; no traceback anywhere."""
    out = daemon.out_path.read_text()
    assert "Traceback" not in out and "Traceback" not in daemon.err_path.read_text()
    assert daemon.err_path.read_text() == ""
    for event in daemon.events():
        assert events.validate(event) == [], event


# ---------------------------------------------------------------------------- schedule, health, stop


def test_rotates_on_schedule_serves_health_and_stops_on_sigterm(
    tmp_path, endpoint, run_cli, key_files, start_daemon, secret_guard
) -> None:
    """Tokens refresh every interval; /readyz turns 200; /metrics has the names; SIGTERM exits 0."""
    port = free_port()
    config = make_config(tmp_path, endpoint, creds={"sf": EVERY_1S}, port=port)
    import_keys(run_cli, endpoint, config, key_files, "sf")
    daemon = start_daemon(config, port=port)
    body = daemon.wait_ready()
    assert body["credentials"]["sf"]["ready"] and body["stores"]["local"]["reachable"]
    assert daemon.http("/healthz")[0] == 200 and daemon.http("/nope")[0] == 404
    first = json.loads(token_path(config).read_text())["access_token"]
    wait_for(lambda: len(endpoint.issued) >= 5, 15, "four scheduled rotations")
    stored = json.loads(token_path(config).read_text())["access_token"]
    assert stored != first and stored in endpoint.issued and endpoint.is_valid(stored)
    times = [attempt.at for attempt in endpoint.token_log]
    # every 1s: neither hammering nor twice as slow. The first request (at start) is off the
    # trigger's grid; the scheduled ones are on it, each late by however long the machine
    # made it wait. A late run shortens the next gap, so single gaps say little on a busy
    # machine; their mean over the scheduled runs does: it moves only by the (one-sided)
    # lateness of the first and last run, divided by the number of gaps.
    scheduled = times[1:5]
    mean_gap = (scheduled[-1] - scheduled[0]) / (len(scheduled) - 1)
    assert 0.75 <= mean_gap <= 1.8, [round(b - a, 3) for a, b in itertools.pairwise(times)]

    sent_before = endpoint.token_requests
    status, text = daemon.http("/metrics")
    sent_after = endpoint.token_requests  # a rotation may land while we scrape
    secret_guard.seen("/metrics", text)
    assert status == 200
    for name in METRIC_NAMES:
        assert name in text, name
    assert metric(text, "rotator_rotation_total", credential="sf", result="success") >= 2
    assert metric(text, "rotator_rotation_total", credential="sf", result="failure") == 0
    assert sent_before <= metric(text, "rotator_token_requests_total", credential="sf") <= sent_after
    assert metric(text, "rotator_credential_ready", credential="sf") == 1
    assert metric(text, "rotator_build_info", version="0.1.0") == 1
    assert all(token not in text for token in endpoint.issued)

    # state.json is rewritten at most every STATE_WRITE_INTERVAL (2 s), with a trailing write
    # that catches the last run: it holds the success within that interval (plus slack for load)
    state = wait_for(lambda: (s := read_state(config)["sf"])["last_success"] and s, 10,
                     "state.json to record a success")
    assert state["consecutive_failures"] == 0 and state["last_error"] is None and state["next_run"]
    assert (config.parent / "state" / "state.json").stat().st_mode & 0o777 == 0o600
    row = json.loads(run_cli("--config", config, "status", "--json").out)[0]
    assert row["next_run"] and row["last_success"] and row["last_error"] is None
    assert row["state_written_at"].endswith("Z") and 0 <= row["state_age_s"] <= 30

    code, took = daemon.stop()
    assert code == 0 and took < 5
    assert read_state(config)["sf"]["next_run"] is None  # stopped: nothing scheduled
    names = [e["event"] for e in daemon.events()]
    assert names[0] == "config.loaded" and names[-1] == "daemon.stopped"
    assert names.index("daemon.started") < names.index("daemon.stopping")
    assert daemon.events("daemon.stopping")[0]["signal"] == "SIGTERM"
    assert daemon.events("daemon.started")[0]["listen"] == f"127.0.0.1:{port}"
    assert_clean_output(daemon)


@pytest.mark.parametrize(("delay", "timeout", "finished"), [(1.5, "5s", True), (10.0, "1s", False)])
def test_sigterm_waits_for_running_rotation_within_bound(
    tmp_path, endpoint, run_cli, key_files, start_daemon, delay, timeout, finished
) -> None:
    """SIGTERM lets an in-flight rotation finish if it can within shutdown_timeout, else exits anyway."""
    config = make_config(tmp_path, endpoint, creds={"sf": {**FAST, "timeout": "20s"}},
                         shutdown_timeout=timeout)
    import_keys(run_cli, endpoint, config, key_files, "sf")
    endpoint.set_fault("slow", count=1, delay=delay)
    daemon = start_daemon(config)
    wait_for(lambda: endpoint.token_requests == 1, 10, "the first token request")
    code, took = daemon.stop()
    assert code == 0
    stopped = daemon.events("daemon.stopped")[0]
    if finished:
        assert took < 5
        assert token_path(config).exists() and daemon.events("rotation.succeeded")
        assert stopped["abandoned_rotations"] == 0
    else:
        assert took < 6  # 1s bound plus interpreter exit (slow on a busy machine), not the 10s stall
        assert not token_path(config).exists()
        assert stopped["abandoned_rotations"] == 1
    assert_clean_output(daemon)


# ---------------------------------------------------------------------------- reload


def test_sighup_adds_removes_and_rejects_invalid_config(
    tmp_path, endpoint, run_cli, key_files, start_daemon
) -> None:
    """SIGHUP adds a credential; an invalid file is refused while rotation goes on; removal stops jobs."""
    port = free_port()
    config = make_config(tmp_path, endpoint, creds={"sf": EVERY_1S}, port=port)
    import_keys(run_cli, endpoint, config, key_files, "sf")
    daemon = start_daemon(config, port=port)
    daemon.wait_ready()

    make_config(tmp_path, endpoint, creds={"sf": EVERY_1S, "sf2": EVERY_1S}, port=port)
    import_keys(run_cli, endpoint, config, key_files, "sf2")
    daemon.signal(signal.SIGHUP)
    reloaded = daemon.wait_event("config.reloaded")
    assert reloaded["added"] == ["sf2"] and reloaded["credentials"] == 2
    wait_for(lambda: token_path(config, "sf2").exists(), 15, "sf2's first token")
    assert daemon.wait_ready()["credentials"]["sf2"]["ready"]

    good = config.read_text()
    config.write_text(good.replace('every = "1s"', 'every = "soon"', 1))
    daemon.signal(signal.SIGHUP)
    rejected = daemon.wait_event("config.rejected")
    assert rejected["diagnosis"].startswith("credentials.sf.every:")
    written = len(daemon.events("token.written"))
    wait_for(lambda: len(daemon.events("token.written")) >= written + 2, 15, "rotation after rejection")
    assert set(daemon.readyz()[1]["credentials"]) == {"sf", "sf2"}  # the old config still runs

    make_config(tmp_path, endpoint, creds={"sf": EVERY_1S}, port=port)
    daemon.signal(signal.SIGHUP)
    removal = daemon.wait_event("config.reloaded", removed=["sf2"])
    assert removal["credentials"] == 1
    wait_for(lambda: len(daemon.events("token.written")) >= written + 4, 6, "sf rotating on")
    seen = daemon.events()
    later = seen[seen.index(removal) + 1:]  # a run already under way may finish; none starts
    assert later and not any(e["event"] == "rotation.started" and e["credential"] == "sf2"
                             for e in later)
    assert 'credential="sf2"' not in daemon.http("/metrics")[1]
    assert set(read_state(config)) == {"sf"}
    assert daemon.stop()[0] == 0
    assert_clean_output(daemon)


# ---------------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", ["5xx", "429", "html", "reset", "slow"])
def test_endpoint_faults_back_off_and_recover(
    tmp_path, endpoint, run_cli, key_files, start_daemon, kind
) -> None:
    """Under a fault the daemon stays up, backs off within policy bounds, keeps the last good token
    byte for byte, turns not-ready past the deadline, and recovers once the fault clears."""
    port = free_port()
    config = make_config(tmp_path, endpoint, creds={"sf": FAULTY}, port=port)
    import_keys(run_cli, endpoint, config, key_files, "sf")
    daemon = start_daemon(config, port=port)
    daemon.wait_ready()
    endpoint.set_fault(kind, retry_after=2, delay=1.5)
    # a rotation answered just before the fault may still be writing: every rotation started
    # so far has ended (the ones starting from now on meet the fault)
    ends = {"rotation.succeeded", "rotation.failed", "rotation.skipped", "rotation.superseded"}
    wait_for(lambda: (names := [e["event"] for e in daemon.events()]).count("rotation.started")
             == sum(name in ends for name in names), 10, "the rotation in flight to end")
    good = token_path(config).read_bytes()
    before = endpoint.token_requests
    began = time.monotonic()

    def faulted_twice() -> bool:
        daemon.assert_alive()
        assert token_path(config).read_bytes() == good
        return endpoint.token_requests - before >= 2

    wait_for(faulted_twice, 10, f"two faulted attempts ({kind})", every=0.02)

    def not_ready() -> dict[str, Any] | None:
        assert token_path(config).read_bytes() == good
        status, body = daemon.readyz()
        return body if status == 503 else None

    if kind == "5xx":  # readiness follows the deadline, whatever the fault (once suffices)
        body = wait_for(not_ready, 10, "/readyz 503 once the token is past 2 * every")
        assert "refresh deadline" in body["credentials"]["sf"]["reason"]
    window = time.monotonic() - began
    min_gap = 2.0 if kind == "429" else 0.25  # Retry-After: 2 (backoff alone: <= 1s), else retry_min
    assert endpoint.token_requests - before <= 1 + window / min_gap
    # state.json is rewritten at most every STATE_WRITE_INTERVAL (2 s): wait for the failure
    state = wait_for(lambda: (s := read_state(config)["sf"])["consecutive_failures"] >= 1 and s,
                     10, "state.json to record the failure")
    assert state["last_error"]
    shown = run_cli("--config", config, "status")
    assert "consecutive failures" in shown.out and "last error:" in shown.out
    assert token_path(config).read_bytes() == good

    endpoint.clear_faults()
    wait_for(lambda: token_path(config).read_bytes() != good, 15, "recovery")
    fresh = json.loads(token_path(config).read_text())["access_token"]
    assert endpoint.is_valid(fresh)
    daemon.wait_ready(15)
    wait_for(lambda: len(endpoint.token_log) >= endpoint.token_requests, 10, "late log entries")
    times = sorted(a.at for a in endpoint.token_log[before:])
    gaps = [b - a for a, b in itertools.pairwise(times)]  # after failure 1, 2, ...
    # Each retry follows the backoff: at least retry_min (or Retry-After), at most the k-th
    # ceiling min(retry_max, retry_min * 2**k) plus the faulted request itself and slack for a
    # busy machine (a retry can only be late, never early); the first retries come well
    # before the next scheduled run would have (2s).
    spent = 0.5 if kind == "slow" else 0.0  # the 500ms client timeout
    for k, gap in enumerate(gaps, start=1):
        ceiling = 2.0 if kind == "429" else min(1.0, 0.25 * 2**k)
        assert min_gap * 0.9 <= gap <= ceiling + spent + 1.0, (k, gaps)
    failed = daemon.events("rotation.failed")
    assert failed and all(e["retryable"] for e in failed)
    assert daemon.stop()[0] == 0
    assert_clean_output(daemon)


# ---------------------------------------------------------------------------- start-up and restarts


def test_start_up_reuses_fresh_tokens_and_replaces_stale_or_unreadable(
    tmp_path, endpoint, run_cli, key_files, start_daemon
) -> None:
    """At start a fresh token is reused (no login), a stale or garbled one is replaced at once;
    a restart with everything fresh sends zero token requests."""
    port = free_port()
    hourly = {"every": "1h", "jitter": "0s"}
    config = make_config(tmp_path, endpoint, creds={"fresh": hourly, "stale": hourly, "garbled": hourly},
                         port=port)
    import_keys(run_cli, endpoint, config, key_files, "fresh", "stale", "garbled")
    assert run_cli("--config", config, "rotate", "fresh", "stale").code == 0
    stale = json.loads(token_path(config, "stale").read_text())
    stale["issued_at"] = "2020-01-01T00:00:00Z"
    token_path(config, "stale").write_text(json.dumps(stale))
    token_path(config, "garbled").parent.mkdir(mode=0o700, exist_ok=True)
    token_path(config, "garbled").write_text("{not json")
    fresh = token_path(config, "fresh").read_bytes()
    before = endpoint.token_requests

    daemon = start_daemon(config, port=port, label="first")
    daemon.wait_ready()
    time.sleep(0.3)
    assert endpoint.token_requests == before + 2
    assert token_path(config, "fresh").read_bytes() == fresh
    assert json.loads(token_path(config, "stale").read_text())["issued_at"] != "2020-01-01T00:00:00Z"
    assert json.loads(token_path(config, "garbled").read_text())["credential"] == "garbled"
    next_run = read_state(config)["fresh"]["next_run"]
    assert next_run > time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3000))
    assert daemon.stop()[0] == 0

    again = start_daemon(config, port=port, label="second")
    again.wait_ready()
    time.sleep(0.5)
    assert endpoint.token_requests == before + 2  # a restart (or a crash loop) logs in 0 times
    assert again.stop()[0] == 0
    assert_clean_output(daemon)
    assert_clean_output(again)


def test_hourly_request_cap_holds_across_restarts(
    tmp_path, endpoint, run_cli, key_files, start_daemon
) -> None:
    """At max_requests_per_hour the daemon waits (rotation.skipped); a restart keeps the count."""
    config = make_config(tmp_path, endpoint, creds={
        "sf": {"every": "1s", "jitter": "0s", "max_requests_per_hour": 2}})
    import_keys(run_cli, endpoint, config, key_files, "sf")
    daemon = start_daemon(config)
    capped = daemon.wait_event("rotation.skipped", timeout=8)
    assert "max_requests_per_hour" in capped["reason"]
    assert endpoint.token_requests == 2
    time.sleep(1.0)
    assert endpoint.token_requests == 2
    state = wait_for(lambda: (s := read_state(config)["sf"])["last_error"] and s, 10,
                     "state.json to record the cap")
    assert len(state["recent_requests"]) == 2 and "max_requests_per_hour" in state["last_error"]
    assert state["next_run"] > time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3000))
    assert daemon.stop()[0] == 0

    again = start_daemon(config, label="restarted")
    again.wait_event("daemon.started")
    time.sleep(1.0)
    assert endpoint.token_requests == 2
    assert again.stop()[0] == 0
    assert_clean_output(again)


def test_more_due_work_than_workers_serves_every_credential_in_turn(
    tmp_path, endpoint, run_cli, key_files, start_daemon
) -> None:
    """Overload: 6 credentials every 1 s, one worker, each token request answered 0.3 s late
    (at most ~3 runs a second for 6 due). Every credential still gets its turn: the runs that
    cannot start are folded into the one already queued (rotator_runs_coalesced_total), none is
    dropped for waiting too long. With a misfire grace of one interval, the credentials at the
    back of the queue were dropped on every turn and never rotated after the first second."""
    port = free_port()
    names = [f"c{i}" for i in range(6)]
    config = make_config(tmp_path, endpoint, creds={n: EVERY_1S for n in names}, port=port,
                         workers=1)
    import_keys(run_cli, endpoint, config, key_files, *names)
    endpoint.set_fault("slow", delay=0.3)
    daemon = start_daemon(config, port=port)

    def served() -> dict[str, int]:
        counts = dict.fromkeys(names, 0)
        for event in daemon.events("rotation.succeeded"):
            counts[event["credential"]] += 1
        return counts

    wait_for(lambda: sum(served().values()) >= 24, 30, "24 rotations")
    counts = served()
    assert max(counts.values()) - min(counts.values()) <= 2, counts  # in turn, not by luck
    status, text = daemon.http("/metrics")
    assert status == 200
    assert (metric(text, "rotator_runs_coalesced_total") or 0) >= 1
    assert daemon.stop()[0] == 0
    assert_clean_output(daemon)


# ---------------------------------------------------------------------------- replicas


def test_two_daemons_on_one_file_store_never_clobber(
    tmp_path, endpoint, run_cli, key_files, start_daemon
) -> None:
    """Two replicas: every write follows the one before it (CAS), the race loser is superseded."""
    config_a = make_config(tmp_path, endpoint, creds={"sf": FAST | {"timeout": "20s"}}, name="a.toml")
    config_b = make_config(tmp_path, endpoint, creds={"sf": FAST | {"timeout": "20s"}}, name="b.toml",
                           state_dir="state-b")
    import_keys(run_cli, endpoint, config_a, key_files, "sf")
    endpoint.set_fault("slow", count=2, delay=2.5)  # both first requests overlap: a real race
    a = start_daemon(config_a, label="a")
    b = start_daemon(config_b, label="b")
    wait_for(lambda: len(a.events("token.written") + b.events("token.written")) >= 3, 15,
             "three rotations between the two")
    assert a.stop()[0] == 0 and b.stop()[0] == 0

    writes = sorted(a.events("token.written") + b.events("token.written"), key=lambda e: e["ts"])
    assert writes[0]["previous_version"] is None
    for earlier, later in itertools.pairwise(writes):
        assert later["previous_version"] == earlier["version"], "a write did not follow the last one"
    superseded = a.events("rotation.superseded") + b.events("rotation.superseded")
    assert len(superseded) >= 1
    assert not a.events("rotation.failed") and not b.events("rotation.failed")
    record = json.loads(token_path(config_a).read_text())
    assert record["rotation_id"] == writes[-1]["rotation_id"]
    assert endpoint.is_valid(record["access_token"])
    assert_clean_output(a)
    assert_clean_output(b)


# ---------------------------------------------------------------------------- systemd


def test_sd_notify_ready_watchdog_reload_and_stopping(
    tmp_path, endpoint, run_cli, key_files, start_daemon
) -> None:
    """NOTIFY_SOCKET (abstract) gets READY=1, WATCHDOG=1 every 250ms, RELOADING=1/READY=1, STOPPING=1."""
    config = make_config(tmp_path, endpoint, creds={"sf": {"every": "1h"}})
    import_keys(run_cli, endpoint, config, key_files, "sf")
    name = f"rotator-test-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        daemon = start_daemon(config, env={"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "500000"})

        def receive(until: str) -> list[str]:
            got = []
            while True:
                message = sock.recv(4096).decode()
                got.append(message)
                if until in message.splitlines():
                    return got

        ready = receive("READY=1")[-1].splitlines()
        assert any(line.startswith("STATUS=1 credentials") for line in ready)
        assert f"MAINPID={daemon.proc.pid}" in ready
        # Count the pings of a measured window, after draining what queued up meanwhile (on a
        # busy machine this test may read late: queued pings would look like a burst). At
        # WATCHDOG_USEC/2 = 250 ms a window of W seconds holds about 4 W pings: a busy loop
        # sends far more, a daemon that misses the watchdog (500 ms) far fewer.
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(4096)
        began, pings = time.monotonic(), 0
        while (left := began + 2.0 - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                pings += sock.recv(4096).decode() == "WATCHDOG=1"
            except TimeoutError:
                break
        window = time.monotonic() - began
        sock.settimeout(10)
        assert 2 <= pings <= window / 0.25 + 2, (pings, window)
        daemon.signal(signal.SIGHUP)
        reload_msgs = receive("READY=1")
        reloading = next(m for m in reload_msgs if "RELOADING=1" in m.splitlines())
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.splitlines())
        daemon.signal(signal.SIGTERM)
        assert any("STOPPING=1" in m.splitlines() for m in receive("STOPPING=1"))
        assert daemon.proc.wait(10) == 0
    assert_clean_output(daemon)


# ---------------------------------------------------------------------------- refusing to start


def test_invalid_config_or_busy_port_fails_start_with_one_line(tmp_path, endpoint, start_daemon) -> None:
    """A bad config exits 2 and a taken listen port exits 1, each with one line and no traceback."""
    bad = make_config(tmp_path, endpoint, creds={"sf": {"every": "often"}}, name="bad.toml")
    daemon = start_daemon(bad, label="bad")
    assert daemon.proc.wait(20) == 2
    err = daemon.err_path.read_text()
    assert err.count("\n") == 1 and "credentials.sf.every" in err and "Traceback" not in err

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        busy = make_config(tmp_path, endpoint, creds={"sf": {}}, port=port, name="busy.toml")
        daemon = start_daemon(busy, label="busy")
        assert daemon.proc.wait(20) == 1
    err = daemon.err_path.read_text()
    assert err.count("\n") == 1 and "daemon.listen" in err and "Traceback" not in err
    assert not daemon.events("daemon.started")


# ---------------------------------------------------------------------------- schedule warnings


def test_schedule_warnings_at_start_up_and_after_reload(
    tmp_path, endpoint, run_cli, key_files, start_daemon
) -> None:
    """The daemon logs what `rotator check` warns about: one schedule.warning per warning, at
    start-up and again after an accepted reload; a schedule that holds says nothing."""
    port = free_port()
    slow = {"every": "30m", "jitter": "0s"}
    config = make_config(tmp_path, endpoint, creds={"sf": slow, "fast": {"every": "2s", "jitter": "0s"}},
                         port=port)
    import_keys(run_cli, endpoint, config, key_files, "sf", "fast")
    check = run_cli("--config", config, "check")
    printed = [line.removeprefix("warning: ") for line in check.out.splitlines()
               if line.startswith("warning: ")]
    daemon = start_daemon(config, port=port)
    daemon.wait_event("daemon.started")
    warned = daemon.events("schedule.warning")
    assert [w["warning"] for w in warned] == printed and len(printed) == 1
    assert warned[0]["code"] == "cap-exceeded" and warned[0]["credentials"] == ["fast"]
    assert warned[0]["level"] == "warning"
    seen = daemon.events()
    assert seen.index(warned[0]) < seen.index(daemon.events("daemon.started")[0])

    make_config(tmp_path, endpoint, creds={"sf": {"every": "90s", "jitter": "0s"}}, port=port)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config.reloaded", removed=["fast"])
    after = wait_for(lambda: daemon.events("schedule.warning")[1:], 10, "the reload's warning")
    assert [(w["code"], w["credentials"]) for w in after] == [("cap-headroom", ["sf"])]

    make_config(tmp_path, endpoint, creds={"sf": slow}, port=port)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config.reloaded", changed=["sf"])
    assert daemon.stop()[0] == 0
    assert len(daemon.events("schedule.warning")) == 2  # the holding schedule added none
    assert_clean_output(daemon)
