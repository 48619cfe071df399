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
One watchdog thread per process serves every scope (a heap of deadlines): starting a thread
per request cost more CPU than the rest of the deadline machinery together.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

if TYPE_CHECKING:
    import requests

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
        self._expired = False
        self._done = False

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return self._expired or time.monotonic() >= self.at

    def timeouts(self, connect: float) -> tuple[float, float]:
        """requests' (connect, read) timeouts for the time left: no single operation outlasts it."""
        left = max(self.remaining(), 0.001)
        return min(connect, left), left

    # ------------------------------------------------------------------ the watchdog

    def watch(self, connection: Any) -> None:
        with self._lock:
            self._connections.append(connection)
            expired = self._expired
        if expired:
            _shut(connection)

    def start(self) -> None:
        _watchdog.add(self)

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._connections.clear()

    def _fire(self) -> bool:
        """Shut every watched connection down (the watchdog calls this from the deadline on);
        False once the scope has finished and needs no more watching."""
        with self._lock:
            if self._done:
                return False
            self._expired = True
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)
        return True


class _Watchdog:
    """One daemon thread for every deadline in the process: sleeps until the earliest one,
    then shuts its connections down, and again every _RECHECK until its scope finishes (a
    connect that completed just after the first shot)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline.at, next(self._seq), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rotator-deadline", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._cond.notify()  # a new earliest deadline: wake up sooner

    def _run(self) -> None:
        with self._cond:
            while True:
                # finished scopes at the front are dropped without waiting for their time
                while self._heap and self._heap[0][2]._done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                at, _, deadline = self._heap[0]
                now = time.monotonic()
                if now < at:
                    self._cond.wait(at - now)
                    continue
                heapq.heappop(self._heap)
                if deadline._fire():
                    heapq.heappush(self._heap, (now + _RECHECK, next(self._seq), deadline))

    def reset(self) -> None:
        """In a forked child: the parent's thread does not exist here."""
        self._cond = threading.Condition(threading.Lock())
        self._heap = []
        self._thread = None


_watchdog = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watchdog.reset)


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


# pools whose connections obey deadline_scope (a PoolManager's pool_classes_by_scheme)
POOL_CLASSES = {"http": _HTTPPool, "https": _HTTPSPool}
_POOLS = POOL_CLASSES


def _adapter_class() -> type:
    """DeadlineAdapter, made on first use: requests (~9 MiB resident) is imported only by a
    process that uses it (a proxy, the Vault store, the Metadata API, the token probe)."""
    from requests.adapters import HTTPAdapter

    class DeadlineAdapter(HTTPAdapter):
        """An HTTPAdapter whose connections obey the thread's deadline_scope (if any)."""

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **proxy_kwargs)
            manager.pool_classes_by_scheme = dict(_POOLS)
            return manager

    return DeadlineAdapter


_made: dict[str, type] = {}


def __getattr__(name: str) -> Any:  # PEP 562: `from rotator.deadline import DeadlineAdapter`
    if name == "DeadlineAdapter":
        if name not in _made:
            _made[name] = _adapter_class()
        return _made[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
