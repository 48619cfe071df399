"""Hand memory the daemon has freed back to the kernel (glibc's malloc_trim).

glibc's malloc keeps what Python frees - the garbage of start-up (imports, config validation,
APScheduler's entry-point scan) and of a burst of rotations - in its heaps, so the resident
size stays at its high-water mark although the memory is free. `malloc_trim(0)` returns the
free pages of every heap (madvise), which is what an operator watching RSS (or a Kubernetes
memory limit) cares about: an idle daemon with 10 credentials went from 55.4 to 54.2 MiB
(docs/benchmarks.md, "Idle daemon"). The daemon trims when its worker queue drains and once a
minute; a trim costs about a millisecond. Where the C library has no malloc_trim (musl, macOS)
this does nothing.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable

MIN_INTERVAL = 10.0  # seconds between trims: after a busy stretch, not after every run


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        function = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


class Trimmer:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 min_interval: float = MIN_INTERVAL) -> None:
        self._trim = _malloc_trim()
        self._clock = clock
        self._min_interval = min_interval
        self._last = float("-inf")
        self._lock = threading.Lock()
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def trim(self, *, force: bool = False) -> bool:
        """Trim unless one ran less than `min_interval` ago (or `force`). True if it ran."""
        if self._trim is None:
            return False
        with self._lock:
            now = self._clock()
            if not force and now - self._last < self._min_interval:
                return False
            self._last = now
            self.trims += 1
        self._trim(0)
        return True
