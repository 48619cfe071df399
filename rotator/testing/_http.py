"""HTTP/1.1 server plumbing shared by the loopback emulators (Salesforce, Vault).

The emulators must behave like the real services on the wire: keep-alive with one thread
per connection, a reply in one TCP segment, request bodies sent with Content-Length or
chunked, an abrupt TCP reset on demand, and a stop() that returns at once even while
clients hold idle connections. What differs per emulator — routing, reply format, the
body size cap and the error body for a malformed request — stays in the emulator,
through the small hooks of :class:`EmulatorHandler`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["EmulatorHandler", "EmulatorServer"]


class EmulatorServer(ThreadingHTTPServer):
    """A threading HTTP server that remembers its open connections so stop() can drop them.

    ``shutdown()`` alone only stops accepting: a client holding a keep-alive connection would
    keep its handler thread (and the port) busy until the idle timeout.
    """

    daemon_threads = True
    block_on_close = False  # stop() must not wait for idle keep-alive connections

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def base_url(self, scheme: str = "http") -> str:
        """``scheme://host:port`` of the bound address, IPv6 hosts in brackets, no slash."""
        host, port = str(self.server_address[0]), self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}"

    def serve_in_thread(self, name: str) -> threading.Thread:
        """Serve in a started daemon thread; a short poll keeps shutdown() quick."""
        thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        thread.start()
        return thread

    def stop_serving(self) -> None:
        """Stop accepting, close the listening socket and drop every open connection."""
        self.shutdown()
        self.server_close()
        self.close_connections()

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut down every tracked connection; its handler then sees EOF and finishes."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away (or a "reset" fault of ours made it): nothing to report
        super().handle_error(request, client_address)


class EmulatorHandler(BaseHTTPRequestHandler):
    """Keep-alive request handler: reads the body, then hands over to :meth:`_dispatch`.

    Subclasses set ``server_version``, ``max_request_body`` and ``body_too_large_message``
    and implement :meth:`_dispatch` (route and reply) and :meth:`_refuse` (the emulator's own
    error body for a malformed or oversized request). Every method BaseHTTPRequestHandler
    does not find a ``do_<METHOD>`` for gets its stock 501 page.
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # with wbufsize: a reply leaves in one segment, no 40 ms stall
    wbufsize = 1 << 16
    timeout = 60  # idle keep-alive connections are dropped after this many seconds
    sys_version = ""
    max_request_body: int
    body_too_large_message: str
    server: EmulatorServer

    # ---- hooks

    def _dispatch(self, body: bytes) -> None:
        """Answer the request whose body is `body` (or call :meth:`_reset_connection`)."""
        raise NotImplementedError

    def _refuse(self, status: int, message: str) -> None:
        """Reply `status` with `message` in the emulator's error format and end the connection.

        The body was not (fully) read, so the connection cannot carry another request.
        """
        raise NotImplementedError

    # ---- plumbing

    def setup(self) -> None:
        self._reset = False
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)
            if self._reset:
                self.connection.close()  # with SO_LINGER 0 this sends the RST

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests run many requests; stderr stays for real errors (handle_error)

    def do_GET(self) -> None:
        body = self._read_body()
        if body is not None:
            self._dispatch(body)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _reset_connection(self) -> None:
        """Abort with a TCP RST and no reply, as a crashing server or a middlebox would."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._reset = True
        self.close_connection = True

    def _read_body(self) -> bytes | None:
        """The request body (b"" if none), or None after :meth:`_refuse` has answered."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self._refuse(400, "bad Content-Length")
            return None
        if length > self.max_request_body:
            self._refuse(413, self.body_too_large_message)
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        """A chunked body (extensions and trailers skipped), capped at ``max_request_body``."""
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1026)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._refuse(400, "bad chunk")
                return None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > self.max_request_body:
                self._refuse(413, self.body_too_large_message)
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(3)
