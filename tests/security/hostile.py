"""A hostile token endpoint on loopback: answers whatever a test sets, or trickles it.

    with HostileEndpoint() as evil:
        evil.answer(200, {"access_token": ..., "instance_url": "https://evil.example"})
        evil.trickle(b'{"access_token": ...}', every=2.0)   # one byte every 2 s
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HostileEndpoint:
    def __init__(self) -> None:
        self.status = 200
        self.body = b"{}"
        self.content_type = "application/json"
        self.content_encoding: str | None = None  # sent as Content-Encoding when set
        self.trickle_every: float | None = None
        self.trickle_headers = False
        self.requests = 0
        self.issued: list[str] = []  # tokens handed out (the secret guard scans for them)
        self._server: ThreadingHTTPServer | None = None
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(
        self, status: int, payload: dict[str, Any] | bytes, content_type: str = "application/json"
    ) -> None:
        self.status = status
        self.body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.content_type = content_type
        self.trickle_every = None

    def trickle(self, body: bytes, every: float, *, headers: bool = False) -> None:
        """Answer 200 with `body`, one byte every `every` seconds (from the status line on
        when `headers`)."""
        self.status, self.body, self.trickle_every, self.trickle_headers = 200, body, every, headers

    def token(self) -> str:
        value = "00D" + secrets.token_hex(6) + "!" + secrets.token_urlsafe(40)
        self.issued.append(value)
        return value

    def start(self) -> HostileEndpoint:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                owner.requests += 1
                body, every = owner.body, owner.trickle_every
                if every is None:
                    self.send_response(owner.status)
                    self.send_header("Content-Type", owner.content_type)
                    if owner.content_encoding:
                        self.send_header("Content-Encoding", owner.content_encoding)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: {owner.content_type}\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode()
                if owner.trickle_headers:
                    body = head + body
                else:
                    self.wfile.write(head)
                for byte in body:
                    if owner._stop.wait(every):
                        return
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:
                        return

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HostileEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def good_reply(endpoint: HostileEndpoint, **overrides: Any) -> dict[str, Any]:
    body = {
        "access_token": endpoint.token(),
        "instance_url": "https://acme.my.salesforce.com",
        "id": "https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA",
        "token_type": "Bearer",
        "scope": "api",
        "issued_at": str(int(time.time() * 1000)),
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}
