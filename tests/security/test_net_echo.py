"""Issue 15, item 10: what an endpoint says reaches no output raw — capped, escape-free, redacted.

On a0100b0 a 900 KB instance_url became a 900 KB audit line, and ANSI escapes from an
error_description reached the terminal through `rotator status`; STATUS=, /readyz, state.json
and `rotate` output carried them too.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_config
from tests.security.hostile import HostileEndpoint
from tests.test_daemon import DaemonProc, free_port, wait_for

pytestmark = pytest.mark.integration

ANSI = "\x1b[2J\x1b]0;pwned\x07\x1b[31m"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # tab and newline are JSON/line framing
HUGE_URL = "http://" + "a" * 900_000 + ".example/" + ANSI
REJECTION = {"error": "invalid_grant" + ANSI, "error_description": ANSI + "D" * 900_000 + ANSI}
LIMIT = 2000  # no line, field or datagram may be longer (a diagnosis is capped at 1,000)


@pytest.fixture
def evil(secret_guard: Any) -> Iterator[HostileEndpoint]:
    with HostileEndpoint() as server:
        secret_guard.endpoints.append(server)
        yield server


@pytest.fixture
def notify_socket() -> Iterator[socket.socket]:
    directory = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    try:
        yield sock
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(directory)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _check(where: str, text: str, *, limit: int = LIMIT) -> None:
    assert len(text) <= limit, f"{where}: {len(text)} characters"
    assert not CONTROL.search(text), f"{where}: a control character: {CONTROL.search(text)!r}"


def _check_json_line(where: str, line: str) -> None:
    _check(where, line, limit=4 * LIMIT)
    for value in _strings(json.loads(line)):
        _check(f"{where} (decoded)", value)


@pytest.mark.parametrize("reply", ["huge-instance-url", "ansi-error-description"])
def test_hostile_text_is_capped_and_escaped_everywhere(
    tmp_path: Path, evil: HostileEndpoint, run_cli: Any, notify_socket: socket.socket, reply: str
) -> None:
    if reply == "huge-instance-url":
        evil.answer(200, {"access_token": evil.token(), "instance_url": HUGE_URL})
    else:
        evil.answer(400, REJECTION)
    port = free_port()
    config = write_config(
        tmp_path / "rotator.toml", login_url=evil.url,
        credentials={"sf": {"every": "2s", "jitter": "0s", "retry_min": "250ms", "retry_max": "1s"}},
        daemon={"listen": f"127.0.0.1:{port}", "state_dir": "state", "audit_log": "audit.jsonl"},
    )
    assert run_cli("--config", config, "keys", "init", "sf").code == 0

    daemon = DaemonProc(config, tmp_path, "daemon", port,
                        env={"NOTIFY_SOCKET": notify_socket.getsockname()})
    try:
        wait_for(lambda: len(daemon.events("rotation.failed")) >= 2, 20, "two failed rotations")
        state_path = tmp_path / "state" / "state.json"
        wait_for(lambda: state_path.exists() and json.loads(state_path.read_text())["credentials"]["sf"]
                 ["last_error"], 10, "last_error in state.json")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz?verbose", timeout=5) as answer:
            readyz = answer.read().decode()
    except urllib.error.HTTPError as exc:
        readyz = exc.read().decode()
    finally:
        datagrams = []
        try:
            while True:
                datagrams.append(notify_socket.recv(65536).decode("utf-8", "replace"))
        except OSError:
            pass
        daemon.proc.terminate()
        daemon.proc.wait(15)

    status_text = run_cli("--config", config, "status")
    status_json = run_cli("--config", config, "status", "--json")
    rotate = run_cli("--config", config, "rotate", "sf", "--force")
    assert rotate.code == 1

    for index, line in enumerate(daemon.out_path.read_text().splitlines()):
        _check_json_line(f"daemon stdout line {index}", line)
    for index, line in enumerate((tmp_path / "audit.jsonl").read_text().splitlines()):
        _check_json_line(f"audit.jsonl line {index}", line)
    _check("daemon stderr", daemon.err_path.read_text())
    state = (tmp_path / "state" / "state.json").read_text()
    _check_json_line("state.json", " ".join(state.split("\n")))
    _check_json_line("/readyz", readyz.strip())
    assert json.loads(readyz)["credentials"]["sf"]["reason"]
    assert any("STATUS=" in d for d in datagrams)
    for datagram in datagrams:
        for field in datagram.split("\n"):
            _check("STATUS datagram", field)
    for index, line in enumerate(status_text.out.splitlines()):
        _check(f"rotator status line {index}", line)
    assert "last error:" in status_text.out
    _check_json_line("rotator status --json", status_json.out.strip())
    for line in rotate.out.splitlines():
        _check_json_line("rotate output", line)
    for line in rotate.err.splitlines():
        if line.startswith("{"):
            _check_json_line("rotate audit (stderr)", line)
        else:
            _check("rotate stderr", line)
