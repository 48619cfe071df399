"""Where a rotation's CPU goes, step by step (issue 21): `python -m bench.steps [N]`.

A sequential `rotate --force` pass over N credentials (default 1,000) on the file store, the
token endpoint in its own process, audit lines rendered as JSON into /dev/null - the fleet
benchmark's in-process pass - with the process's CPU clock (user + system, all threads) read
at each of the engine's step hooks (`Engine.on_step`). Prints the CPU per rotation between
steps and the raw RSA-2048 signature timed around the pass (the unit of issue 21's ratio).
Two passes; the second (keys loaded, connections open) is the steady state. No profiler is
involved, so the steps add up to what the pass costs.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench._common import QUICK, Ctx, fleet_apps, quiet_audit, salesforce_server, start_store, write_fleet
from bench.fleet import _engine, raw_sign_seconds

# what happens between two hooks (rotator/engine.py, Engine._rotate)
STEPS = {
    "start->key-loaded": "audit `rotation.started`; key record read (file store); key from the cache",
    "key-loaded->minted": "token record read; key lifecycle check; assertion: claims, PyJWT, RSA sign",
    "minted->exchanged": "token request (urllib3, loopback) and the reply's checks",
    "exchanged->written": "token record: encode, lock, compare-and-set, temp file, fsync, renames",
    "written->end": "audits `token.written` and `rotation.succeeded`; result",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 1000
    with tempfile.TemporaryDirectory(prefix="rotator-steps-") as tmp:
        ctx = Ctx(QUICK, Path(tmp), quiet=True)
        with salesforce_server(ctx, fleet_apps(ctx, n), name="steps") as endpoint, quiet_audit():
            directory = ctx.subdir("fleet")
            fleet = write_fleet(ctx, directory, start_store(ctx, "file", directory), n,
                                login_url=endpoint.url, seed_tokens=True)
            engine = _engine(fleet.config)
            spent: Counter[str] = Counter()
            last: list[tuple[float, str]] = []  # (CPU clock, step) at the latest hook

            def hook(_name: str, step: str) -> None:
                now = time.process_time()
                if last and step != "start":
                    spent[f"{last[-1][1]}->{step}"] += now - last[-1][0]
                last[:] = [(now, step)]

            engine.on_step = hook
            for number in (1, 2):
                spent.clear()
                before = raw_sign_seconds(ctx, 0.5)
                total = 0.0
                for name in fleet.names:
                    began = time.process_time()
                    result = engine.rotate(name, force=True)
                    ended = time.process_time()
                    assert result.ok, result.error
                    spent["written->end"] += ended - last[-1][0]
                    total += ended - began
                    last.clear()
                sign = (before + raw_sign_seconds(ctx, 0.5)) / 2
                print(f"\nPass {number} ({n:,} credentials): {1000 * total / n:.3f} ms CPU per "
                      f"rotation; raw RSA-2048 signature {1000 * sign:.3f} ms; "
                      f"ratio {total / n / sign:.1f}x\n")
                print("| Between the steps | What runs there | CPU ms / rotation | share |")
                print("|---|---|---:|---:|")
                spent["rest"] = total - sum(spent.values())
                for key, what in {**STEPS, "rest": "before `start`: rotation id, audit context; "
                                  "the resolved credential"}.items():
                    print(f"| {key} | {what} | {1000 * spent[key] / n:.3f} | "
                          f"{100 * spent[key] / total:.0f}% |")
            engine.stores.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
