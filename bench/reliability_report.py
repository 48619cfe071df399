"""Run the reliability suite and write its numbers into docs/reliability.md.

`python -m bench.reliability_report` runs `pytest -n 2 tests/reliability` with
ROTATOR_RELIABILITY_OUT set, so that every test appends what it did (faults injected,
rotations attempted, token requests against the policy's bound, tokens lost, kills, bad
inputs with their exit code and line, fuzz examples, hygiene checks) as JSON lines; this
module sums them up and rewrites the sections between `<!-- reliability:NAME -->` markers of
docs/reliability.md. The soak section belongs to bench.soak and is left alone.

Options: `--no-write` prints only; `--records DIR` summarises the JSON lines of an earlier run
instead of running pytest; `--json FILE` keeps the raw records.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "reliability.md"
STORES = ("file", "vault", "aws")
STORE_NAMES = {"file": "file store", "vault": "Vault KV v2 (emulator)", "aws": "Secrets Manager (moto)"}


def run_suite(out: Path) -> dict[str, Any]:
    """pytest -n 2 tests/reliability, recording into `out`; returns counts and timings."""
    junit = out / "junit.xml"
    env = {**os.environ, "ROTATOR_RELIABILITY_OUT": str(out)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/reliability",
            f"--junitxml={junit}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite is not None
    totals = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    tail = done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else []
    return {
        "exit_code": done.returncode,
        "wall_s": wall,
        "cpu_s": cpu,
        **totals,
        "summary": tail[0] if tail else "",
        "output": done.stdout[-4000:] + done.stderr[-2000:],
    }


def load_records(directory: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(directory.glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ---------------------------------------------------------------------------- sections


def section_summary(records: list[dict[str, Any]], run: dict[str, Any] | None, command: str) -> str:
    by = Counter(r["section"] for r in records)
    matrix = [r for r in records if r["section"] == "matrix"]
    daemon = [r for r in records if r["section"] == "daemon"]
    crash = [r for r in records if r["section"] == "crash"]
    fuzz = [r for r in records if r["section"] == "fuzz"]
    lost = sum(r.get("tokens_lost", 0) for r in matrix + daemon + crash)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        ("Fault matrix cells (store x fault), in-process", f"{len(matrix)}"),
        (
            "Faults injected / faulted runs",
            f"{sum(r['faults_injected'] for r in matrix + daemon)} / "
            f"{sum(r.get('faulted_runs', r.get('failed_runs', 0)) for r in matrix + daemon)}",
        ),
        (
            "Rotations attempted under faults (matrix + real daemons)",
            f"{sum(r['rotations_attempted'] for r in matrix + daemon)}",
        ),
        ("Real daemon fault cells", f"{len(daemon)}"),
        (
            "SIGKILLs (crash consistency)",
            f"{sum(r['kills'] for r in crash)} "
            f"({sum(r['rotations_attempted'] for r in crash)} rotations attempted)",
        ),
        ("Tokens lost", f"**{lost}**"),
        ("Bad inputs, each with its one-line error and exit code", f"{by['bad_input']}"),
        (
            "Fuzzing examples (Hypothesis, derandomized)",
            f"{sum(r['examples'] for r in fuzz)} over {len(fuzz)} targets",
        ),
        ("Secret hygiene checks", f"{by['hygiene']}"),
    ]
    if run is not None:
        rows.append(
            (
                "Tests in tests/reliability",
                f"{run['tests']} ({run['failures']} failed, "
                f"{run['errors']} errors, {run['skipped']} skipped)",
            )
        )
        rows.append(
            (
                "Suite time, `pytest -n 2` on this machine",
                f"{run['wall_s']:.0f} s wall, {run['cpu_s']:.0f} s CPU (all processes)",
            )
        )
    table = ["| | |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]]
    return "\n".join([f"_Generated {when} by `{command}` at commit {_commit()}._", "", *table]) + "\n"


def _cell(record: dict[str, Any] | None) -> str:
    if record is None:
        return "—"
    mark = "pass" if record["tokens_lost"] == 0 and record["recovered"] else "**FAIL**"
    return (
        f"{mark}: {record['rotations_attempted']} runs, {record['token_requests']} req "
        f"(bound {record['request_bound']}), lost {record['tokens_lost']}"
    )


def _code(text: Any) -> str:
    return "`" + str(text).replace("|", "\\|").replace("`", "'") + "`"


def section_matrix(records: list[dict[str, Any]]) -> str:
    rows = sorted((r for r in records if r["section"] == "matrix"), key=lambda r: r.get("order", 0))
    cells = {(r["store"], r["fault"]): r for r in rows}
    faults: dict[str, dict[str, Any]] = {}
    for r in rows:
        faults.setdefault(r["fault"], r)
    lines = [
        "| Fault | Group | " + " | ".join(STORE_NAMES[s] for s in STORES) + " | Gaps between runs (s) |",
        "|---|---|" + "---|" * len(STORES) + "---|",
    ]
    for fault, first in faults.items():
        gaps = ", ".join(f"{g:g}" for g in first.get("gaps", [])) or "—"
        lines.append(
            f"| {fault} | {first['group']} | "
            + " | ".join(_cell(cells.get((s, fault))) for s in STORES)
            + f" | {gaps} |"
        )
    total = len(rows)
    lines.append(f"| **{total} cells** | | | | | lost: **{sum(r['tokens_lost'] for r in rows)}** |")
    diagnoses = [
        "",
        "<details><summary>What each fault was audited as: the diagnosis of its first "
        "rotation.failed event</summary>",
        "",
        "| Fault | Store | Diagnosis |",
        "|---|---|---|",
    ]
    for fault, first in faults.items():
        stores = [s for s in STORES if (s, fault) in cells]
        if first["group"] == "store":
            for store in stores:
                if cells[(store, fault)].get("diagnosis"):
                    diagnoses.append(
                        f"| {fault} | {store} | {_code(_short(cells[(store, fault)]['diagnosis'], 400))} |"
                    )
        elif first.get("diagnosis"):
            diagnoses.append(f"| {fault} | all | {_code(_short(first['diagnosis'], 400))} |")
    diagnoses += ["", "</details>"]
    return "\n".join(lines + diagnoses) + "\n"


def section_daemon(records: list[dict[str, Any]]) -> str:
    rows = [r for r in records if r["section"] == "daemon"]
    lines = [
        "| Store | Fault | Runs | Failed runs | Token requests (bound) | Tokens lost | Recovered |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: STORES.index(r["store"])):
        lines.append(
            f"| {STORE_NAMES[r['store']]} | {r['fault']} | {r['rotations_attempted']} | "
            f"{r['failed_runs']} | {r['token_requests']} ({r['request_bound']}) | {r['tokens_lost']} | "
            f"{'yes' if r['recovered'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def section_crash(records: list[dict[str, Any]]) -> str:
    rows = [r for r in records if r["section"] == "crash"]
    lines = [
        "| Store | SIGKILLs | Where | Rotations attempted / written | Daemon starts | Tokens lost |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['store']} | {r['kills']} | {', '.join(r['steps'])} | {r['rotations_attempted']} / "
            f"{r['rotations_written']} | {r['restarts']} | {r['tokens_lost']} |"
        )
    total = sum(r["kills"] for r in rows)
    lines.append(
        f"| **all** | **{total}** | | {sum(r['rotations_attempted'] for r in rows)} / "
        f"{sum(r['rotations_written'] for r in rows)} | {sum(r['restarts'] for r in rows)} | "
        f"**{sum(r['tokens_lost'] for r in rows)}** |"
    )
    return "\n".join(lines) + "\n"


def section_bad_input(records: list[dict[str, Any]]) -> str:
    rows = sorted((r for r in records if r["section"] == "bad_input"), key=lambda r: r.get("order", 0))
    kinds = Counter(r["kind"] for r in rows)
    codes: dict[str, Counter[int]] = defaultdict(Counter)
    for r in rows:
        codes[r["kind"]][r["exit_code"]] += 1
    lines = ["| Kind | Rows | Exit codes |", "|---|---|---|"]
    for kind, count in kinds.items():
        shown = ", ".join(f"{code}: {n}" for code, n in sorted(codes[kind].items()))
        lines.append(f"| {kind} | {count} | {shown} |")
    lines.append(f"| **all** | **{len(rows)}** | |")
    lines += [
        "",
        "<details><summary>Every row: the input, the exit code, the one line</summary>",
        "",
        "| Kind | Input | Exit | Line |",
        "|---|---|---|---|",
    ]
    for r in rows:
        text = str(r["line"])
        lines.append(f"| {r['kind']} | {r['case']} | {r['exit_code']} | {_code(_short(text))} |")
    lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _short(text: str, limit: int = 170) -> str:
    """Temporary directories out of the way; long lines cut."""
    text = re.sub(r"/\S*/pytest-of-[^/]+/\S*?/(test_[^/ ]*)/", "…/", text)
    text = re.sub(r"https?://127\.0\.0\.1:\d+", "http://127.0.0.1:PORT", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def section_fuzz(records: list[dict[str, Any]]) -> str:
    rows = [r for r in records if r["section"] == "fuzz"]
    lines = ["| Target | Examples |", "|---|---|"]
    lines += [f"| {r['target']} | {r['examples']} |" for r in rows]
    lines.append(f"| **all** | **{sum(r['examples'] for r in rows)}** |")
    return "\n".join(lines) + "\n"


def section_hygiene(records: list[dict[str, Any]]) -> str:
    rows = [r for r in records if r["section"] == "hygiene"]
    lines = ["| Check | Items checked | Problems |", "|---|---|---|"]
    for r in rows:
        problems = "; ".join(r["problems"]) if r["problems"] else "none"
        lines.append(f"| {r['check']} | {r['items']} | {problems} |")
    return "\n".join(lines) + "\n"


SECTIONS = {
    "summary": None,  # needs the run
    "matrix": section_matrix,
    "daemon": section_daemon,
    "crash": section_crash,
    "bad-input": section_bad_input,
    "fuzz": section_fuzz,
    "hygiene": section_hygiene,
}


def render(records: list[dict[str, Any]], run: dict[str, Any] | None, command: str) -> dict[str, str]:
    out = {"summary": section_summary(records, run, command)}
    for name, fn in SECTIONS.items():
        if fn is not None:
            out[name] = fn(records)
    return out


def write_doc(path: Path, sections: dict[str, str]) -> list[str]:
    """Replace each `<!-- reliability:NAME -->...<!-- /reliability:NAME -->` block; returns the
    names that had no markers (left out)."""
    text = path.read_text()
    missing = []
    for name, body in sections.items():
        begin, end = f"<!-- reliability:{name} -->", f"<!-- /reliability:{name} -->"
        if begin not in text or end not in text:
            missing.append(name)
            continue
        head, rest = text.split(begin, 1)
        text = head + begin + "\n" + body + end + rest.split(end, 1)[1]
    path.write_text(text)
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reliability_report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--records", type=Path, help="summarise these JSON lines instead of running pytest")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every record here")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    run = None
    with tempfile.TemporaryDirectory(prefix="rotator-reliability-") as tmp:
        directory = args.records
        if directory is None:
            directory = Path(tmp)
            run = run_suite(directory)
            print(run["summary"], file=sys.stderr)
        records = load_records(directory)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1) + "\n")
    sections = render(records, run, "python -m bench.reliability_report")
    for name, body in sections.items():
        print(f"## {name}\n\n{body}")
    failed = run is not None and (run["exit_code"] != 0 or run["failures"] or run["errors"])
    if failed:
        print(run["output"], file=sys.stderr)
        print("the suite failed: docs/reliability.md left as it was", file=sys.stderr)
        return 1
    if not args.no_write:
        missing = write_doc(args.doc, sections)
        if missing:
            print(f"no markers for: {', '.join(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
