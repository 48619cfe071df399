"""Issue 15, item 5: one token request has a total deadline (connect, send, headers, body).

On a0100b0 an endpoint sending one byte every second kept a rotation with timeout = "2s"
alive for as long as it had bytes to send: requests' read timeout is per socket read.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import REPO, rotator_subprocess_env, write_config
from tests.security.hostile import HostileEndpoint, good_reply

pytestmark = pytest.mark.integration


@pytest.fixture
def evil(secret_guard: Any) -> Iterator[HostileEndpoint]:
    with HostileEndpoint() as server:
        secret_guard.endpoints.append(server)
        yield server


@pytest.mark.parametrize("headers", [False, True], ids=["body", "status-line-and-headers"])
def test_a_trickling_endpoint_cannot_outlast_the_timeout(
    tmp_path: Path, evil: HostileEndpoint, run_cli: Any, headers: bool
) -> None:
    config = write_config(tmp_path / "rotator.toml", login_url=evil.url,
                          credentials={"sf": {"timeout": "2s"}})
    assert run_cli("--config", config, "keys", "init", "sf").code == 0
    body = json.dumps(good_reply(evil)).encode()  # ~300 bytes: 5 minutes at one a second
    evil.trickle(body, every=1.0, headers=headers)
    began = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "rotator", "--config", str(config), "rotate", "sf", "--force"],
            capture_output=True, text=True, timeout=20, env=rotator_subprocess_env(), cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("rotate was still running 20 s after it started (timeout = 2s)")
    took = time.monotonic() - began
    assert result.returncode == 1, result.stdout + result.stderr
    line = json.loads(result.stdout.splitlines()[0])
    assert "no reply within 2s" in line["error"]
    assert took < 8, f"rotate took {took:.1f}s with timeout 2s"
    assert not (tmp_path / "store" / "sf" / "token.json").exists()


def test_the_deadline_module_on_its_own(evil: HostileEndpoint) -> None:
    """The reusable part (for the Vault and AWS code): any session with the adapter."""
    from rotator.deadline import DeadlineAdapter, DeadlineExceeded, deadline_scope, read_body

    evil.trickle(b"x" * 100, every=0.5)
    session = requests.Session()
    session.mount("http://", DeadlineAdapter(max_retries=0))
    began = time.monotonic()
    errors = (requests.exceptions.RequestException, DeadlineExceeded)
    with deadline_scope(1.0) as deadline, pytest.raises(errors):
        response = session.post(evil.url, data=b"", timeout=deadline.timeouts(connect=5), stream=True)
        read_body(response, deadline, limit=1000)
    assert deadline.expired
    assert time.monotonic() - began < 4
    # outside a scope, the same session is unbounded as before, and still works
    evil.answer(200, b"{}")
    assert session.post(evil.url, data=b"", timeout=5).content == b"{}"
    session.close()


def test_one_watchdog_thread_serves_every_scope(evil: HostileEndpoint) -> None:
    """Fifty open scopes start no thread each; a long outer deadline does not delay a short
    inner one (the watchdog wakes for the earliest)."""
    import contextlib
    import threading

    from rotator.deadline import DeadlineAdapter, DeadlineExceeded, deadline_scope, read_body

    with contextlib.ExitStack() as scopes:
        for _ in range(50):
            scopes.enter_context(deadline_scope(30.0))
        assert sum(t.name == "rotator-deadline" for t in threading.enumerate()) == 1
    evil.trickle(b"x" * 100, every=0.5)
    session = requests.Session()
    session.mount("http://", DeadlineAdapter(max_retries=0))
    began = time.monotonic()
    with deadline_scope(60.0), deadline_scope(1.0) as inner, \
            pytest.raises((requests.exceptions.RequestException, DeadlineExceeded)):
        response = session.post(evil.url, data=b"", timeout=inner.timeouts(connect=5), stream=True)
        read_body(response, inner, limit=1000)
    assert inner.expired and time.monotonic() - began < 4
    session.close()
