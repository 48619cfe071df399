"""The daemon at capacity (issue 21): is every credential served its share, and is no run lost?

`python -m bench.capacity` (not in CI; about 25 minutes on 2 cores). Each run is the daemon as
systemd starts it (`rotator --config X run`), Salesforce credentials on the file store every
1 s (`max_requests_per_hour = 1800`), the token endpoint in its own process: bench.soak's
harness, so the figures come from the daemon's own /metrics and audit lines.

1. **Capacity**: more credentials than the daemon can serve (at least --overload, doubled
   until the least served credential falls short of the ideal), for --probe seconds.
   Capacity = token requests a second in that run. The same run is the fairness test at
   more due work than the daemon can do: every credential's token requests against their
   mean (its fair share of what was done).
2. **80 % of capacity**, --duration seconds: every credential within ±10 % of the ideal
   (duration / interval token requests).
3. **50 % of capacity**, --duration seconds: no run lost or skipped — no rotation with result
   `skipped`, no run coalesced into a queued one, no scheduler warning.

The table goes between the `capacity` markers of docs/benchmarks.md (--no-write: print only).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._common import machine_facts
from bench.soak import run_soak, summarise

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
MARK_BEGIN, MARK_END = "<!-- capacity -->", "<!-- /capacity -->"
INTERVAL = "1s"
FAIR = 0.10  # ±10 % of the fair share


def _run(credentials: int, duration: float, log: Any) -> dict[str, Any]:
    log(f"[capacity] {credentials} credentials every {INTERVAL} for {duration:g} s")
    with tempfile.TemporaryDirectory(prefix="rotator-capacity-") as tmp:
        result = run_soak(Path(tmp), credentials=credentials, interval=INTERVAL, duration=duration,
                          log=log)
    summary = summarise(result)
    summary["counts"] = sorted(result.requests.values())
    summary["rate"] = summary["requests_total"] / duration
    log(f"[capacity]   {summary['rate']:.0f} requests/s; per credential "
        f"{summary['requests_min']:.0f} / {summary['requests_median']:.0f} / "
        f"{summary['requests_max']:.0f} (ideal {summary['requests_ideal']:.0f}); "
        f"coalesced {summary['coalesced']:.0f}")
    return summary


def _within(summary: dict[str, Any], share: float) -> bool:
    return bool(summary["counts"]) and (
        summary["requests_min"] >= (1 - FAIR) * share and summary["requests_max"] <= (1 + FAIR) * share
    )


def _lost(summary: dict[str, Any]) -> float:
    return summary["rotations"].get("skipped", 0.0) + summary["coalesced"] + summary["library_warnings"]


def measure(*, overload: int, probe: float, duration: float, log: Any = print,
            previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """`previous`: the figures of an earlier run whose probe is kept (--reuse-probe)."""
    if previous is not None:
        over = previous["overload"]
    else:
        credentials = overload
        for _ in range(4):
            over = _run(credentials, probe, log)
            if over["requests_min"] < 0.97 * over["requests_ideal"]:
                break  # the least served fell short: the daemon could not keep up
            credentials *= 2
    capacity = over["rate"]
    probe = over["duration_s"]
    at80 = _run(max(1, round(0.8 * capacity)), duration, log)
    at50 = _run(max(1, round(0.5 * capacity)), duration, log)
    return {"capacity": capacity, "overload": over, "at80": at80, "at50": at50,
            "probe": probe, "duration": duration}


def _row(label: str, s: dict[str, Any], share: float, fair: bool, lost_ok: bool | None) -> str:
    due = s["credentials"] / s["interval_s"]
    lost = _lost(s)
    cells = [
        label,
        f"{s['credentials']:,}",
        f"{s['duration_s'] / 60:.3g} min",
        f"{due:,.0f}",
        f"{s['rate']:,.0f}",
        f"{s['requests_min']:.0f} / {s['requests_median']:.0f} / {s['requests_max']:.0f}",
        f"{share:.1f}",
        f"{100 * (s['requests_min'] / share - 1):+.1f} % / {100 * (s['requests_max'] / share - 1):+.1f} %",
        "yes" if fair else "**no**",
        f"{s['rotations'].get('skipped', 0):.0f} / {s['coalesced']:.0f} / {s['library_warnings']}",
        ("yes" if lost == 0 else "**no**") if lost_ok is not None else "—",
        f"{s['rotations'].get('failure', 0):.0f}",
        f"{s['cpu_pct']:.0f} %",
        f"{s['rss_max_mb']:.1f} MB",
    ]
    return "| " + " | ".join(cells) + " |"


def section(found: dict[str, Any], command: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = machine_facts()
    over, at80, at50 = found["overload"], found["at80"], found["at50"]
    over_share = over["requests_total"] / max(over["credentials_seen"], 1)
    head = ("| Run | Credentials | Length | Due rotations/s | Token requests/s done | "
            "Token requests per credential (min / median / max) | Fair share | Least / most "
            "served against it | Within ±10 % | Skipped / coalesced / scheduler warnings | "
            "None lost | Failed | Daemon CPU | RSS max |")
    rule = "|---|---:|---|---:|---:|---|---:|---|---|---|---|---:|---:|---:|"
    rows = [
        _row("Over capacity (the probe)", over, over_share, _within(over, over_share), None),
        _row("80 % of capacity", at80, at80["requests_ideal"], _within(at80, at80["requests_ideal"]),
             None),
        _row("50 % of capacity", at50, at50["requests_ideal"], _within(at50, at50["requests_ideal"]),
             True),
    ]
    return "\n".join([
        f"_Measured {when} by `{command}`: the daemon (`rotator --config X run`, 4 workers), "
        f"Salesforce credentials on the file store every {INTERVAL}, the token endpoint in its "
        f"own process; capacity {found['capacity']:,.0f} token requests a second, from the "
        f"{found['probe'] / 60:.3g}-minute probe._",
        "",
        head,
        rule,
        *rows,
        "",
        "Fair share: over capacity, the mean of what the daemon did (token requests ÷ "
        "credentials); below it, the ideal (length ÷ interval). Skipped: rotations with result "
        "`skipped` (/metrics); coalesced: `rotator_runs_coalesced_total`; scheduler warnings: "
        "`library.log` lines.",
        "",
        f"Machine: {facts['CPU']}; {facts['Python']}; {facts['File system of the stores']}.",
    ]) + "\n"


def write_section(path: Path, body: str) -> None:
    text = path.read_text()
    block = f"{MARK_BEGIN}\n{body}{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## The daemon at capacity (issue 21)\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--overload", type=int, default=600, help="credentials of the first probe")
    parser.add_argument("--probe", type=float, default=120.0, help="seconds of the capacity probe")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of the 80 %% and 50 %% runs")
    parser.add_argument("--reuse-probe", type=Path, metavar="JSON",
                        help="keep the capacity probe of an earlier --json output; rerun the rest")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.capacity", *given]).strip()
    previous = json.loads(args.reuse_probe.read_text()) if args.reuse_probe else None
    found = measure(overload=args.overload, probe=args.probe, duration=args.duration,
                    previous=previous)
    body = section(found, command)
    print(body)
    if args.json:
        args.json.write_text(json.dumps(found, indent=1, sort_keys=True, default=str) + "\n")
    if not args.no_write:
        write_section(args.doc, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
