"""The tools behind docs/reliability.md keep working: `make soak` in miniature, and the report
writer on a small set of records (the real numbers come from `python -m bench.reliability_report`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.reliability_report import render, write_doc
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_soak_in_miniature_keeps_up_and_exits_cleanly(tmp_path: Path) -> None:
    """bench.soak in miniature: every credential rotates about once a second, nothing fails, exit 0."""
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--duration", "6", "--credentials", "3", "--no-write",
         "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["exit_code"] == 0 and summary["credentials_seen"] == 3
    assert summary["failed_events"] == 0 and summary["library_warnings"] == 0
    assert summary["other_lines"] == 0 and summary["stderr_bytes"] == 0
    assert 4 <= summary["requests_min"] <= summary["requests_max"] <= 8
    for key in ("rss_drift_mb", "rss_slope_mb_per_min", "threads_max", "fds_max", "cpu_pct"):
        assert isinstance(summary[key], int | float), key
    assert "| RSS drift (last minute - first minute) |" in done.stdout


RECORDS = [
    {"section": "matrix", "store": "file", "fault": "token endpoint 5xx", "group": "endpoint", "order": 0,
     "gaps": [15, 25, 45], "faults_injected": 1, "rotations_attempted": 6, "faulted_runs": 4,
     "token_requests": 4, "request_bound": 9, "tokens_lost": 0, "recovered": True,
     "diagnosis": "http://127.0.0.1:4242/services/oauth2/token: server error (HTTP 503)"},
    {"section": "crash", "store": "file", "kills": 7, "steps": ["start", "written"], "rotations_attempted": 9,
     "rotations_written": 5, "restarts": 8, "tokens_lost": 0},
    {"section": "bad_input", "kind": "config", "case": "every NaN", "exit_code": 2,
     "line": "credentials.sf.every: a duration must be a finite number of seconds, at most 10 years"},
    {"section": "fuzz", "target": "duration parser", "examples": 600},
    {"section": "hygiene", "check": "file modes under umask 000", "items": 12, "problems": []},
]


def test_report_sections_and_markers(tmp_path: Path) -> None:
    """The report sums the records into its tables and replaces only the marked blocks."""
    sections = render(RECORDS, None, "python -m bench.reliability_report")
    assert "| Tokens lost | **0** |" in sections["summary"]
    assert "| SIGKILLs (crash consistency) | 7 (9 rotations attempted) |" in sections["summary"]
    assert "pass: 6 runs, 4 req (bound 9), lost 0" in sections["matrix"]
    assert "http://127.0.0.1:PORT/services/oauth2/token: server error (HTTP 503)" in sections["matrix"]
    assert "| **all** | **600** |" in sections["fuzz"]
    doc = tmp_path / "reliability.md"
    doc.write_text("intro\n<!-- reliability:fuzz -->\nold\n<!-- /reliability:fuzz -->\noutro\n")
    missing = write_doc(doc, {"fuzz": sections["fuzz"], "crash": sections["crash"]})
    text = doc.read_text()
    assert missing == ["crash"] and "old" not in text and "| duration parser | 600 |" in text
    assert text.startswith("intro\n") and text.endswith("outro\n")
