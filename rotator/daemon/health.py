"""/healthz, /readyz and /metrics on [daemon] listen, served by the standard library.

/healthz answers 200 while the process and its scheduler are alive (the liveness probe: a
503 there means a restart would help). /readyz is
200 only when the daemon says so, else 503; both carry a JSON body that names what is not
ready and why. /metrics is the Prometheus text format. One thread per connection, in
daemon threads, so a stuck client never holds up shutdown.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rotator.errors import RotatorError

Readiness = Callable[[], tuple[bool, dict[str, Any]]]
Exposition = Callable[[], tuple[bytes, str]]


def split_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:9464' -> ('127.0.0.1', 9464); '[::1]:9464' -> ('::1', 9464)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class HealthServer:
    def __init__(
        self, listen: str, *, readiness: Readiness, metrics: Exposition,
        liveness: Callable[[], bool] = lambda: True,
    ) -> None:
        self.listen = listen
        self.readiness = readiness
        self.metrics = metrics
        self.liveness = liveness
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

    def __init__(self, address: tuple[str, int], handler: type, owner: HealthServer,
                 family: socket.AddressFamily) -> None:
        self.address_family = family
        self.owner = owner
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-reply is not worth a traceback on stderr."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = 1 << 16
    timeout = 30  # idle keep-alive connections do not hold a thread forever
    server_version = "rotator"
    sys_version = ""

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
            payload = (json.dumps(details, sort_keys=True) + "\n").encode()
            self._send(200 if ready else 503, payload, "application/json", body)
        elif path == "/metrics":
            payload, content_type = owner.metrics()
            self._send(200, payload, content_type, body)
        else:
            self._send(404, b'{"error": "not found; try /healthz, /readyz or /metrics"}\n',
                       "application/json", body)

    def _send(self, status: int, payload: bytes, content_type: str, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not audit events: stay quiet."""
