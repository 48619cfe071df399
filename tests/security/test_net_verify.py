"""`verify` against a hostile instance: the probe is bounded and sends the token nowhere else.

A loopback server plays both the token endpoint and the instance it names. Its probe answers
are chosen per test: a redirect to another host (must not be followed: the new token would go
there), an error body with a hostile error code (sanitized and capped in the audit line), a
huge body, and one that stalls (cut at the credential's timeout).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_config

pytestmark = pytest.mark.integration


class Instance:
    """Token endpoint + instance on loopback; `probe` is (status, headers, body, delay)."""

    def __init__(self) -> None:
        self.probe: tuple[int, dict[str, str], bytes, float] = (200, {}, b"{}", 0.0)
        self.probes: list[tuple[str, str | None]] = []  # (path, Authorization header)
        self.issued: list[str] = []
        self._stop = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                token = "00D" + secrets.token_hex(6) + "!" + secrets.token_urlsafe(40)
                owner.issued.append(token)
                self._send(200, {}, json.dumps({
                    "access_token": token, "instance_url": owner.url, "token_type": "Bearer",
                    "id": f"{owner.url}/id/00D000000000001AAA/005000000000001AAA", "scope": "api",
                    "issued_at": str(int(time.time() * 1000)),
                }).encode())

            def do_GET(self) -> None:
                owner.probes.append((self.path, self.headers.get("Authorization")))
                status, headers, body, delay = owner.probe
                if delay and owner._stop.wait(delay):
                    return
                self._send(status, headers, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def instance(secret_guard: Any) -> Iterator[Instance]:
    server = Instance()
    secret_guard.endpoints.append(server)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def elsewhere(secret_guard: Any) -> Iterator[Instance]:
    """A second host a redirect points at; it must never see a request."""
    server = Instance()
    try:
        yield server
    finally:
        server.close()


def _setup(tmp_path: Path, instance: Instance, run_cli: Any, **settings: Any) -> Path:
    config = write_config(tmp_path / "rotator.toml", login_url=instance.url,
                          credentials={"sf": {"verify": "userinfo", **settings}},
                          daemon={"audit_log": "audit.jsonl"})
    assert run_cli("--config", config, "keys", "init", "sf").code == 0
    first = run_cli("--config", config, "rotate", "sf", "--force")
    assert first.code == 0, first.out + first.err
    return config


def _token_bytes(tmp_path: Path) -> bytes:
    return (tmp_path / "store" / "sf" / "token.json").read_bytes()


def _audit(tmp_path: Path, event: str) -> list[dict[str, Any]]:
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if f'"{event}"' in line]


def test_the_probe_carries_the_new_token_to_the_instance_only(tmp_path, instance, run_cli) -> None:
    _setup(tmp_path, instance, run_cli)
    assert instance.probes == [("/services/oauth2/userinfo", f"Bearer {instance.issued[-1]}")]
    assert json.loads(_token_bytes(tmp_path))["access_token"] == instance.issued[-1]


def test_a_redirect_is_not_followed_and_the_token_not_written(
    tmp_path, instance, elsewhere, run_cli
) -> None:
    config = _setup(tmp_path, instance, run_cli)
    before = _token_bytes(tmp_path)
    instance.probe = (302, {"Location": f"{elsewhere.url}/services/oauth2/userinfo"}, b"", 0.0)
    result = run_cli("--config", config, "rotate", "sf", "--force")
    assert result.code == 1 and "HTTP 302" in result.json_lines()[0]["error"]
    assert elsewhere.probes == []  # the new token went nowhere but the instance
    assert _token_bytes(tmp_path) == before
    assert _audit(tmp_path, "token.verification_failed")[-1]["status"] == 302


def test_a_hostile_error_code_is_sanitized_and_capped(tmp_path, instance, run_cli) -> None:
    config = _setup(tmp_path, instance, run_cli)
    before = _token_bytes(tmp_path)
    code = "INSUFFICIENT_ACCESS\x1b[31m\r\nforged: line" + "X" * 5000
    instance.probe = (403, {}, json.dumps([{"errorCode": code, "message": "no"}]).encode(), 0.0)
    result = run_cli("--config", config, "rotate", "sf", "--force")
    assert result.code == 1
    assert _token_bytes(tmp_path) == before
    failed = _audit(tmp_path, "token.verification_failed")[-1]
    assert failed["status"] == 403 and failed["error_code"].startswith("INSUFFICIENT_ACCESS")
    assert len(failed["error_code"]) <= 81 and "\x1b" not in failed["error_code"]
    assert "\n" not in failed["error_code"] and "\r" not in failed["error_code"]
    assert len(_audit(tmp_path, "rotation.failed")[-1]["diagnosis"]) <= 1000


def test_a_huge_error_body_is_not_read_whole(tmp_path, instance, run_cli) -> None:
    config = _setup(tmp_path, instance, run_cli)
    before = _token_bytes(tmp_path)
    instance.probe = (401, {}, b'[{"errorCode":"' + b"A" * (4 * 1024 * 1024) + b'"}]', 0.0)
    result = run_cli("--config", config, "rotate", "sf", "--force")
    assert result.code == 1 and "HTTP 401" in result.json_lines()[0]["error"]
    assert _token_bytes(tmp_path) == before
    assert _audit(tmp_path, "token.verification_failed")[-1]["error_code"] is None


def test_a_stalled_probe_is_cut_at_the_timeout(tmp_path, instance, run_cli) -> None:
    config = _setup(tmp_path, instance, run_cli, timeout="1s")
    before = _token_bytes(tmp_path)
    instance.probe = (200, {}, b"{}", 60.0)
    started = time.monotonic()
    result = run_cli("--config", config, "rotate", "sf", "--force")
    assert time.monotonic() - started < 20
    assert result.code == 1 and "no reply within 1s" in result.json_lines()[0]["error"]
    assert _token_bytes(tmp_path) == before
