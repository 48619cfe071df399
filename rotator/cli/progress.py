"""The progress line of `rotate --all` at a terminal: done, failed, rate, ETA, on stderr.

Rewritten in place (carriage return + erase line), at most every INTERVAL seconds. Audit
events go to the same terminal: they pass through `LineGuard`, which erases the progress
line before each event and draws it again after, so events scroll above it and the line
stays at the bottom. Only ever used when stderr is a terminal: piped, nothing of this runs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TextIO

from rotator.cli.terminal import RED, paint
from rotator.durations import format_duration

INTERVAL = 0.1  # seconds between redraws: smooth enough, cheap for thousands of rotations
ERASE = "\r\x1b[K"


class Progress:
    def __init__(self, total: int, stream: TextIO, *, colour: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.stream, self.colour, self.clock = total, stream, colour, clock
        self.done = self.failed = 0
        self.began = clock()
        self._drawn_at: float | None = None
        self._shown = False  # the line is on the screen (not erased by an event)
        self.lock = threading.RLock()
        self.pid = os.getpid()  # forked children inherit this object and must not draw

    def advance(self, ok: bool) -> None:
        """One rotation finished (thread-safe)."""
        with self.lock:
            self.done += 1
            self.failed += 0 if ok else 1
            self.draw()

    def update(self, done: int, failed: int) -> None:
        """Counts from elsewhere (the forked children's shared counters)."""
        with self.lock:
            self.done, self.failed = done, failed
            self.draw()

    def text(self) -> str:
        elapsed = max(self.clock() - self.began, 1e-6)
        rate = self.done / elapsed
        parts = [f"rotating {self.done}/{self.total}"]
        failed = f"{self.failed} failed"
        parts.append(paint(failed, RED, self.colour) if self.failed else failed)
        parts.append(f"{rate:.0f}/s" if rate >= 10 else f"{rate:.1f}/s")
        if self.done < self.total:
            parts.append(f"ETA {format_duration((self.total - self.done) / rate)}" if rate > 0 else "ETA -")
        else:
            parts.append(f"in {elapsed:.1f}s")
        return "  ".join(parts)

    def draw(self, *, force: bool = False) -> None:
        if os.getpid() != self.pid:
            return
        with self.lock:
            now = self.clock()
            if not force and self._shown and self._drawn_at is not None and now - self._drawn_at < INTERVAL:
                return
            self._drawn_at, self._shown = now, True
            self.stream.write(ERASE + self.text())
            self.stream.flush()

    def mark_drawn(self) -> None:
        """Someone else (LineGuard) wrote text() to the screen just now."""
        self._drawn_at, self._shown = self.clock(), True

    def finish(self) -> None:
        """The last state stays on the screen, as a summary line."""
        with self.lock:
            if os.getpid() == self.pid:
                self.draw(force=True)
                self.stream.write("\n")
                self.stream.flush()
                self._shown = False
                self.pid = -1  # nothing draws after this


class LineGuard:
    """A stream for the audit pipeline that keeps the progress line below the events.

    Each whole event line goes out in one write, the progress line's erasure in front and
    (in the drawing process) its redraw behind: the forked children write to the same
    terminal, and one write each keeps their lines and the parent's redraws from cutting
    into one another."""

    def __init__(self, stream: TextIO, progress: Progress) -> None:
        self.stream, self.progress = stream, progress
        self._pending = ""

    def write(self, text: str) -> int:
        if os.getpid() != self.progress.pid:
            # a forked worker: the audit pipeline hands over whole lines (one write each);
            # erase what the parent drew on this line, which it redraws. No shared lock: one
            # held by a parent thread at fork time would never be released here.
            return self.stream.write(ERASE + text)
        with self.progress.lock:
            self._pending += text
            if "\n" not in self._pending:
                return len(text)
            lines, _, self._pending = self._pending.rpartition("\n")
            self.stream.write(ERASE + lines + "\n" + self.progress.text())
            self.progress.mark_drawn()
            self.stream.flush()
            return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return True
