"""Issue 15, items 2 and 11: the health port is bounded, and tells strangers only "ready or not".

Item 2 on a0100b0: one connection with ~6 MB of headers raised the daemon's memory by ~50 MB
(the standard parser reads 64 KiB lines, 100 of them, per connection, with no connection cap).
Item 11 on a0100b0: /readyz and /metrics named credentials, stores and errors to any caller.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_config
from tests.test_daemon import DaemonProc, free_port, wait_for

pytestmark = pytest.mark.integration

BIG_LINE = b"X-Filler: " + b"a" * 60_000 + b"\r\n"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _external_ipv4() -> str | None:
    """This host's address on a non-loopback interface (to be a 'remote' caller), if any."""
    for target in ("10.255.255.255", "192.0.2.1", "203.0.113.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect((target, 9))  # no packet is sent: this only picks a route
            except OSError:
                continue
            address = sock.getsockname()[0]
        if not address.startswith("127."):
            return address
    return None


@pytest.fixture
def daemon_for(
    tmp_path: Path, endpoint: Any, run_cli: Any, rsa_keys: Any
) -> Iterator[Callable[..., DaemonProc]]:
    started: list[DaemonProc] = []

    def start(listen_host: str = "127.0.0.1", **daemon_settings: Any) -> DaemonProc:
        port = free_port()
        config = write_config(
            tmp_path / "rotator.toml", login_url=endpoint.url, credentials={"sf": {}},
            daemon={"listen": f"{listen_host}:{port}", "state_dir": "state", **daemon_settings},
        )
        keys = tmp_path / "keys"
        keys.mkdir(mode=0o700, exist_ok=True)
        (keys / "k.pem").write_text(rsa_keys[0].key_pem)
        (keys / "c.pem").write_text(rsa_keys[0].cert_pem)
        result = run_cli("--config", config, "keys", "import", "sf", "--key", keys / "k.pem",
                         "--cert", keys / "c.pem", "--force")
        assert result.code == 0, result.err
        endpoint.register_app("3MVG9test.client.id", rsa_keys[0].cert_pem, users=["integration@example.com"])
        daemon = DaemonProc(config, tmp_path, f"daemon{len(started)}", port)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(10)


def _flood(port: int, lines: int, done: threading.Event, sent: list[int]) -> None:
    """One connection sending a request head of `lines` * 60 KB and never finishing it."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            for _ in range(lines):
                sock.sendall(BIG_LINE)
                sent[0] += len(BIG_LINE)
            done.wait(15)
    except OSError:
        pass  # the server answered 431 and closed: what we want


def test_big_headers_do_not_grow_the_daemon(daemon_for: Callable[..., DaemonProc]) -> None:
    daemon = daemon_for()
    daemon.wait_ready(timeout=20)
    base = f"http://127.0.0.1:{daemon.port}"
    for _ in range(20):  # warm up the handler threads and allocator first
        assert _get(base + "/metrics")[0] == 200
    before = _rss_kib(daemon.proc.pid)
    done = threading.Event()
    sent = [0]
    floods = [threading.Thread(target=_flood, args=(daemon.port, 99, done, sent)) for _ in range(6)]
    for thread in floods:
        thread.start()
    try:
        time.sleep(0.2)
        peak = before
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(t.is_alive() for t in floods):
            peak = max(peak, _rss_kib(daemon.proc.pid))
            time.sleep(0.05)
        peak = max(peak, _rss_kib(daemon.proc.pid))
        assert _get(base + "/healthz")[0] == 200
    finally:
        done.set()
        for thread in floods:
            thread.join(20)
    grown_mib = (peak - before) / 1024
    print(f"RSS before {before} KiB, peak {peak} KiB, grown {grown_mib:.2f} MiB, sent {sent[0]} bytes")
    assert grown_mib < 8, f"RSS grew {grown_mib:.1f} MiB under 6 connections with 6 MB of headers each"
    daemon.assert_alive()


def test_an_oversized_head_gets_431_and_the_connection_closes(daemon_for: Callable[..., DaemonProc]) -> None:
    daemon = daemon_for()
    daemon.wait_ready(timeout=20)
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-A: " + b"b" * 9000 + b"\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 431 ")
    # and an ordinary request on a kept-alive connection still works, twice in a row
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        deadline = time.monotonic() + 5
        while reply.count(b"HTTP/1.1 200") < 2 and time.monotonic() < deadline:
            reply += sock.recv(4096)
    assert reply.count(b"HTTP/1.1 200") == 2


def test_connections_are_capped_and_idle_ones_time_out(daemon_for: Callable[..., DaemonProc]) -> None:
    daemon = daemon_for()
    daemon.wait_ready(timeout=20)
    idle = [socket.create_connection(("127.0.0.1", daemon.port), timeout=5) for _ in range(40)]
    try:
        refused = 0
        for sock in idle[20:]:
            sock.settimeout(3)
            try:
                if sock.recv(64).startswith(b"HTTP/1.1 503"):
                    refused += 1
            except OSError:
                pass
        assert refused >= 10, f"{refused} of 20 connections past the cap were told 503"
        # idle connections are dropped after the head timeout: the port serves again
        status = wait_for(lambda: _get(f"http://127.0.0.1:{daemon.port}/healthz")[0] == 200, 15,
                          "/healthz once the idle connections timed out")
        assert status
    finally:
        for sock in idle:
            sock.close()
    assert _rss_kib(daemon.proc.pid) > 0 and daemon.proc.poll() is None


# ---------------------------------------------------------------------------- item 11


def test_remote_callers_see_status_only(daemon_for: Callable[..., DaemonProc]) -> None:
    remote = _external_ipv4()
    if remote is None:
        pytest.skip("no non-loopback interface to call from")
    daemon = daemon_for(listen_host="0.0.0.0")  # noqa: S104
    daemon.wait_ready(timeout=20)
    status, body = _get(f"http://{remote}:{daemon.port}/readyz")
    assert (status, json.loads(body)) == (200, {"ready": True})
    assert "sf" not in body and "local" not in body
    status, body = _get(f"http://{remote}:{daemon.port}/metrics")
    assert status == 403 and "rotator_" not in body
    assert _get(f"http://{remote}:{daemon.port}/healthz")[0] == 200
    # loopback callers (a sidecar, the operator on the host) still get the details
    status, body = _get(f"http://127.0.0.1:{daemon.port}/readyz")
    assert status == 200 and "sf" in json.loads(body)["credentials"]
    assert "rotator_rotation_total" in _get(f"http://127.0.0.1:{daemon.port}/metrics")[1]


def test_metrics_token_file_gates_the_details(daemon_for: Callable[..., DaemonProc], tmp_path: Path,
                                              secret_guard: Any) -> None:
    token = "mt-" + "9f" * 20
    secret_guard.add(token)
    (tmp_path / "metrics.token").write_text(token + "\n")
    daemon = daemon_for(metrics_token_file="metrics.token")
    daemon.wait_ready(timeout=20)
    base = f"http://127.0.0.1:{daemon.port}"
    status, body = _get(base + "/metrics")
    assert status == 401 and "rotator_" not in body  # the token applies to loopback callers too
    assert _get(base + "/metrics", {"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401
    status, body = _get(base + "/metrics", {"Authorization": f"Bearer {token}"})
    assert status == 200 and "rotator_rotation_total" in body
    assert json.loads(_get(base + "/readyz")[1]) == {"ready": True}
    verbose = json.loads(_get(base + "/readyz?verbose", {"Authorization": f"Bearer {token}"})[1])
    assert "sf" in verbose["credentials"]


def test_an_unreadable_metrics_token_file_is_one_clear_error(tmp_path: Path, endpoint: Any) -> None:
    from tests.conftest import run_rotator

    config = write_config(tmp_path / "rotator.toml", login_url=endpoint.url,
                          daemon={"listen": f"127.0.0.1:{free_port()}", "metrics_token_file": "missing"})
    result = run_rotator("--config", config, "run", timeout=30)
    assert result.returncode == 2, result.stderr
    assert "daemon.metrics_token_file" in result.stderr and "Traceback" not in result.stderr
