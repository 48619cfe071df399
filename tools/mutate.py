"""`make mutate`: mutmut 3 on each core module against its own fast unit tests; prints the
score per module and fails if one is below the bar.

The pairs (module -> test files) live in pyproject.toml under [tool.rotator.mutate.pairs];
equivalent mutants (a change with no observable behaviour: see docs/mutation.md) are listed by
name under [tool.rotator.mutate.equivalent] and left out of the score. Each module runs in its
own scratch copy (.mutate/<module>/) so that mutmut's config ([tool.mutmut], rewritten there
with that module's only_mutate and test selection) and its mutants/ cache never mix modules.

    python tools/mutate.py                      # every pair
    python tools/mutate.py rotator/policy.py    # one
    python tools/mutate.py --min 0              # report only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".mutate"
DETECTED = {"killed", "timeout", "caught by type check", "segfault"}  # a test noticed the change


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: every pair)")
    parser.add_argument("--min", type=float, default=90.0, help="lowest acceptable score, %%")
    parser.add_argument("--survivors", action="store_true", help="print each surviving mutant's diff")
    args = parser.parse_args(argv)

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    settings = tomllib.loads(pyproject)["tool"]
    pairs: dict[str, list[str]] = settings["rotator"]["mutate"]["pairs"]
    equivalent: dict[str, str] = settings["rotator"]["mutate"].get("equivalent", {})
    unknown = [m for m in args.modules if m not in pairs]
    if unknown:
        print(f"no [tool.rotator.mutate.pairs] entry for {', '.join(unknown)}", file=sys.stderr)
        return 2

    failed = []
    rows = []
    for module in args.modules or list(pairs):
        counts, survivors = run_pair(module, pairs[module], pyproject, settings["mutmut"], equivalent)
        excluded = counts.pop("equivalent", 0)
        total = sum(counts.values())
        detected = sum(n for status, n in counts.items() if status in DETECTED)
        score = 100.0 * detected / total if total else 100.0
        rows.append((module, score, detected, total, excluded, counts))
        if args.survivors:
            for name in survivors:
                show(module, name)
        if score < args.min:
            failed.append(module)

    print()
    print(f"{'module':24} {'score':>7} {'killed':>7} {'scored':>7} {'equiv.':>7}  other")
    for module, score, detected, total, excluded, counts in rows:
        other = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in DETECTED)
        print(f"{module:24} {score:6.1f}% {detected:7} {total:7} {excluded:7}  {other}")
    if failed:
        print(f"below {args.min:.0f}%: {', '.join(failed)} (survivors: python tools/mutate.py "
              f"--survivors {failed[0]})")
        return 1
    return 0


def run_pair(module: str, tests: list[str], pyproject: str, base: dict, equivalent: dict[str, str]
             ) -> tuple[Counter[str], list[str]]:
    """mutmut run in a fresh scratch copy; returns status counts and the surviving mutants."""
    work = SCRATCH / Path(module).stem
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for tree in ("rotator", "tests"):
        shutil.copytree(ROOT / tree, work / tree, ignore=ignore)
    config = {**base, "only_mutate": [module], "pytest_add_cli_args_test_selection": tests}
    section = "\n".join(["[tool.mutmut]", *(f"{k} = {json.dumps(v)}" for k, v in config.items())])
    (work / "pyproject.toml").write_text(replace_table(pyproject, "tool.mutmut", section), encoding="utf-8")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    mutmut = [sys.executable, "-m", "mutmut"]
    print(f"== mutmut: {module} against {' '.join(tests)}", flush=True)
    # mutmut prints a progress line per mutant; keep only its last screen
    run = subprocess.run([*mutmut, "run", "--max-children", str(os.cpu_count() or 2)], cwd=work, env=env,
                         capture_output=True, text=True)
    if run.returncode != 0:
        sys.stdout.write(run.stdout[-3000:] + run.stderr[-3000:])
        raise SystemExit(f"mutmut run failed for {module} (exit {run.returncode})")
    results = subprocess.run([*mutmut, "results", "--all", "true"], cwd=work, env=env,
                             capture_output=True, text=True, check=True).stdout
    counts: Counter[str] = Counter()
    survivors, seen = [], set()
    for line in results.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if not name:
            continue
        seen.add(name)
        if name in equivalent:
            counts["equivalent"] += 1
            continue
        counts[status] += 1
        if status not in DETECTED:
            survivors.append(name)
    stale = [n for n in equivalent if n.startswith(mutant_prefix(module)) and n not in seen]
    if stale:
        print(f"   note: equivalent entries that no longer exist: {', '.join(stale)}")
    return counts, survivors


def show(module: str, name: str) -> None:
    work = SCRATCH / Path(module).stem
    diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, capture_output=True,
                          text=True).stdout
    print(diff)


def mutant_prefix(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".") + "."


def replace_table(text: str, table: str, section: str) -> str:
    """`text` with the TOML table [table] (up to the next table header) replaced by `section`."""
    pattern = re.compile(rf"^\[{re.escape(table)}\]\n(?:(?!\[).*\n|\n)*", re.MULTILINE)
    if not pattern.search(text):
        return text.rstrip("\n") + "\n\n" + section + "\n"
    return pattern.sub(lambda _: section + "\n\n", text, count=1)


if __name__ == "__main__":
    raise SystemExit(main())
