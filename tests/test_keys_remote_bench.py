"""bench/mint_remote.py runs end to end (real OpenBao, moto in its own process) and shows that
the keyless signers reuse one connection for all their mints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, rotator_subprocess_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_mint_remote_benchmark_runs_and_reuses_connections(tmp_path: Path) -> None:
    out = tmp_path / "mint-remote.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.mint_remote", "--mints", "30", "--threads", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=110, cwd=REPO, env=rotator_subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert set(rows) == {"PEM (in process)", "Vault Transit (OpenBao)", "AWS KMS (moto)"}
    for name in ("Vault Transit (OpenBao)", "AWS KMS (moto)"):
        assert rows[name]["connections_during_mints"] == 0, rows[name]
        assert rows[name]["p50_ms"] > 0 and rows[name]["per_s_threads"] > 0
    assert "| Vault Transit (OpenBao) |" in result.stdout
