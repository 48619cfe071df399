"""A small HTTP reverse proxy on loopback that records every request it forwards.

Real Vault-API servers only expose their audit log through audit devices, and OpenBao refuses
to enable one through the API. Tests that assert *which* requests a client sent (a login, a
renewal, no write) put this proxy between the client and the server instead::

    from rotator.testing.recording_proxy import RecordingProxy

    with RecordingProxy("http://127.0.0.1:8200") as proxy:
        client = hvac.Client(url=proxy.url, token=...)
        ...
        assert ("POST", "/v1/auth/approle/login") in proxy.requests

``requests`` holds ``(method, path)`` pairs, the path without its query string, in arrival
order: the same shape as :attr:`rotator.testing.vault.VaultEmulator.requests`;
``namespaces_seen`` the ``X-Vault-Namespace`` values. Bodies and
headers (tokens!) are forwarded, never recorded. Plain HTTP upstreams only: it is a test tool.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse

from rotator.testing._http import EmulatorHandler, EmulatorServer

__all__ = ["RecordingProxy"]

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
               "te", "trailer", "host", "content-length"}


class _Handler(EmulatorHandler):
    server_version = "rotator-recording-proxy"
    max_request_body = 4 << 20
    body_too_large_message = "request body too large"
    proxy: RecordingProxy

    def _dispatch(self, body: bytes) -> None:
        path = self.path.split("?", 1)[0]
        namespace = self.headers.get("X-Vault-Namespace")
        with self.proxy.lock:
            self.proxy.requests.append((self.command, path))
            if namespace:
                self.proxy.namespaces_seen.add(namespace.strip("/"))
        upstream = http.client.HTTPConnection(self.proxy.upstream_host, self.proxy.upstream_port,
                                              timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body if body or self.command in
                             ("POST", "PUT", "PATCH") else None, headers=headers)
            reply = upstream.getresponse()
            data = reply.read()
            self.send_response(reply.status, reply.reason)
            for key, value in reply.getheaders():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:
            self._reset_connection()
        finally:
            upstream.close()

    def _refuse(self, status: int, message: str) -> None:
        self.send_error(status, message)
        self.close_connection = True


class RecordingProxy:
    """Forwards everything to ``upstream`` and logs ``(method, path)`` in :attr:`requests`."""

    def __init__(self, upstream: str, host: str = "127.0.0.1") -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError("RecordingProxy forwards to plain http:// upstreams only")
        self.upstream_host = parsed.hostname
        self.upstream_port = parsed.port or 80
        self.requests: list[tuple[str, str]] = []
        self.namespaces_seen: set[str] = set()  # X-Vault-Namespace values, as the emulator's
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = EmulatorServer((host, 0), handler)
        self.url = self._server.base_url()
        self._thread: threading.Thread | None = None

    def start(self) -> RecordingProxy:
        self._thread = self._server.serve_in_thread("recording-proxy")
        return self

    def stop(self) -> None:
        self._server.stop_serving()

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
