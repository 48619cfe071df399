"""The benchmarks still run and still produce well-formed tables (no timing assertions).

`make bench` is not part of CI; this keeps bench/ from rotting: every benchmark module runs
once with tiny sizes (the hidden `smoke` profile) in a child process, once more as if
hyperfine, /usr/bin/time, openssl and curl were absent (they must become notes), and the
document writer is checked on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench._common import Table
from bench.run_all import MODULES, write_doc

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def test_every_benchmark_runs_and_yields_well_formed_rows(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--profile", "smoke", "--no-write", "--quiet",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=110,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "malformed table" not in done.stderr
    result = json.loads(out.read_text())
    assert set(result["tables"]) == set(MODULES)

    def check(table: dict) -> None:
        assert table["columns"], table["key"]
        assert table["rows"], f"{table['key']}: no rows"
        for row in table["rows"]:
            assert list(row) == table["columns"], (table["key"], row)
            for value in row.values():
                assert isinstance(value, str | int | float) and value != "", (table["key"], row)
        for sub in table["extra"]:
            check(sub)

    for table in result["tables"].values():
        assert "traceback" not in table["data"], table["data"].get("traceback")
        check(table)

    tables = result["tables"]
    # what each benchmark must at least have measured, tools or not
    assert [r["Key"] for r in tables["mint"]["rows"]][:1] == ["RSA-2048"]
    assert any(r["Store"] == "file" and r["N"] == 5 for r in tables["rotation"]["rows"])
    assert any(r["Failed"] == 0 and "CLI" in r["Run"] for r in tables["fleet"]["rows"])
    assert all(r["Failed"] == 0 for r in tables["fleet"]["rows"])
    assert any(r["Config"] == "file" for r in tables["footprint"]["rows"])
    tools = {r["Tool"]: r for r in tables["alternatives"]["rows"]}
    assert tools["rotator, in-process engine"]["Tokens/s"] > 0
    assert tools["simple-salesforce JWT login"]["Tokens/s"] > 0
    assert "machine" not in result["facts"]  # facts are labelled, e.g. CPU, Python
    assert {"CPU", "Python", "OpenSSL (CLI)"} <= set(result["facts"])


def test_the_document_writer_replaces_only_its_blocks(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\nIntro.\n\n## Mint: assertions per second\n\nHand-written prose.\n\n"
        "<!-- bench:mint -->\nold table\n<!-- /bench:mint -->\n\nMore prose.\n\n"
        "## Idle daemon\n\nThe daemon engineer's section.\n"
    )
    table = Table("fleet", "Fleet", ["A", "B"])
    table.add(A="x", B=1.5)
    assert table.problems() == []
    write_doc(doc, {"meta": "machine facts", "mint": "new table", "fleet": table.markdown()})
    text = doc.read_text()
    assert "old table" not in text and "new table" in text
    assert "Hand-written prose." in text and "More prose." in text
    assert text.count("## Idle daemon") == 1 and text.rstrip().endswith("The daemon engineer's section.")
    assert text.index("<!-- bench:fleet -->") < text.index("## Idle daemon")
    assert text.index("<!-- bench:meta -->") < text.index("## Mint")
    assert "| x | 1.50 |" in text
    write_doc(doc, {"mint": "newer table"})  # idempotent on its markers
    again = doc.read_text()
    assert again.count("<!-- bench:mint -->") == 1 and "newer table" in again


def test_a_malformed_row_is_reported() -> None:
    table = Table("t", "T", ["A", "B"])
    table.add(A=1)
    table.add(A=1, B=float("nan"))
    table.add(A=1, B=None)
    problems = table.problems()
    assert len(problems) == 3


def test_missing_tools_become_notes_not_errors(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--profile", "smoke", "--no-write", "--quiet",
         "--only", "mint,footprint,alternatives", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=110,
        env={**os.environ, "BENCH_WITHOUT": "hyperfine,time,openssl,curl"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    tables = json.loads(out.read_text())["tables"]
    notes = " ".join(n for t in tables.values() for n in t["notes"])
    assert "openssl is not installed" in notes
    assert "hyperfine is not installed" in notes and "wait4()" in notes
    assert "openssl, curl not installed" in notes
    assert "openssl + curl shell loop" not in {r["Tool"] for r in tables["alternatives"]["rows"]}
    assert all(r["Max RSS MiB"] != "—" for r in tables["footprint"]["rows"] if r["Config"] == "file")


def _summary(credentials: int, counts: list[float], *, duration: float = 600.0,
             skipped: float = 0, coalesced: float = 0, warnings: int = 0) -> dict:
    return {
        "credentials": credentials, "interval_s": 1.0, "duration_s": duration,
        "counts": counts, "requests_min": min(counts), "requests_median": sorted(counts)[len(counts) // 2],
        "requests_max": max(counts), "requests_total": sum(counts), "requests_ideal": duration,
        "credentials_seen": len(counts), "rate": sum(counts) / duration,
        "rotations": {"skipped": skipped, "failure": 0.0}, "coalesced": coalesced,
        "library_warnings": warnings, "cpu_pct": 50.0, "rss_max_mb": 60.0,
    }


def test_capacity_verdicts_follow_the_counts() -> None:
    """bench.capacity's table: fair within ±10 % of the share, and "none lost" means none."""
    from bench.capacity import section

    fair = {"capacity": 400.0, "probe": 120.0, "duration": 600.0,
            "overload": _summary(600, [80.0] * 599 + [81.0], duration=120.0, coalesced=900),
            "at80": _summary(320, [600.0] * 319 + [599.0]),
            "at50": _summary(200, [600.0] * 200)}
    rows = [line for line in section(fair, "cmd").splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[8] for row in rows] == ["yes", "yes", "yes"]
    assert rows[2].split(" | ")[10] == "yes"  # none lost at 50 %
    unfair = {**fair, "at80": _summary(320, [600.0] * 300 + [500.0] * 20),
              "at50": _summary(200, [600.0] * 200, skipped=1)}
    rows = [line for line in section(unfair, "cmd").splitlines() if line.startswith("| ")][1:]
    assert rows[1].split(" | ")[8] == "**no**" and rows[2].split(" | ")[10] == "**no**"
