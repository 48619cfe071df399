"""A total deadline for an HTTP exchange: connect, send, headers and the whole body.

requests' `timeout=(connect, read)` bounds each socket operation, not the exchange: a server
that sends one byte every 2 s never trips a 3 s read timeout and can hold a request (and a
rotation worker) for as long as it likes. Here a watchdog timer shuts the connection's
socket down when the deadline passes, which ends any blocking connect, TLS handshake or read
at once; the caller sees a connection error and asks `Deadline.expired` what it was.

    session.mount("https://", DeadlineAdapter())       # any requests.Session (hvac's too)
    with deadline_scope(10.0) as deadline:
        response = session.get(url, timeout=deadline.timeouts(connect=5.0), stream=True)
        body = read_body(response, deadline, limit=1 << 20)

Requests made outside a scope, or through a session without the adapter, behave as before.
The watchdog is one short-lived timer per scope: rotator makes a few requests an hour.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# After the deadline, look again this often for a socket that appeared meanwhile (a connect
# that completed just after the watchdog first fired).
_RECHECK = 0.1


class DeadlineExceeded(Exception):
    """The body did not arrive in time (raised by read_body between chunks)."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._expired = threading.Event()
        self._done = threading.Event()
        self._timer: threading.Thread | None = None

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return self._expired.is_set() or time.monotonic() >= self.at

    def timeouts(self, connect: float) -> tuple[float, float]:
        """requests' (connect, read) timeouts for the time left: no single operation outlasts it."""
        left = max(self.remaining(), 0.001)
        return min(connect, left), left

    # ------------------------------------------------------------------ the watchdog

    def watch(self, connection: Any) -> None:
        with self._lock:
            self._connections.append(connection)
        if self._expired.is_set():
            _shut(connection)

    def start(self) -> None:
        self._timer = threading.Thread(target=self._run, name="rotator-deadline", daemon=True)
        self._timer.start()

    def finish(self) -> None:
        self._done.set()
        with self._lock:
            self._connections.clear()

    def _run(self) -> None:
        if self._done.wait(self.remaining()):
            return
        self._expired.set()
        while True:
            with self._lock:
                connections = list(self._connections)
            for connection in connections:
                _shut(connection)
            if self._done.wait(_RECHECK):
                return


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


_scope = threading.local()


@contextlib.contextmanager
def deadline_scope(seconds: float) -> Iterator[Deadline]:
    """Every connection a DeadlineAdapter hands out in this thread, inside the block, is shut
    down when `seconds` have passed."""
    deadline = Deadline(seconds)
    outer = getattr(_scope, "deadline", None)
    _scope.deadline = deadline
    deadline.start()
    try:
        yield deadline
    finally:
        deadline.finish()
        _scope.deadline = outer


def _watch(connection: Any) -> Any:
    deadline: Deadline | None = getattr(_scope, "deadline", None)
    if deadline is not None:
        deadline.watch(connection)
    return connection


class _HTTPPool(HTTPConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        return _watch(super()._get_conn(timeout))


class _HTTPSPool(HTTPSConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        return _watch(super()._get_conn(timeout))


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections obey the thread's deadline_scope (if any)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def read_body(
    response: requests.Response, deadline: Deadline, *, limit: int, chunk: int = 16384
) -> bytes:
    """The whole body, at most `limit` bytes (ValueError past it), before the deadline
    (DeadlineExceeded). requests' own errors propagate unchanged."""
    chunks: list[bytes] = []
    size = 0
    for piece in response.iter_content(chunk):
        if deadline.expired:
            raise DeadlineExceeded
        size += len(piece)
        if size > limit:
            raise ValueError(f"body larger than {limit} bytes")
        chunks.append(piece)
    if deadline.expired:  # the watchdog may have cut a body that has no Content-Length
        raise DeadlineExceeded
    return b"".join(chunks)
