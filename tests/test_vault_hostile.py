"""A Vault that redirects elsewhere or trickles its answer, in front of a real OpenBao server.

Attacks from issue 15 (redirects leak the Vault token) and issue 14/15 (no total deadline):
each fails on the code before the fix. The "elsewhere" is a RecordingProxy in front of the
real server, so a leak would even *work*; the tests assert that it receives nothing.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from rotator.errors import StoreUnavailable
from rotator.stores.vault import VaultStore
from rotator.testing._http import EmulatorServer
from rotator.testing.recording_proxy import RecordingProxy
from tests.test_store_vault import Clock, RealVault, auth_for, shipped_policy, store_config

pytestmark = pytest.mark.realvault


class _Redirector(BaseHTTPRequestHandler):
    """307s requests under `prefix` to `target`; forwards the others to the real `upstream`."""

    protocol_version = "HTTP/1.1"
    target = ""
    prefix = "/v1/"
    upstream = ""
    seen: list[tuple[str, str]]

    def _redirect(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if not self.path.startswith(self.prefix):
            return self._forward(body)
        self.seen.append((self.command, self.path))
        self.send_response(307)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _forward(self, body: bytes) -> None:
        host, port = self.upstream.removeprefix("http://").split(":")
        upstream = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
        upstream.request(self.command, self.path, body=body or None, headers=headers)
        reply = upstream.getresponse()
        data = reply.read()
        upstream.close()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.getheader("Content-Type") or "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _redirect

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def real(openbao: Any, secret_guard: Any) -> Iterator[RealVault]:
    server = RealVault(openbao)
    try:
        yield server
    finally:
        server.cleanup()
        for value in server.issued:
            secret_guard.add(value)


@pytest.fixture
def elsewhere(real: RealVault) -> Iterator[RecordingProxy]:
    """Another listener (it forwards to the real server, so a leaked token would work)."""
    with RecordingProxy(real.direct_url) as proxy:
        yield proxy


def redirector(target: str, prefix: str = "/v1/", upstream: str = ""
               ) -> tuple[EmulatorServer, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    handler = type("Handler", (_Redirector,), {"target": target, "seen": seen,
                                               "prefix": prefix, "upstream": upstream})
    server = EmulatorServer(("127.0.0.1", 0), handler)
    server.serve_in_thread("redirector")
    return server, seen


@pytest.mark.parametrize(("method", "prefix"), [
    ("approle", "/v1/auth/"),  # the login (role_id + secret_id in the body)
    ("token_file", "/v1/auth/"),  # the token's lookup-self
    ("approle", "/v1/secret/"),  # reads and writes, with the token
])
def test_redirect_to_another_host_gets_no_token_no_body_no_secret(
    method: str, prefix: str, real: RealVault, elsewhere: RecordingProxy, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 307 to another host:port is refused for logins, reads and writes: it receives nothing."""
    path = f"{real.prefix}/sf/key"
    real.kv_put("secret", path, {"private_key": "pem", "certificate": "crt"})
    real.add_policy("rotator", shipped_policy(real.prefix))
    auth = auth_for(method, real, tmp_path, monkeypatch, policies=["rotator"])
    server, seen = redirector(elsewhere.url, prefix, real.direct_url)
    try:
        store = VaultStore("vault", store_config(server.base_url(), auth), clock=Clock(),
                           random=lambda: 1.0)
        for attempt in (lambda: store.read(path),
                        lambda: store.write(f"{real.prefix}/sf/token", {"access_token": "t0k"},
                                            expected_version=None)):
            store.auth._next_login_at = 0.0  # not the backoff under test
            with pytest.raises(StoreUnavailable) as caught:
                attempt()
            assert "refused a redirect" in caught.value.diagnostics()
            assert "redirect_hosts" in caught.value.diagnostics()
        assert seen  # the redirector was asked ...
        assert elsewhere.requests == []  # ... and nothing reached the other host
        assert real.kv_get("secret", f"{real.prefix}/sf/token") is None
        store.close()
    finally:
        server.stop_serving()


def test_redirect_to_a_listed_host_is_followed(
    real: RealVault, elsewhere: RecordingProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the target in redirect_hosts, login, read and write go through the redirect."""
    path = f"{real.prefix}/sf/token"
    real.add_policy("rotator", shipped_policy(real.prefix))
    auth = auth_for("approle", real, tmp_path, monkeypatch, policies=["rotator"])
    server, seen = redirector(elsewhere.url)
    try:
        hosts = [elsewhere.url.removeprefix("http://")]
        store = VaultStore("vault", store_config(server.base_url(), auth, redirect_hosts=hosts),
                           clock=Clock())
        assert store.write(path, {"access_token": "t0k"}, expected_version=None).version == "1"
        record = store.read(path)
        assert record is not None and record.data == {"access_token": "t0k"}
        assert ("POST", f"/v1/auth/{real.approle_mount}/login") in elsewhere.requests
        assert len(seen) == len(elsewhere.requests) >= 3
        store.close()
    finally:
        server.stop_serving()


def test_redirect_to_plain_http_elsewhere_is_refused(
    real: RealVault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even a listed host must pass the https-or-loopback rule."""
    auth = auth_for("token_file", real, tmp_path, monkeypatch, policies=["default"])
    server, _ = redirector("http://vault.example.com:8200")
    try:
        store = VaultStore("vault", store_config(
            server.base_url(), auth, redirect_hosts=["vault.example.com:8200"]), clock=Clock())
        with pytest.raises(StoreUnavailable) as caught:
            store.check()
        assert "refused a redirect to 'vault.example.com:8200'" in caught.value.diagnostics()
        assert "only allowed for loopback" in caught.value.diagnostics()
    finally:
        server.stop_serving()


def trickler() -> tuple[socket.socket, threading.Event]:
    """A server that accepts and sends an HTTP answer one byte a second, forever."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    def drip(conn: socket.socket) -> None:
        conn.recv(65536)
        answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"X-Slow: y\r\n" * 100
        with conn:
            for byte in answer:
                if stop.wait(0.5):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    return listener, stop


def test_a_trickling_vault_cannot_hold_a_request_past_the_timeout(tmp_path: Path) -> None:
    """One byte every 0.5 s never trips a read timeout; the total deadline ends it at ~timeout."""
    listener, stop = trickler()
    try:
        (tmp_path / "token").write_text("s.not-a-real-token-000")
        auth = {"method": "token", "token_file": str(tmp_path / "token")}
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        store = VaultStore("vault", store_config(url, auth, timeout=2))
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            store.check()
        elapsed = time.monotonic() - started
        assert elapsed < 2 + 1.5, elapsed
        assert "did not answer in time (total deadline" in caught.value.diagnostics()
    finally:
        stop.set()
        listener.close()
