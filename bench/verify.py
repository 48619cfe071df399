"""What `verify` (probe a new token before writing it) costs a rotation.

The same credential on the file store, against the emulated token endpoint in its own process,
rotated N times (forced, after one untimed first rotation) with `verify` off, `"userinfo"` and
`"query"`, the three variants interleaved round by round so that machine load hits them alike.
The probe is one more HTTP request to the instance (the emulator, on loopback here; against
Salesforce add one round trip to the instance).

Run alone: `python -m bench.verify [--quick]`, or `python -m bench.run_all --only verify`.
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
    fleet_apps,
    fmt_ms,
    percentile,
    quiet_audit,
    salesforce_server,
    start_store,
    write_fleet,
)

VARIANTS = (None, "userinfo", "query")
COLUMNS = ["verify", "N", "p50 ms", "mean ms", "p99 ms", "added p50 ms"]


def _engines(ctx: Ctx, endpoint: Any) -> tuple[dict[str | None, Any], list[Any], str]:
    from rotator.config import load_config
    from rotator.engine import Engine

    engines: dict[str | None, Any] = {}
    stores = []
    name = ""
    for variant in VARIANTS:
        directory = ctx.subdir(f"verify-{variant or 'off'}")
        store = start_store(ctx, "file", directory)
        stores.append(store)
        fleet = write_fleet(ctx, directory, store, 1, login_url=endpoint.url)
        name = fleet.names[0]
        if variant is not None:  # the credential's table is the last one in the file
            with fleet.config.open("a") as config:
                config.write(f'verify = "{variant}"\n')
        engines[variant] = Engine(load_config(fleet.config))
    return engines, stores, name


def measure(ctx: Ctx, endpoint: Any, n: int) -> dict[str | None, list[float]]:
    engines, stores, name = _engines(ctx, endpoint)
    durations: dict[str | None, list[float]] = {v: [] for v in VARIANTS}
    try:
        with quiet_audit():
            for engine in engines.values():  # parse the key, open the connections
                first = engine.rotate(name, force=True)
                if not first.ok:
                    error = first.error and first.error.diagnostics()
                    raise NotMeasured(f"the first rotation failed: {error}")
            for _ in range(n):
                for variant, engine in engines.items():
                    start = time.perf_counter()
                    result = engine.rotate(name, force=True)
                    durations[variant].append(time.perf_counter() - start)
                    if not result.ok:
                        raise NotMeasured(f"verify={variant}: {result.error and result.error.diagnostics()}")
    finally:
        for engine in engines.values():
            engine.stores.close()
        for store in stores:
            store.stop()
    return durations


def run(ctx: Ctx) -> Table:
    table = Table("verify", "Verify before write: cost per rotation (file store)", COLUMNS)
    n = ctx.profile.rotation_n
    with salesforce_server(ctx, fleet_apps(ctx, 1), name="verify") as endpoint:
        found = measure(ctx, endpoint, n)
    base = percentile(found[None], 50)
    for variant, durations in found.items():
        p50 = percentile(durations, 50)
        table.add(**{
            "verify": variant or "off", "N": n, "p50 ms": fmt_ms(p50),
            "mean ms": fmt_ms(sum(durations) / len(durations)),
            "p99 ms": fmt_ms(percentile(durations, 99)),
            "added p50 ms": "—" if variant is None else fmt_ms(p50 - base),
        })
    table.notes.append("Forced rotations, the three variants interleaved; the probe goes to the "
                       "emulated instance on loopback (against Salesforce: one more round trip).")
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
