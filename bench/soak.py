"""Soak: the daemon under a steady, fast load for minutes — does anything grow or stall?

`make soak` (not part of CI): 50 Salesforce credentials on the file store, every 1 s, for
10 minutes; the token endpoint runs in its own process (bench._servers), the daemon as
systemd starts it (`rotator --config X run`, /metrics on a loopback port). Every
SAMPLE_EVERY seconds the daemon's VmRSS, thread count, open file descriptors and CPU time are
read from /proc; at the end /metrics gives the token requests and rotations per credential,
and the daemon's audit lines are counted by event.

Reported (and written between the `soak` markers of docs/reliability.md):

* RSS drift: the mean of the last minute's samples minus the mean of the first minute after
  warm-up, and the least-squares slope over everything after warm-up (MB per minute);
* threads and file descriptors: min and max after warm-up (a leak shows as a climb);
* token requests per credential: min / median / max against the ideal duration / interval;
* failures (rotation.failed), scheduler warnings (library.log), exit code after SIGTERM.

Run: `python -m bench.soak [--duration 600] [--credentials 50] [--interval 1s] [--no-write]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._common import (
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

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "reliability.md"
MARK_BEGIN, MARK_END = "<!-- soak -->", "<!-- /soak -->"
SAMPLE_EVERY = 5.0
WARM_UP = 60.0  # start-up rotations, imports and caches settle in the first minute


@dataclass
class Sample:
    t: float  # seconds since the daemon was started
    rss_mb: float
    threads: int
    fds: int
    cpu_s: float


@dataclass
class SoakResult:
    credentials: int
    interval: float
    duration: float
    samples: list[Sample] = field(default_factory=list)
    requests: dict[str, float] = field(default_factory=dict)
    rotations: dict[str, float] = field(default_factory=dict)  # result -> total
    events: Counter[str] = field(default_factory=Counter)
    library: Counter[str] = field(default_factory=Counter)  # library.log messages, numbers masked
    coalesced: float = 0.0  # rotator_runs_coalesced_total: runs folded into a queued one
    exit_code: int | None = None
    stop_s: float = 0.0
    stderr_bytes: int = 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_sample(pid: int, began: float) -> Sample:
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return Sample(
        t=time.monotonic() - began,
        rss_mb=rss,
        threads=len(os.listdir(f"/proc/{pid}/task")),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        cpu_s=proc_cpu_seconds(pid) or 0.0,
    )


_METRIC = re.compile(r"^(rotator_token_requests_total|rotator_rotation_total)\{([^}]*)\} (\S+)$")


def scrape(port: int) -> tuple[dict[str, float], dict[str, float], float]:
    """Per-credential token requests, rotations per result summed over credentials, and the
    runs coalesced into a still queued one."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    requests: dict[str, float] = {}
    rotations: Counter[str] = Counter()
    coalesced = 0.0
    for line in text.splitlines():
        if line.startswith("rotator_runs_coalesced_total "):
            coalesced = float(line.split()[1])
        match = _METRIC.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        if match.group(1) == "rotator_token_requests_total":
            requests[labels["credential"]] = float(match.group(3))
        else:
            rotations[labels.get("result", "?")] += float(match.group(3))
    return requests, dict(rotations), coalesced


def run_soak(workdir: Path, *, credentials: int, interval: str, duration: float, log=print) -> SoakResult:
    from rotator.durations import parse_duration

    ctx = Ctx(profile=PROFILES["quick"], workdir=workdir, quiet=True)
    store = StoreSetup("file", "local", '[stores.local]\ntype = "file"\npath = "store"', {})
    port = free_port()
    result = SoakResult(credentials, parse_duration(interval), duration)
    with salesforce_server(ctx, fleet_apps(ctx, credentials)) as endpoint:
        fleet = write_fleet(
            ctx, workdir / "fleet", store, credentials, login_url=endpoint.url, daemon={"state_dir": "state"}
        )
        text = fleet.config.read_text().replace('listen = ""', f'listen = "127.0.0.1:{port}"', 1)
        # every 1 s is 3,600 requests an hour: lift the per-credential cap to its maximum
        text = text.replace('every = "30m"', f'every = "{interval}"\nmax_requests_per_hour = 1800')
        fleet.config.write_text(text)
        out_path, err_path = workdir / "daemon.out", workdir / "daemon.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            began = time.monotonic()
            proc = subprocess.Popen(
                [*rotator_cmd(), "--config", str(fleet.config), "run"],
                stdout=out,
                stderr=err,
                env=child_env(),
            )
            try:
                next_sample = began
                last_log = began
                while time.monotonic() - began < duration:
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"daemon exited with {proc.returncode}: "
                            f"{err_path.read_text(errors='replace')[-2000:]}"
                        )
                    if time.monotonic() >= next_sample:
                        result.samples.append(proc_sample(proc.pid, began))
                        next_sample += SAMPLE_EVERY
                    if time.monotonic() - last_log >= 60:
                        s = result.samples[-1]
                        log(
                            f"[soak] {s.t:5.0f}s rss {s.rss_mb:.1f} MB, {s.threads} threads, "
                            f"{s.fds} fds, cpu {s.cpu_s:.1f}s"
                        )
                        last_log = time.monotonic()
                    time.sleep(0.2)
                result.samples.append(proc_sample(proc.pid, began))
                result.requests, result.rotations, result.coalesced = scrape(port)
                stop = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                result.exit_code = proc.wait(60)
                result.stop_s = time.monotonic() - stop
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        for line in out_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    result.events["(unparsable line)"] += 1
                    continue
                result.events[event.get("event", "?")] += 1
                if event.get("event") == "library.log":  # what the libraries complained about
                    text = re.sub(r"\d[\d:. +-]*", "N", str(event.get("message", "")))
                    result.library[re.sub(r'"rotate [^"]*"', '"rotate NAME"', text)[:120]] += 1
            elif line.strip():
                result.events["(not JSON)"] += 1
        result.stderr_bytes = err_path.stat().st_size
    return result


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope, per minute."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] / 60 for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def summarise(result: SoakResult) -> dict[str, Any]:
    warm = min(WARM_UP, result.duration / 4)
    steady = [s for s in result.samples if s.t >= warm] or result.samples
    first = [s for s in steady if s.t < warm + 60] or steady[:1]
    last = [s for s in steady if s.t >= steady[-1].t - 60] or steady[-1:]
    counts = sorted(result.requests.values())
    ideal = result.duration / result.interval
    cpu = (steady[-1].cpu_s - steady[0].cpu_s) / max(steady[-1].t - steady[0].t, 1e-9)
    return {
        "credentials": result.credentials,
        "interval_s": result.interval,
        "duration_s": result.duration,
        "samples": len(result.samples),
        "rss_first_min_mb": statistics.fmean(s.rss_mb for s in first),
        "rss_last_min_mb": statistics.fmean(s.rss_mb for s in last),
        "rss_drift_mb": statistics.fmean(s.rss_mb for s in last) - statistics.fmean(s.rss_mb for s in first),
        "rss_slope_mb_per_min": _slope([(s.t, s.rss_mb) for s in steady]),
        "rss_max_mb": max(s.rss_mb for s in result.samples),
        "threads_min": min(s.threads for s in steady),
        "threads_max": max(s.threads for s in steady),
        "fds_min": min(s.fds for s in steady),
        "fds_max": max(s.fds for s in steady),
        "cpu_pct": 100 * cpu,
        "requests_min": counts[0] if counts else 0,
        "requests_median": statistics.median(counts) if counts else 0,
        "requests_max": counts[-1] if counts else 0,
        "requests_total": sum(counts),
        "requests_ideal": ideal,
        "credentials_seen": len(counts),
        "rotations": result.rotations,
        "coalesced": result.coalesced,
        "failed_events": result.events.get("rotation.failed", 0),
        "library_warnings": result.events.get("library.log", 0),
        "library_messages": dict(result.library.most_common(3)),
        "written_events": result.events.get("token.written", 0),
        "other_lines": result.events.get("(not JSON)", 0) + result.events.get("(unparsable line)", 0),
        "stderr_bytes": result.stderr_bytes,
        "exit_code": result.exit_code,
        "stop_s": result.stop_s,
    }


def section(s: dict[str, Any], command: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = machine_facts()
    rot = s["rotations"]
    rows = [
        ("RSS, mean of the first minute after warm-up", f"{s['rss_first_min_mb']:.1f} MB"),
        ("RSS, mean of the last minute", f"{s['rss_last_min_mb']:.1f} MB"),
        ("RSS drift (last minute - first minute)", f"{s['rss_drift_mb']:+.2f} MB"),
        ("RSS slope after warm-up (least squares)", f"{s['rss_slope_mb_per_min']:+.3f} MB/min"),
        ("RSS, highest sample", f"{s['rss_max_mb']:.1f} MB"),
        ("Threads after warm-up (min to max)", f"{s['threads_min']} to {s['threads_max']}"),
        ("Open file descriptors after warm-up (min to max)", f"{s['fds_min']} to {s['fds_max']}"),
        ("CPU after warm-up (utime+stime, share of one CPU)", f"{s['cpu_pct']:.1f} %"),
        (
            "Token requests per credential (min / median / max)",
            f"{s['requests_min']:.0f} / {s['requests_median']:.0f} / {s['requests_max']:.0f} "
            f"(ideal {s['requests_ideal']:.0f})",
        ),
        ("Token requests, all credentials", f"{s['requests_total']:.0f}"),
        ("Rotations by result (/metrics)", ", ".join(f"{k} {v:.0f}" for k, v in sorted(rot.items()))),
        ("Runs coalesced into a queued run (rotator_runs_coalesced_total)", f"{s['coalesced']:.0f}"),
        ("rotation.failed audit lines", str(s["failed_events"])),
        ("Scheduler/library warnings (library.log)", str(s["library_warnings"])),
        *[(f"&nbsp;&nbsp;{count} x", f"`{message}`") for message, count in s["library_messages"].items()],
        (
            "Lines on stdout that are not audit JSON; bytes on stderr",
            f"{s['other_lines']}; {s['stderr_bytes']}",
        ),
        ("SIGTERM to exit", f"{s['stop_s']:.2f} s (exit {s['exit_code']})"),
    ]
    table = ["| Measure | Value |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]]
    return (
        "\n".join(
            [
                f"_Measured {when} by `{command}`: {s['credentials']} credentials on the file store, every "
                f"{s['interval_s']:g} s, for {s['duration_s'] / 60:g} minutes; {s['samples']} samples of "
                f"/proc every {SAMPLE_EVERY:g} s; the token endpoint in its own process._",
                "",
                *table,
                "",
                f"Machine: {facts['CPU']}; {facts['Python']}; {facts['File system of the stores']}.",
            ]
        )
        + "\n"
    )


def write_section(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Reliability\n\n"
    block = f"{MARK_BEGIN}\n{body}{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Soak\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--credentials", type=int, default=50)
    parser.add_argument("--interval", default="1s", help="every, as in the config (default 1s)")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/reliability.md")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.soak", *given])
    if not given:
        command = "make soak"  # = python -m bench.soak
    with tempfile.TemporaryDirectory(prefix="rotator-soak-") as tmp:
        result = run_soak(
            Path(tmp), credentials=args.credentials, interval=args.interval, duration=args.duration
        )
    summary = summarise(result)
    body = section(summary, command.strip())
    print(body)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    if not args.no_write:
        write_section(args.doc, body)
    return 0 if summary["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
