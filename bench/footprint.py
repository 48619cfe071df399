"""Footprint: start-up time and memory of the CLI, per store kind; import time by module.

* start-up: `rotator --version` and `rotator check` wall time with hyperfine (a timed
  subprocess loop where hyperfine is not installed);
* memory: maximum resident set size of `rotator check` and of a one-credential
  `rotator rotate NAME --force` (from `/usr/bin/time -v`, else the kernel's rusage);
* imports: `python -X importtime -m rotator … check`, the ten costliest top-level imports.

Each config holds one credential whose key and token live in that store: file only, the
Vault emulator (hvac) and moto (boto3) — the latter two only if their store modules exist.

Run alone: `python -m bench.footprint [--quick]`.
"""

from __future__ import annotations

import json
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import (
    Ctx,
    NotMeasured,
    Table,
    child_env,
    fleet_apps,
    fmt_ms,
    fmt_num,
    has_time_v,
    rotator_cmd,
    run_measured,
    salesforce_server,
    start_store,
    tool,
    write_fleet,
)

COLUMNS = ["Config", "Command", "Wall ms (mean ± sd)", "Max RSS MiB", "Modules imported",
           "hvac / boto3 loaded"]
IMPORT_COLUMNS = ["Module (· = imported by the one above)", "Cumulative ms", "Self ms"]


def time_command(ctx: Ctx, cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(mean s, stdev s, how) of `cmd`'s wall time."""
    runs = max(1, ctx.profile.startup_runs)
    if runs == 1:  # the smoke profile: one timed run, no warm-up
        start = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True)
        return time.perf_counter() - start, 0.0, "once"
    if tool("hyperfine"):
        export = ctx.workdir / f"hyperfine-{time.time_ns()}.json"
        hyper = ["hyperfine", "--style", "none", "--warmup", "1", "--runs", str(max(2, runs)),
                 "--shell=none", "--export-json", str(export), shlex.join(cmd)]
        done = subprocess.run(hyper, env=env, capture_output=True, text=True)
        if done.returncode == 0 and export.exists():
            result = json.loads(export.read_text())["results"][0]
            return result["mean"], result.get("stddev") or 0.0, "hyperfine"
    subprocess.run(cmd, env=env, capture_output=True)  # warm-up
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True)
        samples.append(time.perf_counter() - start)
    return statistics.mean(samples), statistics.stdev(samples) if len(samples) > 1 else 0.0, "loop"


def import_profile(cmd_args: list[str], env: dict[str, str]) -> list[tuple[int, str, float, float]]:
    """(depth, module, self s, cumulative s) from -X importtime, in import order."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "rotator", *cmd_args],
                          env=env, capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        found = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)", line)
        if found:
            depth = len(found.group(3)) // 2
            rows.append((depth, found.group(4), int(found.group(1)) / 1e6, int(found.group(2)) / 1e6))
    return rows


def run(ctx: Ctx) -> Table:
    table = Table("footprint", "Footprint: start-up and memory", COLUMNS)
    table.notes.append(
        "Wall times by " + ("hyperfine" if tool("hyperfine") else
                            "a timed subprocess loop (hyperfine is not installed)")
        + "; max RSS by " + ("`/usr/bin/time -v`" if has_time_v() else
                             "wait4() rusage (`/usr/bin/time` is not installed)")
        + ". `check` validates the config, reaches the store, loads and checks the key and mints "
        "one assertion; `rotate` also exchanges and writes. Python start-up included."
    )
    imports: dict[str, list[tuple[int, str, float, float]]] = {}
    base_env = child_env()
    with salesforce_server(ctx, fleet_apps(ctx, 1), name="footprint") as endpoint:
        ctx.log("footprint: rotator --version")
        mean, sd, _ = time_command(ctx, [*rotator_cmd(), "--version"], base_env)
        measured = run_measured([*rotator_cmd(), "--version"], env=base_env)
        version_imports = import_profile(["--version"], base_env)
        table.add(**{"Config": "none", "Command": "`rotator --version`",
                     "Wall ms (mean ± sd)": f"{fmt_ms(mean)} ± {fmt_ms(sd)}",
                     "Max RSS MiB": round(measured["max_rss_kib"] / 1024, 1),
                     "Modules imported": len(version_imports),
                     "hvac / boto3 loaded": _loaded(version_imports)})
        for kind in ("file", "vault", "aws"):
            directory = ctx.subdir(f"footprint-{kind}")
            try:
                store = start_store(ctx, kind, directory)
            except NotMeasured as exc:
                table.add(**{c: "—" for c in COLUMNS} | {"Config": kind, "Command": "—"})
                table.notes.append(f"{kind}: not measured: {exc}")
                continue
            try:
                fleet = write_fleet(ctx, directory, store, 1, login_url=endpoint.url)
                env = child_env(**store.env)
                for label, args in (("check", ["check"]),
                                    ("rotate", ["rotate", fleet.names[0], "--force"])):
                    ctx.log(f"footprint: {kind} {label}")
                    cmd = [*rotator_cmd(), "--config", str(fleet.config), *args]
                    mean, sd, _ = time_command(ctx, cmd, env)
                    measured = run_measured(cmd, env=env)
                    if measured["code"] != 0:
                        table.notes.append(f"{kind}: `rotator {label}` exited {measured['code']}")
                    found = []
                    if label == "check" or ctx.profile.startup_runs > 1:
                        found = import_profile(["--config", str(fleet.config), *args], env)
                    if label == "check":
                        imports[kind] = found
                    shown = " ".join("…" if a == fleet.names[0] else a for a in args)
                    table.add(**{"Config": kind, "Command": f"`rotator {shown}`",
                                 "Wall ms (mean ± sd)": f"{fmt_ms(mean)} ± {fmt_ms(sd)}",
                                 "Max RSS MiB": round(measured["max_rss_kib"] / 1024, 1),
                                 "Modules imported": len(found) if found else "—",
                                 "hvac / boto3 loaded": _loaded(found) if found else "—"})
                    table.data[f"{kind} {label}"] = {"mean": mean, "stdev": sd, **measured}
            except Exception as exc:  # a store under construction may fail in any way
                table.notes.append(f"{kind}: not measured: {type(exc).__name__}: {exc}")
            finally:
                store.stop()

    for kind, found in imports.items():
        top = sorted(found, key=lambda r: r[3], reverse=True)[:10]
        total = sum(r[3] for r in found if r[0] == 0)
        sub = Table(f"imports-{kind}",
                    f"Import time, `rotator check` with the {kind} config: the 10 largest cumulative "
                    f"(-X importtime; {fmt_num(total * 1000)} ms of imports in all, {len(found)} modules)",
                    IMPORT_COLUMNS)
        for depth, module, self_s, cumulative in top:
            sub.add(**{IMPORT_COLUMNS[0]: "· " * depth + module, "Cumulative ms": fmt_ms(cumulative),
                       "Self ms": fmt_ms(self_s)})
        table.extra.append(sub)
        table.data[f"imports {kind}"] = [list(r) for r in found]
    return table


def _loaded(found: list[tuple[int, str, float, float]]) -> str:
    names = {r[1] for r in found}
    return f"{'yes' if 'hvac' in names else 'no'} / {'yes' if 'boto3' in names else 'no'}"


def main(argv: list[str] | None = None) -> int:
    from bench._common import FULL, QUICK

    args = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix="rotator-bench-") as tmp:
        ctx = Ctx(QUICK if "--quick" in args else FULL, Path(tmp))
        print(run(ctx).markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
