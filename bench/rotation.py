"""Rotation latency: one full rotation (load, mint, exchange, write, audit) per store.

`Engine.rotate(name, force=True)` in this process against the emulated token endpoint in
its own process, N times after one untimed first rotation (which parses the key and opens
the connections; its time is shown apart). The share of each step comes from the Engine's
`on_step` hook: the time between its marks, summed over all N rotations.

Run alone: `python -m bench.rotation [--quick]`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    Ctx,
    NotMeasured,
    Table,
    environ,
    fleet_apps,
    fmt_ms,
    percentile,
    quiet_audit,
    salesforce_server,
    start_store,
    write_fleet,
)

STORES = ("file", "vault", "aws")
# (label, the on_step mark that ends the segment); the last segment ends when rotate() returns
SEGMENTS = (
    ("load key", "key-loaded"),  # read the key record, parse (cached) and check the pair
    ("read token + mint", "minted"),  # read the token record, key lifecycle, sign the assertion
    ("exchange", "exchanged"),  # POST to the token endpoint and parse the reply
    ("write", "written"),  # compare-and-set write of the token record
    ("audit + rest", None),  # audit events, key-record follow-up, result
)
COLUMNS = ["Store", "N", "first ms", "p50 ms", "p99 ms", "rotations/s",
           *[label for label, _ in SEGMENTS], "endpoint CPU ms"]


def measure_store(ctx: Ctx, kind: str, endpoint: Any, n: int) -> dict[str, Any]:
    """Time `n` forced rotations of one credential on a store of `kind`."""
    from rotator.config import load_config
    from rotator.engine import Engine

    directory = ctx.subdir(f"rotation-{kind}")
    store = start_store(ctx, kind, directory)
    try:
        fleet = write_fleet(ctx, directory, store, 1, login_url=endpoint.url)
        name = fleet.names[0]
        with environ(**store.env), quiet_audit():
            marks: list[tuple[str, float]] = []
            engine = Engine(
                load_config(fleet.config),
                on_step=lambda _name, step: marks.append((step, time.perf_counter())),
            )
            try:
                first_start = time.perf_counter()
                first = engine.rotate(name, force=True)
                first_s = time.perf_counter() - first_start
                if not first.ok:
                    error = first.error and first.error.diagnostics()
                    raise NotMeasured(f"the first rotation failed: {error}")
                totals = {label: 0.0 for label, _ in SEGMENTS}
                durations = []
                cpu_before = endpoint.cpu_seconds()
                for _ in range(n):
                    marks.clear()
                    start = time.perf_counter()
                    result = engine.rotate(name, force=True)
                    end = time.perf_counter()
                    if not result.ok:
                        raise NotMeasured(f"a rotation failed: {result.error and result.error.diagnostics()}")
                    durations.append(end - start)
                    _add_segments(totals, start, end, dict(marks))
                cpu_after = endpoint.cpu_seconds()
            finally:
                engine.stores.close()
    finally:
        store.stop()
    endpoint_cpu = None
    if cpu_before is not None and cpu_after is not None:
        endpoint_cpu = (cpu_after - cpu_before) / n
    return {"first": first_s, "durations": durations, "segments": totals,
            "endpoint_cpu_per_exchange": endpoint_cpu}


def _add_segments(totals: dict[str, float], start: float, end: float, marks: dict[str, float]) -> None:
    previous = start
    for label, mark in SEGMENTS:
        at = marks.get(mark, previous) if mark else end
        totals[label] += at - previous
        previous = at


def run(ctx: Ctx) -> Table:
    table = Table("rotation", "Rotation latency, per store", COLUMNS)
    n = ctx.profile.rotation_n
    with salesforce_server(ctx, fleet_apps(ctx, 1), name="rotation") as endpoint:
        for kind in STORES:
            ctx.log(f"rotation: {kind} store, {n} rotations")
            try:
                found = measure_store(ctx, kind, endpoint, n)
            except NotMeasured as exc:
                table.add(**{c: "—" for c in COLUMNS} | {"Store": kind, "N": 0})
                table.notes.append(f"{kind}: not measured: {exc}")
                continue
            except Exception as exc:  # a store under construction may fail in any way
                table.add(**{c: "—" for c in COLUMNS} | {"Store": kind, "N": 0})
                table.notes.append(f"{kind}: not measured: {type(exc).__name__}: {exc}")
                continue
            durations = found["durations"]
            total = sum(durations)
            row = {
                "Store": kind, "N": n, "first ms": fmt_ms(found["first"]),
                "p50 ms": fmt_ms(percentile(durations, 50)), "p99 ms": fmt_ms(percentile(durations, 99)),
                "rotations/s": round(n / total, 1),
            }
            for label, seconds in found["segments"].items():
                row[label] = f"{fmt_ms(seconds / n)} ({100 * seconds / total:.0f}%)"
            cpu = found["endpoint_cpu_per_exchange"]
            row["endpoint CPU ms"] = fmt_ms(cpu) if cpu is not None else "—"
            table.add(**row)
            table.data[kind] = found
    table.notes.insert(0, (
        "Step cells: mean ms per rotation (share of the total). `first` is the untimed first "
        "rotation: it also parses the key and opens the HTTP connection and the store client. "
        "`endpoint CPU ms`: CPU the emulated token endpoint (its own process) spent per exchange, "
        "part of the exchange step. Vault and AWS are emulators (rotator's VaultEmulator, moto "
        "server), written in Python: their step times say little about the real services."
    ))
    return table


def main(argv: list[str] | None = None) -> int:
    from bench._common import FULL, QUICK

    args = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix="rotator-bench-") as tmp:
        ctx = Ctx(QUICK if "--quick" in args else FULL, Path(tmp))
        print(run(ctx).markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
