"""The secret guard itself: it must catch a leak, or every 'no secret in output' claim is hollow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SecretGuard


def test_guard_catches_pem_lines_and_tokens(tmp_path: Path, rsa_keys) -> None:
    """A key body line or a token in any captured text is reported; clean text is not."""
    guard = SecretGuard()
    guard.add(rsa_keys[0].key_pem)
    guard.add("00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog.39AsX.LVhF")
    body_line = rsa_keys[0].key_pem.splitlines()[5]
    assert guard.leaks([("stdout", f"oops {body_line}")])
    assert guard.leaks([("stderr", "token=00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog.39AsX.LVhF")])
    assert not guard.leaks([("stdout", "all clear")])


@pytest.mark.leaks_ok  # the autouse guard would (rightly) fail this test's own tmp_path
def test_guard_collects_secrets_from_records_and_scans_logs(tmp_path: Path, rsa_keys) -> None:
    """Secrets in store records under tmp_path are found, and an audit file holding one fails."""
    guard = SecretGuard()
    guard.roots.append(tmp_path)
    (tmp_path / "store").mkdir()
    record = {"private_key": rsa_keys[1].key_pem, "access_token": "tok-1234567890"}
    (tmp_path / "store" / "key.json").write_text(json.dumps(record))
    guard.collect()
    (tmp_path / "audit.jsonl").write_text('{"event": "x", "t": "tok-1234567890"}\n')
    leaks = guard.leaks([])
    assert leaks and "audit.jsonl" in leaks[0]
