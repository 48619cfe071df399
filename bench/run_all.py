"""`make bench`: every measurement in one run, tables rewritten in docs/benchmarks.md.

    python -m bench.run_all                 # full (a few minutes), rewrites docs/benchmarks.md
    python -m bench.run_all --quick         # under a minute, same tables with smaller N
    python -m bench.run_all --only mint,fleet --no-write --json out.json

Only the text between `<!-- bench:KEY -->` and `<!-- /bench:KEY -->` is replaced; a missing
section is inserted before `## Idle daemon` (which bench/daemon_idle.py owns) or at the end.
Every section says when and with which command it was measured. Missing tools (hyperfine,
/usr/bin/time, openssl, curl) and store backends are skipped with a note, never an error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._common import DOC, PROFILES, Ctx, Table, fmt_num, machine_facts

MODULES = ("mint", "mint_remote", "rotation", "verify", "fleet", "footprint", "alternatives",
           "audit_report")
TITLES = {
    "meta": None,
    "summary": "## Summary",
    "mint": "## Mint: assertions per second",
    "mint_remote": "## Mint per signer: PEM, Vault Transit, AWS KMS (keyless)",
    "rotation": "## Rotation latency, per store",
    "verify": "## Verify before write: what `verify` adds to a rotation",
    "fleet": "## Fleet: `rotate --all`",
    "footprint": "## Footprint: start-up, memory, imports",
    "alternatives": "## Against the alternatives",
    "audit_report": "## Audit report: `rotator audit report` on a 100 MB audit file",
}
IDLE_HEADING = "## Idle daemon"
TEMPLATE = """# Benchmarks

How fast and how small rotator is, and how it compares with what users would run instead
(issue #10). The numbers come from `make bench` (`.venv/bin/python -m bench.run_all`, a few
minutes; `--quick` for a sub-minute run). The tables between `<!-- bench:… -->` markers are
rewritten by each run; the text around them is not. Each section says when and how it was
measured. The code is in `bench/`, one module per measurement; each runs alone too
(`python -m bench.mint --quick`).

"""


def state() -> str:
    """Load average and CPU pressure: a busy machine makes every number here worse."""
    parts = []
    try:
        one, five, _ = os.getloadavg()
        parts.append(f"load average {one:.2f} (1 min), {five:.2f} (5 min)")
    except OSError:
        pass
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        avg60 = dict(kv.split("=") for kv in line.split()[1:])["avg60"]
        parts.append(f"CPU pressure {avg60}% (some, 60 s)")
    except (OSError, KeyError, IndexError, ValueError):
        pass
    return ", ".join(parts) or "unknown"


def run_module(name: str, ctx: Ctx) -> tuple[Table, float]:
    module = importlib.import_module(f"bench.{name}")
    start = time.perf_counter()
    try:
        table = module.run(ctx)
    except Exception as exc:
        table = Table(name, name, ["error"])
        table.notes.append(f"The benchmark failed: {type(exc).__name__}: {exc}")
        table.data["traceback"] = traceback.format_exc()
        ctx.log(f"{name}: FAILED\n{table.data['traceback']}")
    return table, time.perf_counter() - start


# ---------------------------------------------------------------------------- summary


def _row(table: Table | None, **match: Any) -> dict[str, Any] | None:
    if table is None:
        return None
    for row in table.rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def summary(tables: dict[str, Table]) -> list[str]:
    bullets: list[str] = []
    mint = tables.get("mint")
    row = _row(mint, Algorithm="RS256", Key="RSA-2048")
    if mint and row:
        speed = row["openssl speed sign /s"]
        bullets.append(
            f"**Mint** (RS256, RSA-2048): rotator {row['rotator Engine.mint /s']:,}/s against raw "
            f"cryptography {row['raw cryptography sign /s']:,}/s — {row['rotator ÷ raw']} of raw "
            "(target ≥ 90%)" + (f"; `openssl speed rsa2048` {speed:,} sign/s"
                                if isinstance(speed, int | float) else "")
            + (f". The naive way (PyJWT given PEM bytes each call): {fmt_num(mint.data['naive_per_s'])}/s."
               if "naive_per_s" in mint.data else ".")
        )
    remote = tables.get("mint_remote")
    if remote and remote.rows:
        bullets.append("**Mint per signer** (p50, one thread; key services on loopback): " + "; ".join(
            f"{r['Signer']} {r['p50 ms']} ms" for r in remote.rows) + " (docs/keyless.md).")
    rotation = tables.get("rotation")
    if rotation:
        parts = [f"{r['Store']} {r['p50 ms']} / {r['p99 ms']} ms" for r in rotation.rows
                 if r.get("N") not in (0, "—")]
        if parts:
            bullets.append("**One rotation**, p50 / p99: " + "; ".join(parts) + ".")
    fleet = tables.get("fleet")
    if fleet and "cli" in fleet.data:
        cli = fleet.data["cli"]
        verdict = ("met" if cli["wall"] < 5 else "MISSED") if cli["n"] == 1000 else "not checked"
        text = (f"**Fleet**: `rotator rotate --all --force` over {cli['n']:,} credentials on the file "
                f"store took {cli['wall']:.2f} s ({cli['n'] / cli['wall']:.0f} rotations/s, start-up "
                f"included; target for 1,000: under 5 s — {verdict})")
        workers = fleet.data.get("by_workers") or {}
        if 1 in workers and len(workers) > 1:
            best = min(workers, key=lambda w: workers[w])
            text += (f"; in process, one pass took {workers[1]:.2f} s sequentially and "
                     f"{workers[best]:.2f} s on {best} threads")
        cpu = fleet.data.get("cpu_per_credential") or {}
        if cpu:
            ordered = sorted(cpu.items(), key=lambda kv: int(kv[0]))
            text += "; CPU per credential " + ", ".join(
                f"{fmt_num(v * 1000)} ms at {int(k):,}" for k, v in ordered)
        ratio = fleet.data.get("ratio") or {}
        if ratio:
            at = 1000 if 1000 in ratio else max(ratio, key=int)
            text += (f"; one rotation costs **{ratio[at]:.1f}x** the CPU of one raw RSA-2048 "
                     f"signature at {int(at):,} credentials (target ≤ 3x)")
        bullets.append(text + ".")
    footprint = tables.get("footprint")
    if footprint:
        version = _row(footprint, Config="none")
        checks = [r for r in footprint.rows if r.get("Command") == "`rotator check`"]
        if version and checks:
            bullets.append(
                f"**Footprint**: `rotator --version` {version['Wall ms (mean ± sd)']} ms; `rotator check` "
                + "; ".join(f"{r['Config']} {r['Wall ms (mean ± sd)'].split(' ±')[0]} ms, "
                            f"{r['Max RSS MiB']} MiB max RSS" for r in checks) + "."
            )
    alternatives = tables.get("alternatives")
    if alternatives and alternatives.rows:
        parts = [f"{r['Tool']} {r['Tokens/s']}/s ({r['rotator engine ÷ this']})"
                 for r in alternatives.rows]
        bullets.append("**Tokens per second** (rotator's in-process engine ÷ each): "
                       + "; ".join(parts) + ".")
    report = tables.get("audit_report")
    command = (report.data.get("`rotator audit report FILE` (command, start-up included)")
               if report else None)
    if report and command:
        mb = report.data["bytes"] / 1024 / 1024
        bullets.append(f"**Audit report**: `rotator audit report` over {mb:,.0f} MB "
                       f"({report.data['lines']:,} lines) took {command['wall']:.2f} s "
                       f"({command['cpu']:.2f} s CPU), chain verified (target for 100 MB: well "
                       "under 10 s).")
    return bullets


# ---------------------------------------------------------------------------- the document


def render_blocks(
    tables: dict[str, Table], facts: dict[str, str], command: str, profile: str, took: float,
    when: str, before: str, after: str, durations: dict[str, float],
) -> dict[str, str]:
    blocks: dict[str, str] = {}
    meta = [
        f"Last run: {when}, profile `{profile}`, {took:.0f} s in all: `{command}`",
        "",
        "| Machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts.items()],
        f"| Machine load | at the start: {before}; at the end: {after} |",
    ]
    blocks["meta"] = "\n".join(meta)
    if {"mint", "rotation", "fleet", "footprint", "alternatives"} <= set(tables):
        blocks["summary"] = f"_From the run of {when} (`{command}`)._\n\n" + "\n".join(
            f"- {b}" for b in summary(tables))
    for key, table in tables.items():
        stamp = f"_Measured {when} by `{command}` (profile `{profile}`, {durations[key]:.0f} s)._"
        blocks[key] = stamp + "\n\n" + table.markdown()
    return blocks


def write_doc(path: Path, blocks: dict[str, str]) -> None:
    text = path.read_text() if path.exists() else TEMPLATE
    for key, body in blocks.items():
        start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            _, tail = rest.split(end, 1)
            text = f"{head}{start}\n{body}\n{end}{tail}"
            continue
        title = TITLES.get(key)
        section = (f"{title}\n\n" if title else "") + f"{start}\n{body}\n{end}\n\n"
        if key == "meta" and "\n## " in text:
            index = text.index("\n## ") + 1  # the machine facts go before the first section
        elif IDLE_HEADING in text:
            index = text.index(IDLE_HEADING)
        else:
            index = len(text)
            if not text.endswith("\n\n"):
                section = ("\n" if text.endswith("\n") else "\n\n") + section
        text = text[:index] + section + text[index:]
    path.write_text(text.rstrip("\n") + "\n")


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="sub-minute run, smaller N")
    parser.add_argument("--profile", choices=sorted(PROFILES), help=argparse.SUPPRESS)
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(MODULES)}")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document to rewrite")
    parser.add_argument("--json", type=Path, help="also write every number as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    profile = PROFILES[args.profile or ("quick" if args.quick else "full")]
    names = MODULES
    if args.only:
        names = tuple(n.strip() for n in args.only.split(",") if n.strip())
        unknown = [n for n in names if n not in MODULES]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    given = list(argv if argv is not None else sys.argv[1:])
    shown_args = []  # what changes the measurement: not where the output goes
    skip = False
    for arg in given:
        if skip:
            skip = False
        elif arg in ("--json", "--doc"):
            skip = True
        elif arg != "--quiet" and not arg.startswith(("--json=", "--doc=")):
            shown_args.append(arg)
    command = shlex.join(["python", "-m", "bench.run_all", *shown_args])
    if not shown_args:
        command = "make bench"  # = .venv/bin/python -m bench.run_all

    started = time.perf_counter()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    before = state()
    facts = machine_facts()
    tables: dict[str, Table] = {}
    durations: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rotator-bench-") as tmp:
        ctx = Ctx(profile, Path(tmp), quiet=args.quiet)
        ctx.log(f"profile {profile.name}: {', '.join(names)} ({before})")
        for name in names:
            ctx.log(f"== {name}")
            tables[name], durations[name] = run_module(name, ctx)
            ctx.log(f"== {name}: {durations[name]:.1f} s")
    took = time.perf_counter() - started
    after = state()

    failed = [name for name, table in tables.items() if "traceback" in table.data]
    problems = [p for table in tables.values() for p in table.problems()]
    for problem in problems:
        print(f"bench: malformed table: {problem}", file=sys.stderr)
    for table in tables.values():
        print(f"\n## {table.title}\n\n{table.markdown()}")
    print(f"\n{profile.name} run took {took:.0f} s ({before} → {after})")

    if args.json:
        args.json.write_text(json.dumps({
            "profile": profile.name, "command": command, "when": when, "seconds": took,
            "durations": durations, "facts": facts, "load": {"before": before, "after": after},
            "tables": {k: t.to_json() for k, t in tables.items()},
        }, indent=2, default=str))
    if not args.no_write:
        blocks = render_blocks(tables, facts, command, profile.name, took, when, before, after, durations)
        write_doc(args.doc, blocks)
        print(f"rewrote {args.doc}")
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
