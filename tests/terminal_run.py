"""Run the real CLI with stdout and/or stderr on a pseudo-terminal, as a person would see it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import rotator_subprocess_env


@dataclass
class TerminalRun:
    code: int
    out: str  # what reached stdout (the terminal's text when stdout was the pty)
    err: str
    tty: str  # everything the terminal received, raw (\r, escape codes)


def run_on_terminal(*args: str | Path, stdout_tty: bool = True, stderr_tty: bool = False,
                    env: dict[str, str] | None = None, timeout: float = 120,
                    stop_on: str | None = None) -> TerminalRun:
    """`python -m rotator ARGS` with the chosen streams on one pty, the others to files.
    `stop_on`: SIGTERM once the terminal shows this text (for the daemon)."""
    master, slave = os.openpty()
    environ = rotator_subprocess_env()
    environ.pop("NO_COLOR", None)  # colour unless the test asks for NO_COLOR
    environ.update({"TERM": "xterm-256color", **(env or {})})
    # the stream not on the pty goes to a file: a pipe nobody reads until the end could fill up
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rotator", *map(str, args)],
            stdin=subprocess.DEVNULL, stdout=slave if stdout_tty else out_file,
            stderr=slave if stderr_tty else err_file, env=environ,
        )
        os.close(slave)
        chunks = _read_until_closed(master, proc, timeout, stop_on, args)
        proc.wait(timeout=timeout)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    tty = b"".join(chunks).decode("utf-8", "replace")
    text = tty.replace("\r\n", "\n")  # the pty's output processing turns \n into \r\n
    return TerminalRun(
        proc.returncode,
        text if stdout_tty else out.decode("utf-8", "replace"),
        text if stderr_tty else err.decode("utf-8", "replace"),
        tty,
    )


def _read_until_closed(master: int, proc: subprocess.Popen[bytes], timeout: float,
                       stop_on: str | None, args: tuple[str | Path, ...]) -> list[bytes]:
    """Everything the terminal receives, until the child closes it (EIO on Linux)."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"rotator {args} did not finish in {timeout}s")
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None and not select.select([master], [], [], 0)[0]:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
            if stop_on is not None and stop_on in b"".join(chunks).decode("utf-8", "replace"):
                proc.send_signal(signal.SIGTERM)  # the daemon: stop it once it said this
                stop_on = None
    finally:
        os.close(master)
    return chunks
