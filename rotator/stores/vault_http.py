"""The HTTP session under the Vault store: redirects only to trusted hosts, a total deadline.

hvac (through requests) follows redirects by default and re-sends ``X-Vault-Token`` — and a
POST body such as a login or a token record — to wherever a ``Location`` points, plain
``http://`` included. And requests' ``timeout`` bounds each socket read, not the request: a
server that trickles one byte a second holds a rotation forever. :class:`GuardedSession`
closes both gaps for every request hvac makes:

* **Redirects** are followed by this session, never by requests: only a 307/308 (method and
  body kept) or a 301/302/303 of a GET, at most :data:`MAX_REDIRECTS` times, and only when
  the target passes rotator's URL rule (https, or http on loopback) *and* its host:port is the
  configured Vault's or one the operator listed in the store setting ``redirect_hosts``. Any
  other redirect raises :class:`RedirectRefused` before a byte goes to the other host.
* **Deadline**: a watchdog shuts the request's socket down when ``deadline`` seconds have
  passed since the request started (connect, headers, body and redirects together); the
  request then fails and :attr:`GuardedSession.expired` says why.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from rotator.urls import check_url

MAX_REDIRECTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)
_active = threading.local()  # the sockets of this thread's current guarded request


class RedirectRefused(requests.exceptions.RequestException):
    """Vault answered with a redirect to a host we must not send the token to."""


class DeadlineExceeded(requests.exceptions.Timeout):
    """The whole request took longer than the store's timeout."""


def _note_socket(sock: socket.socket | None) -> None:
    box = getattr(_active, "box", None)
    if box is not None and sock is not None:
        box.append(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _note_socket(sock)  # a new connection: watched from before its TLS handshake
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().request(*args, **kwargs)
        finally:
            _note_socket(self.sock)  # type: ignore[arg-type]


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _note_socket(sock)  # a new connection: watched from before its TLS handshake
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().request(*args, **kwargs)
        finally:
            _note_socket(self.sock)  # type: ignore[arg-type]


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool,
                                                   "https": _WatchedHTTPSPool}


def _origin(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return host, port


class GuardedSession(requests.Session):
    """A requests session for one Vault store (see the module docstring)."""

    def __init__(self, address: str, *, deadline: float, redirect_hosts: tuple[str, ...] = ()
                 ) -> None:
        super().__init__()
        self.deadline = deadline
        self._allowed = {_origin(address)}
        scheme = urlsplit(address).scheme
        for entry in redirect_hosts:
            self._allowed.add(_origin(entry if "//" in entry else f"{scheme}://{entry}"))
        adapter = _WatchedAdapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self.expired = False

    def check_redirect(self, url: str) -> str | None:
        """Why `url` may not be followed, or None when it may."""
        try:
            check_url(url)
        except ValueError as exc:
            return str(exc)
        if _origin(url) not in self._allowed:
            return "not the configured Vault host (list it in the store's redirect_hosts to allow)"
        return None

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
                ) -> requests.Response:  # type: ignore[override]
        kwargs["allow_redirects"] = False
        box: list[socket.socket] = []
        _active.box = box
        self.expired = False
        fired = threading.Event()

        def expire() -> None:
            fired.set()
            for sock in list(box):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(self.deadline, expire)
        timer.daemon = True
        timer.start()
        try:
            method = method.decode() if isinstance(method, bytes) else method
            url = url.decode() if isinstance(url, bytes) else url
            for _ in range(MAX_REDIRECTS + 1):
                response = self._send_once(method, url, fired, *args, **kwargs)
                location = response.headers.get("Location")
                if response.status_code not in _REDIRECTS or not location:
                    return response
                if response.status_code not in (307, 308) and method.upper() not in ("GET", "HEAD"):
                    return response  # would turn a write into a GET: not a redirect we follow
                target = urljoin(url, location)
                reason = self.check_redirect(target)
                response.close()
                if reason is not None:
                    host = urlsplit(target).netloc[:100]
                    raise RedirectRefused(f"refused a redirect to {host!r}: {reason}")
                url = target
            raise RedirectRefused(f"more than {MAX_REDIRECTS} redirects")
        finally:
            timer.cancel()
            _active.box = None

    def _send_once(self, method: str, url: str, fired: threading.Event, *args: Any,
                   **kwargs: Any) -> requests.Response:
        if fired.is_set():
            self.expired = True
            raise DeadlineExceeded(f"no complete answer within {self.deadline:g}s")
        try:
            response = super().request(method, url, *args, **kwargs)
            _ = response.content  # read the body now, still under the watchdog
        except requests.exceptions.RequestException:
            if fired.is_set():
                self.expired = True
                raise DeadlineExceeded(f"no complete answer within {self.deadline:g}s") from None
            raise
        if fired.is_set():
            self.expired = True
            raise DeadlineExceeded(f"no complete answer within {self.deadline:g}s")
        return response
