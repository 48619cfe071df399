"""/healthz, /readyz and /metrics on [daemon] listen, served by the standard library.

/healthz answers 200 while the process and its scheduler are alive (the liveness probe: a
503 there means a restart would help). /readyz is 200 only when the daemon says so, else 503.
/metrics is the Prometheus text format. One thread per connection, in daemon threads, so a
stuck client never holds up shutdown.

Who sees what: /healthz and /readyz's status (`{"ready": true}`) are open to anyone who can
connect. The details — /readyz's body naming credentials, stores and errors, and /metrics —
go to an authorised caller only: one presenting `Authorization: Bearer <token>` with the token
in [daemon] metrics_token_file (read once at start, compared in constant time), or, when no
token file is configured, a caller on loopback. Others get the short /readyz and a 401/403
for /metrics.

Bounded, because anyone who can connect can send: a request line plus headers of at most
MAX_HEAD bytes (else 431 and the connection closes), read within HEAD_TIMEOUT seconds; at most
MAX_CONNECTIONS connections at once (the next gets a 503 and is closed). A multi-megabyte header
costs the daemon MAX_HEAD bytes, not megabytes.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rotator.errors import ConfigError, RotatorError
from rotator.urls import is_loopback_host

MAX_HEAD = 8192  # request line + headers, bytes
HEAD_TIMEOUT = 5.0  # seconds to receive one request's head (and the longest keep-alive idle)
MAX_CONNECTIONS = 16
WRITE_TIMEOUT = 5.0


def _raw_reply(status: str, body: bytes, *extra: str) -> bytes:
    """A complete reply that closes the connection, for answering before any parsing."""
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json", f"Content-Length: {len(body)}",
            "Connection: close", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_TOO_LARGE = _raw_reply("431 Request Header Fields Too Large",
                        b'{"error": "request line and headers over 8 KiB"}\n')
_BUSY = _raw_reply("503 Service Unavailable", b'{"error": "too many connections"}\n', "Retry-After: 1")

Readiness = Callable[[], tuple[bool, dict[str, Any]]]
Exposition = Callable[[], tuple[bytes, str]]


MIN_TOKEN_CHARS = 16


def read_metrics_token(path: Path | None) -> bytes | None:
    """[daemon] metrics_token_file's content (read once, at start), or None when not set."""
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"daemon.metrics_token_file: {path}: cannot read ({reason})") from None
    if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or " " in token:
        raise ConfigError(
            f"daemon.metrics_token_file: {path}: expected one token of at least {MIN_TOKEN_CHARS} "
            "printable characters",
            hint="e.g. openssl rand -hex 32 > FILE",
        )
    return token.encode("utf-8")


def split_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:9464' -> ('127.0.0.1', 9464); '[::1]:9464' -> ('::1', 9464)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class HealthServer:
    def __init__(
        self, listen: str, *, readiness: Readiness, metrics: Exposition,
        liveness: Callable[[], bool] = lambda: True,
        token: bytes | None = None,
    ) -> None:
        self.listen = listen
        self.readiness = readiness
        self.metrics = metrics
        self.liveness = liveness
        self.token = token  # None: details for loopback callers only
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """HOST:PORT actually bound (port 0 in the config becomes the real port)."""
        if self._server is None:
            return self.listen
        host, port = self._server.server_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> HealthServer:
        host, port = split_listen(self.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            server = _Server((host, port), _Handler, self, family)
        except OSError as exc:
            raise RotatorError(
                f"daemon.listen: cannot listen on {self.listen} ({exc.strerror or exc})",
                hint='another process holds the port? choose another, or listen = "" to disable',
            ) from None
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.25},
            name="rotator-health", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = MAX_CONNECTIONS

    def __init__(self, address: tuple[str, int], handler: type, owner: HealthServer,
                 family: socket.AddressFamily) -> None:
        self.address_family = family
        self.owner = owner
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """One thread per connection, at most MAX_CONNECTIONS: the next one is told so and closed
        here (no thread, no buffers)."""
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.settimeout(0.2)
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-reply is not worth a traceback on stderr."""


class _HeadTooLarge(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = 1 << 16
    timeout = WRITE_TIMEOUT  # per socket operation; the head has its own total deadline
    server_version = "rotator"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self._pending = b""  # bytes received past the last head (a pipelined next request)

    def handle_one_request(self) -> None:
        """Read the head ourselves, bounded in size and time, then let the standard parser
        read it from memory (it would read up to 64 KiB a line and 100 lines)."""
        try:
            head = self._read_head()
        except _HeadTooLarge:
            with contextlib.suppress(OSError):
                self.connection.sendall(_TOO_LARGE)
            self.close_connection = True
            return
        except OSError:  # timed out, reset: nothing to answer
            self.close_connection = True
            return
        if not head:
            self.close_connection = True
            return
        socket_file, self.rfile = self.rfile, io.BytesIO(head)
        try:
            super().handle_one_request()
        finally:
            self.rfile = socket_file

    def _read_head(self) -> bytes:
        """Bytes up to and including the blank line that ends the head; b"" at a clean EOF."""
        deadline = time.monotonic() + HEAD_TIMEOUT
        buffer = self._pending
        while True:
            end = _head_end(buffer)
            if end is not None:
                if end > MAX_HEAD:
                    raise _HeadTooLarge
                self._pending = buffer[end:]
                return buffer[:end]
            if len(buffer) > MAX_HEAD:
                raise _HeadTooLarge
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.connection.settimeout(left)
            chunk = self.connection.recv(MAX_HEAD + 4 - len(buffer))
            self.connection.settimeout(WRITE_TIMEOUT)
            if not chunk:
                if buffer.strip():
                    raise ConnectionResetError  # a head cut off mid-way
                return b""
            buffer += chunk

    def do_GET(self) -> None:
        self._route(body=True)

    def do_HEAD(self) -> None:
        self._route(body=False)

    def _route(self, *, body: bool) -> None:
        try:
            self._answer(body)
        except Exception as exc:  # a probe gets a 500, never a traceback on stderr
            message = json.dumps({"error": f"internal error ({type(exc).__name__})"}) + "\n"
            self._send(500, message.encode(), "application/json", body)

    def _answer(self, body: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            if owner.liveness():
                self._send(200, b'{"status": "ok"}\n', "application/json", body)
            else:
                self._send(503, b'{"status": "scheduler stopped"}\n', "application/json", body)
        elif path == "/readyz":
            ready, details = owner.readiness()
            if not self._authorised():
                details = {"ready": ready}  # the status alone: names and errors need a token
            payload = (json.dumps(details, sort_keys=True) + "\n").encode()
            self._send(200 if ready else 503, payload, "application/json", body)
        elif path == "/metrics":
            if not self._authorised():
                self._refuse(body)
                return
            payload, content_type = owner.metrics()
            self._send(200, payload, content_type, body)
        else:
            self._send(404, b'{"error": "not found; try /healthz, /readyz or /metrics"}\n',
                       "application/json", body)

    def _authorised(self) -> bool:
        token = self.server.owner.token
        if token is None:
            return is_loopback_host(str(self.client_address[0]).removeprefix("::ffff:"))
        scheme, _, presented = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode("utf-8", "replace"), token)

    def _refuse(self, body: bool) -> None:
        if self.server.owner.token is None:
            self._send(403, b'{"error": "metrics are served to loopback callers only; '
                       b'set [daemon] metrics_token_file for remote scrapes"}\n',
                       "application/json", body)
        else:
            self._send(401, b'{"error": "a bearer token is required"}\n', "application/json", body,
                       extra=(("WWW-Authenticate", 'Bearer realm="rotator"'),))

    def _send(self, status: int, payload: bytes, content_type: str, body: bool,
              extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not audit events: stay quiet."""


def _head_end(buffer: bytes) -> int | None:
    """Index just past the blank line ending an HTTP head (CRLF or bare LF), or None."""
    ends = [i + n for i, n in ((buffer.find(b"\r\n\r\n"), 4), (buffer.find(b"\n\n"), 2)) if i >= 0]
    return min(ends) if ends else None
