"""Idle daemon: what `rotator run` costs while it waits, and how fast it becomes ready.

Ten Salesforce credentials on the file store (every 30m, so nothing rotates during the
idle window), the emulated token endpoint in its own process (bench._servers), and the
daemon as systemd starts it: `rotator --config X run`, listening on a loopback port.

* start-up to ready: from spawning the process to the first `/readyz` 200 (polled every
  10 ms). "Cold" has no tokens in the store (ten rotations at once); "warm" restarts with
  ten fresh tokens (reused, no token request — the crash-loop case);
* CPU: utime + stime from /proc/PID/stat over an idle window (default 60 s), as a share of
  one CPU;
* memory: VmRSS (and the peak, VmHWM) from /proc/PID/status at the end of the window.

Targets (issue #5): < 60 MB RSS without an AWS store (read as MiB, the unit /proc counts in),
< 0.5 % CPU idle, ready < 1.5 s.
The results replace the `## Idle daemon` section of docs/benchmarks.md (appended at the end
when there is none); bench.run_all leaves that section alone.

Run: `python -m bench.daemon_idle [--idle SECONDS] [--no-write]`.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from bench._common import (
    DOC,
    PROFILES,
    Ctx,
    StoreSetup,
    child_env,
    fleet_apps,
    machine_facts,
    proc_cpu_seconds,
    rotator_cmd,
    salesforce_server,
    write_fleet,
)

HEADING = "## Idle daemon"
CREDENTIALS = 10
TARGET_RSS_MB = 60.0
TARGET_CPU_PCT = 0.5
TARGET_READY_S = 1.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_status_mb(pid: int, field: str) -> float:
    """A /proc/PID/status size field (kB there means KiB) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


class Daemon:
    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.port = port
        self.log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([*rotator_cmd(), "--config", str(config), "run"],
                                     stdout=self.log, stderr=self.log, env=child_env())

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds from spawn to the first /readyz 200."""
        url = f"http://127.0.0.1:{self.port}/readyz"
        while time.perf_counter() - self.started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(url, timeout=1) as reply:
                    if reply.status == 200:
                        return time.perf_counter() - self.started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.01)
        raise RuntimeError(f"not ready within {timeout}s; see {self.log.name}")

    def stop(self) -> tuple[int, float]:
        began = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.log.close()
        return code, time.perf_counter() - began


def measure(workdir: Path, idle: float, warm_runs: int) -> dict[str, float]:
    ctx = Ctx(profile=PROFILES["quick"], workdir=workdir, quiet=True)
    store = StoreSetup("file", "local", '[stores.local]\ntype = "file"\npath = "store"', {})
    port = free_port()
    results: dict[str, float] = {}
    with salesforce_server(ctx, fleet_apps(ctx, CREDENTIALS)) as endpoint:
        fleet = write_fleet(ctx, workdir / "fleet", store, CREDENTIALS, login_url=endpoint.url,
                            daemon={"state_dir": "state"})
        text = fleet.config.read_text().replace('listen = ""', f'listen = "127.0.0.1:{port}"', 1)
        fleet.config.write_text(text)
        log = workdir / "daemon.log.txt"

        cold = Daemon(fleet.config, port, log)
        results["ready_cold_s"] = cold.wait_ready()
        time.sleep(2.0)  # let the start-up rotations' garbage settle before the window
        cpu0, wall0 = proc_cpu_seconds(cold.proc.pid), time.perf_counter()
        time.sleep(idle)
        cpu1, wall1 = proc_cpu_seconds(cold.proc.pid), time.perf_counter()
        assert cpu0 is not None and cpu1 is not None
        results["cpu_pct"] = 100 * (cpu1 - cpu0) / (wall1 - wall0)
        results["idle_s"] = wall1 - wall0
        results["rss_mb"] = proc_status_mb(cold.proc.pid, "VmRSS")
        results["hwm_mb"] = proc_status_mb(cold.proc.pid, "VmHWM")
        results["threads"] = float(len(os.listdir(f"/proc/{cold.proc.pid}/task")))
        code, results["stop_s"] = cold.stop()
        results["exit_code"] = float(code)

        warm = []
        for _ in range(warm_runs):
            daemon = Daemon(fleet.config, port, log)
            warm.append(daemon.wait_ready())
            daemon.stop()
        results["ready_warm_s"] = statistics.median(warm)
        results["ready_warm_max_s"] = max(warm)
    return results


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def section(results: dict[str, float], command: str, load_before: str, load_after: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = machine_facts()
    rows = [
        ("RSS after the idle window (VmRSS)",
         f"{results['rss_mb']:.1f} MiB ({results['rss_mb'] * 1.048576:.1f} MB)",
         f"< {TARGET_RSS_MB:.0f} MiB", verdict(results["rss_mb"] < TARGET_RSS_MB)),
        ("Peak RSS (VmHWM)", f"{results['hwm_mb']:.1f} MiB", "—", "—"),
        (f"CPU over {results['idle_s']:.0f} s idle (utime+stime)", f"{results['cpu_pct']:.3f} %",
         f"< {TARGET_CPU_PCT} %", verdict(results["cpu_pct"] < TARGET_CPU_PCT)),
        ("Start-up to /readyz 200, cold (no tokens: 10 rotations)", f"{results['ready_cold_s']:.2f} s",
         f"< {TARGET_READY_S} s", verdict(results["ready_cold_s"] < TARGET_READY_S)),
        ("Start-up to /readyz 200, warm (10 fresh tokens reused), median",
         f"{results['ready_warm_s']:.2f} s (max {results['ready_warm_max_s']:.2f} s)",
         f"< {TARGET_READY_S} s", verdict(results["ready_warm_s"] < TARGET_READY_S)),
        ("SIGTERM to exit", f"{results['stop_s']:.2f} s (exit {int(results['exit_code'])})", "—", "—"),
        ("Threads while idle", f"{int(results['threads'])}", "—", "—"),
    ]
    table = ["| Measure | Value | Target | Met |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    missed = [a for a, _, c, d in rows if d.startswith("**no")]
    notes = [
        f"_Measured {when} by `{command}`: {CREDENTIALS} credentials on the file store, the token "
        "endpoint in its own process, the daemon started as systemd would (`rotator --config X run`)._",
        "",
        *table,
        "",
        f"Machine: {facts['CPU']}; {facts['Python']}; load average (1/5/15 min) {load_before} before, "
        f"{load_after} after.",
    ]
    if results["rss_mb"] < TARGET_RSS_MB <= results["rss_mb"] * 1.048576:
        notes += ["", f"The RSS target holds only in MiB, the unit /proc and `ps` use: in SI "
                  f"megabytes it is {results['rss_mb'] * 1.048576:.1f} MB, above 60 MB, and in "
                  f"either unit there is no headroom ({TARGET_RSS_MB - results['rss_mb']:.1f} MiB)."]
    found = layers()
    notes += ["", "Where the memory and the start-up go (a fresh interpreter importing the daemon's "
              "dependencies in order; the import order shifts shared modules between rows):", "",
              *layer_table(found)]
    if missed:
        base = next(rss for label, rss, _ in found if label.startswith("rotator engine"))
        notes += ["", "Missed: " + "; ".join(missed) + f". The interpreter and the libraries every "
                  f"rotator command loads already hold {base:.0f} MiB before any daemon code "
                  "(table above); start-up is dominated by their import time, which grows with the "
                  "machine's load."]
    return "\n".join(notes) + "\n"


# What the resident memory and the start-up are made of: the same interpreter importing the
# daemon's dependencies one after the other, VmRSS and wall time after each.
LAYERS = (
    ("interpreter", ()),
    ("pydantic (config)", ("pydantic",)),
    ("cryptography (keys, OpenSSL)", ("cryptography.x509", "cryptography.hazmat.primitives.asymmetric.rsa")),
    # the token request uses urllib3 directly; requests is loaded only for a proxy, Vault,
    # verify or the Metadata API (issue 21)
    ("urllib3 (token endpoint)", ("urllib3",)),
    # structlog as rotator imports it: without rich and pygments (rotator.audit._lean)
    ("structlog, PyJWT (audit, assertions)", ("rotator.audit._lean", "jwt")),
    ("rotator engine, config, stores", ("rotator.engine", "rotator.stores.file")),
    ("APScheduler, prometheus-client", ("apscheduler.schedulers.background", "prometheus_client")),
    ("daemon modules", ("rotator.daemon.service",)),
)
_PROBE = """
import importlib, json, sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
out = []
for label, modules in json.loads(sys.argv[1]):
    began = time.perf_counter()
    for module in modules:
        importlib.import_module(module)
    out.append([label, rss(), time.perf_counter() - began])
print(json.dumps(out))
"""


def layers() -> list[tuple[str, float, float]]:
    """[(layer, VmRSS MiB after it, seconds its imports took)] in a fresh interpreter."""
    import json
    import sys

    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(LAYERS)], capture_output=True,
                          text=True, env=child_env(), check=True)
    return [(label, rss, seconds) for label, rss, seconds in json.loads(done.stdout)]


def layer_table(found: list[tuple[str, float, float]]) -> list[str]:
    rows = ["| Loaded so far | VmRSS | + MiB | import ms |", "|---|---|---|---|"]
    previous = 0.0
    for label, rss, seconds in found:
        rows.append(f"| {label} | {rss:.1f} MiB | +{rss - previous:.1f} | {seconds * 1000:.0f} |")
        previous = rss
    return rows


def write_section(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    block = f"{HEADING}\n\n{body}"
    if HEADING in text:
        head, rest = text.split(HEADING, 1)
        tail = rest[rest.index("\n## "):] if "\n## " in rest else ""
        text = head + block + (("\n" + tail.lstrip("\n")) if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.daemon_idle", description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=float, default=60.0, help="idle window in seconds (default 60)")
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/benchmarks.md")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    command = "python -m bench.daemon_idle" + (f" --idle {args.idle:g}" if args.idle != 60 else "")
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="rotator-idle-") as tmp:
        results = measure(Path(tmp), args.idle, args.warm_runs)
    body = section(results, command, load_before, load_average())
    print(body)
    if not args.no_write:
        write_section(args.doc, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
