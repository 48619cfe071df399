"""systemd's sd_notify protocol, without libsystemd: datagrams on $NOTIFY_SOCKET.

    READY=1                      start-up (and a reload) is complete
    RELOADING=1 + MONOTONIC_USEC a reload begins (Type=notify-reload wants the timestamp)
    STOPPING=1                   a stop begins
    STATUS=...                   one line for `systemctl status`
    WATCHDOG=1                   "still alive", every WATCHDOG_USEC/2

$NOTIFY_SOCKET is a path, or "@name" for Linux's abstract namespace. Without it (not under
systemd, or NotifyAccess=none) every call is a no-op. A send that fails is reported to the
caller as False and otherwise ignored: the supervisor's channel must never stop the daemon.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping

from rotator.sanitize import clean_text


def socket_address(value: str | None) -> str | None:
    """The AF_UNIX address of $NOTIFY_SOCKET: a path, or '\\0name' for '@name'; else None."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock:... and anything else is not ours to speak


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked.

    WATCHDOG_PID, when set, names the process the watchdog is for: another one must not ping.
    """
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner.strip() != str(pid):
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it (MONOTONIC_USEC=)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """One unconnected datagram socket, reused for every message."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = socket_address(env.get("NOTIFY_SOCKET"))
        self.watchdog_interval = watchdog_interval(env, os.getpid()) if self.address else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send `fields` (e.g. "READY=1", "STATUS=...") as one datagram; False if not sent."""
        if self.address is None:
            return False
        message = "\n".join(_one_line(field) for field in fields).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(message, self.address)
                return True
            except OSError:
                self._close()
                return False

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self, status: str = "reloading the configuration") -> bool:
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


MAX_FIELD = 1024


def _one_line(field: str) -> str:
    """One line of printable text: a STATUS= may quote an endpoint's error, and `systemctl
    status` prints it to a terminal."""
    text = clean_text(" ".join(field.split("\n")))
    return text if len(text) <= MAX_FIELD else text[: MAX_FIELD - 1] + "…"
