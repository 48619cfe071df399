"""`rotator demo` (what `make run` runs): the full loop on the embedded default, end to end."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_rotator


def test_demo_runs_the_whole_loop(tmp_path: Path, secret_guard) -> None:
    """The demo makes a key, uploads the cert, rotates, and a consumer queries with each token."""
    demo_dir = tmp_path / "demo"
    proc = run_rotator("demo", "--duration", "2.5", "--every", "1s", "--dir", demo_dir, timeout=60)
    secret_guard.seen("demo stdout", proc.stdout)
    secret_guard.seen("demo stderr", proc.stderr)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "keys init: new RSA-2048 key" in out
    assert "uploaded to the connected app" in out
    assert out.count("SOQL ok") >= 2
    assert "0 failed" in out
    token = json.loads((demo_dir / "store" / "demo" / "access-token.json").read_text())
    assert token["credential"] == "demo"
    assert (demo_dir / "audit.jsonl").stat().st_size > 0
    assert demo_dir.stat().st_mode & 0o777 == 0o700
    # a second run reuses the key instead of making a new one
    again = run_rotator("demo", "--duration", "1", "--every", "1s", "--dir", demo_dir, timeout=60)
    assert again.returncode == 0
    assert "reusing the key" in again.stdout


def test_demo_audit_trail_verifies(tmp_path: Path) -> None:
    """The demo's audit file is hash-chained: `rotator audit verify` accepts it."""
    demo_dir = tmp_path / "demo"
    assert run_rotator("demo", "--duration", "1", "--every", "1s", "--dir", demo_dir).returncode == 0
    verified = run_rotator("--config", demo_dir / "rotator.toml", "audit", "verify", demo_dir / "audit.jsonl")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("ok: ")
