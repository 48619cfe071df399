"""AWS Secrets Manager on loopback, for tests: moto's real HTTP server plus a fault injector.

Use it in your own tests (needs ``moto[server]`` and boto3)::

    import pytest
    from rotator.testing.aws import AWS_ENV_CLEAR, AwsFaultProxy, MotoServer, aws_env

    @pytest.fixture(scope="module")
    def moto():
        with MotoServer() as server:          # serves on 127.0.0.1:<free port>
            yield server

    @pytest.fixture(autouse=True)
    def fake_aws(moto, monkeypatch):
        for name in AWS_ENV_CLEAR:
            monkeypatch.delenv(name, raising=False)
        for name, value in aws_env().items():  # dummy credentials: real AWS is never reached
            monkeypatch.setenv(name, value)
        moto.reset()                          # every test starts with no secrets

    def test_consumer(moto):
        sm = moto.client()                    # boto3 secretsmanager client, us-east-1
        sm.create_secret(Name="app/token", SecretString='{"access_token": "x"}')
        ...

Point the code under test at ``moto.url`` (rotator: ``endpoint_url`` in ``[stores.NAME]``).

``AwsFaultProxy(moto.url)`` sits in front of it and answers chosen operations with an AWS error
instead (``proxy.set_fault("PutSecretValue", "AccessDeniedException")``), passing everything
else through — moto does not enforce IAM, KMS or rate limits, so this is how a test sees
AccessDenied, throttling or a KMS failure on exactly one step, with the rest real.
``proxy.operations`` lists the operations clients called, in order.

moto keeps its state per process, not per server: ``reset()`` clears every moto backend in the
process, and two MotoServers in one process share their secrets. Tests must not depend on
moto's known gaps (see the team's STORES.md): read with ``VersionStage="AWSCURRENT"``, find the
current version with ``describe_secret``'s VersionIdsToStages, always pass ``VersionStages``.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # moto's dummy credential, not a secret

# Variables that would send boto3 elsewhere (a real profile, a role, another endpoint).
AWS_ENV_CLEAR = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_CA_BUNDLE",
)


def aws_env(region: str = REGION) -> dict[str, str]:
    """Environment variables giving boto3 dummy credentials and no way to reach real AWS.

    Set them (and remove the names in ``AWS_ENV_CLEAR``) with ``monkeypatch`` or for a child
    process. No shared config or credentials file is read, and the instance metadata service
    is never asked.
    """
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_CONFIG_FILE": "/nonexistent/rotator-test-aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/rotator-test-aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class MotoServer:
    """moto's Secrets Manager (and every other moto service) on 127.0.0.1:<free port>.

    ``start()``/``stop()`` or use it as a context manager. ``quiet`` (default) silences the
    werkzeug request log, which otherwise writes every request line to stderr.
    """

    def __init__(self, *, ip_address: str = "127.0.0.1", port: int = 0, quiet: bool = True) -> None:
        self._ip_address = ip_address
        self._port = port
        self._quiet = quiet
        self._server: Any = None
        self._url: str | None = None

    def start(self) -> MotoServer:
        from moto.server import ThreadedMotoServer

        if self._quiet:
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=self._ip_address, port=self._port, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        self._server = server
        self._url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("MotoServer is not started; call start() first")
        return self._url

    def reset(self) -> None:
        """Forget every secret (POST /moto-api/reset): all moto state in this process."""
        _post(self.url + "/moto-api/reset")

    def client(self, *, region: str = REGION, endpoint_url: str | None = None) -> Any:
        """A boto3 secretsmanager client for this server, with dummy credentials."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "secretsmanager",
            region_name=region,
            endpoint_url=endpoint_url or self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(retries={"mode": "standard", "max_attempts": 2}),
        )


# ---------------------------------------------------------------------------- fault proxy


@dataclass
class _Fault:
    code: str
    status: int
    message: str
    remaining: int | None  # None: every call until cleared


class AwsFaultProxy:
    """A loopback proxy for AWS JSON-protocol services that can fail chosen operations.

    ``set_fault(operation, code)`` answers the next ``count`` calls of ``operation`` (e.g.
    ``"PutSecretValue"``, or ``"*"`` for any) with ``{"__type": code, "message": ...}`` and HTTP
    ``status`` (400 by default; use 500/503 for server errors) — the shape AWS sends. The code
    ``"connection-reset"`` closes the connection without an answer instead. Without an
    ``upstream`` every call that has no fault gets a 500.
    """

    def __init__(self, upstream: str | None = None, *, ip_address: str = "127.0.0.1") -> None:
        self.upstream = upstream.rstrip("/") if upstream else None
        self._ip_address = ip_address
        self._faults: dict[str, _Fault] = {}
        self._operations: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> AwsFaultProxy:
        server = ThreadingHTTPServer((self._ip_address, 0), _ProxyHandler)
        server.daemon_threads = True
        server.proxy = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"aws-fault-proxy-{server.server_address[1]}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> AwsFaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("AwsFaultProxy is not started; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def set_fault(
        self,
        operation: str,
        code: str,
        *,
        status: int = 400,
        message: str | None = None,
        count: int | None = None,
    ) -> None:
        text = message if message is not None else f"injected {code} for {operation}"
        with self._lock:
            self._faults[operation] = _Fault(code, status, text, count)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def operations(self) -> list[str]:
        with self._lock:
            return list(self._operations)

    def reset_operations(self) -> None:
        with self._lock:
            self._operations.clear()

    def _take(self, operation: str) -> _Fault | None:
        with self._lock:
            self._operations.append(operation)
            for key in (operation, "*"):
                fault = self._faults.get(key)
                if fault is None:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        del self._faults[key]
                return fault
        return None


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = 1 << 16

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        proxy: AwsFaultProxy = self.server.proxy  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        target = self.headers.get("X-Amz-Target") or ""
        operation = target.rpartition(".")[2] or "?"
        fault = proxy._take(operation)
        if fault is not None:
            if fault.code == "connection-reset":
                self.close_connection = True
                self.connection.close()
                return
            self._reply(fault.status, {"__type": fault.code, "message": fault.message})
            return
        if proxy.upstream is None:
            self._reply(500, {"__type": "InternalFailure", "message": "no upstream configured"})
            return
        self._forward(proxy.upstream, body)

    do_GET = do_POST

    def _forward(self, upstream: str, body: bytes) -> None:
        parts = urlsplit(upstream)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            conn.request(self.command, self.path, body=body, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
            self.send_response(reply.status)
            for key, value in reply.getheaders():
                if key.lower() not in ("content-length", "connection", "transfer-encoding",
                                       "server", "date"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            conn.close()

    def _reply(self, status: int, payload: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _post(url: str) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
    try:
        conn.request("POST", parts.path or "/", body=b"")
        reply = conn.getresponse()
        reply.read()
        if reply.status != 200:
            raise RuntimeError(f"POST {url} answered {reply.status}")
    finally:
        conn.close()
