"""`rotate --all` on a large fleet fans out over one process per core and stays correct."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rotator.cli.fanout import FANOUT_MIN, process_count
from tests.conftest import CLIENT_ID, USERNAME, run_rotator, write_config


def test_process_count() -> None:
    """Small fleets stay in one process; large ones use at most one process per core."""
    assert process_count(FANOUT_MIN - 1) == 1
    assert 1 <= process_count(100 * FANOUT_MIN) <= 64


def test_large_fleet_rotates_in_order_with_a_valid_audit_chain(run_cli, endpoint, tmp_path: Path,
                                                               secret_guard) -> None:
    """250 credentials: every one rotated once, lines in name order, audit chain intact."""
    names = [f"c{i:03d}" for i in range(250)]
    config = write_config(tmp_path / "r.toml", login_url=endpoint.url,
                          credentials={name: {} for name in names},
                          daemon={"audit_log": "audit.jsonl", "workers": 4})
    cert = run_cli("--config", config, "keys", "init", names[0]).out
    endpoint.register_app(CLIENT_ID, cert, users=[USERNAME])
    first = tmp_path / "store" / names[0] / "key.json"
    for name in names[1:]:  # one key shared by the fleet: key generation is not under test
        (tmp_path / "store" / name).mkdir(mode=0o700)
        shutil.copy2(first, tmp_path / "store" / name / "key.json")
    proc = run_rotator("--config", config, "rotate", "--all", timeout=120)
    secret_guard.seen("rotate --all stdout", proc.stdout)
    secret_guard.seen("rotate --all stderr", proc.stderr)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["name"] for line in lines] == names
    assert all(line["ok"] and line["action"] == "rotated" for line in lines)
    assert endpoint.token_requests == 250
    tokens = {json.loads((tmp_path / "store" / n / "token.json").read_text())["access_token"]
              for n in names}
    assert len(tokens) == 250
    verified = run_rotator("--config", config, "audit", "verify", tmp_path / "audit.jsonl")
    assert verified.returncode == 0, verified.stdout + verified.stderr
