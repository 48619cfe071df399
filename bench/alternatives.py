"""Against the alternatives: the same endpoint, the same key, tokens per second.

* rotator in this process: `Engine.rotate(force=True)` (mint, exchange, file-store write,
  audit) and, for the like-for-like number, `Engine.mint` + `provider.exchange` alone;
* rotator as a one-shot command per token (`rotator rotate NAME --force`, a cron job);
* the manual recipe automated: bench/alt_openssl_curl.sh (openssl dgst -sign + curl);
* simple-salesforce, the usual Python choice: `SalesforceLogin(username=, consumer_key=,
  privatekey=<PEM str>, domain="login", session=...)`, its https://login.salesforce.com URL
  rewritten to the local endpoint by a requests adapter.

simple-salesforce signs `exp` as a decimal string, which real Salesforce and the emulator
both accept. Every tool talks to the same endpoint.

Run alone: `python -m bench.alternatives [--quick]`.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    AUDIENCE,
    REPO,
    Ctx,
    Table,
    child_env,
    client_id,
    fleet_apps,
    fmt_ms,
    quiet_audit,
    rotator_cmd,
    salesforce_server,
    start_store,
    tool,
    user,
    write_fleet,
)

SCRIPT = REPO / "bench" / "alt_openssl_curl.sh"
COLUMNS = ["Tool", "What one token costs", "N", "Tokens/s", "ms / token", "rotator engine ÷ this"]
SALESFORCE_HOST = "https://login.salesforce.com"


def _rewriting_session(base_url: str) -> Any:
    """A requests.Session whose https://login.salesforce.com requests go to `base_url`."""
    import requests
    from requests.adapters import HTTPAdapter

    class Rewrite(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            request.url = base_url + request.url[len(SALESFORCE_HOST):]
            return super().send(request, *args, **kwargs)

    session = requests.Session()
    session.trust_env = False
    session.mount(SALESFORCE_HOST, Rewrite())
    return session


def _simple_salesforce(base_url: str, pem: str, n: int) -> tuple[float, int, str | None]:
    """(seconds, successes, first error) for n SalesforceLogin JWT logins."""
    from simple_salesforce import SalesforceLogin

    session = _rewriting_session(base_url)
    ok, error = 0, None
    start = time.perf_counter()
    for _ in range(n):
        try:
            SalesforceLogin(username=user(0), consumer_key=client_id(0), privatekey=pem,
                            domain="login", session=session)
            ok += 1
        except Exception as exc:
            error = error or f"{type(exc).__name__}: {_oauth_error(exc)}"
    return time.perf_counter() - start, ok, error


def _oauth_error(exc: Exception) -> str:
    text = str(exc)
    found = re.search(r'"error_description"\s*:\s*"([^"]+)"', text)
    return found.group(1) if found else text[:120]


def run(ctx: Ctx) -> Table:
    table = Table("alternatives", "Against the alternatives: tokens per second", COLUMNS)
    n = ctx.profile.alt_n
    slow = max(1, n // 10)  # simple-salesforce: ~50 ms a login
    cli_runs = max(1, n // 20)  # a process per token: ~0.3 s each
    _, pem, _ = ctx.keys.rsa(2048, 0)
    apps = fleet_apps(ctx, 1)
    results: dict[str, tuple[float, int, int]] = {}  # label -> (seconds, ok, attempted)
    what: dict[str, str] = {}

    with salesforce_server(ctx, apps, name="alt") as endpoint, quiet_audit():
        directory = ctx.subdir("alternatives")
        store = start_store(ctx, "file", directory)
        fleet = write_fleet(ctx, directory, store, 1, login_url=endpoint.url)
        name = fleet.names[0]

        # -- rotator, in process
        from rotator.config import load_config
        from rotator.engine import Engine

        engine = Engine(load_config(fleet.config))
        assert engine.rotate(name, force=True).ok  # warm: key parsed, connection open
        ctx.log(f"alternatives: rotator engine, {n} rotations")
        start = time.perf_counter()
        ok = sum(engine.rotate(name, force=True).ok for _ in range(n))
        results["engine"] = (time.perf_counter() - start, ok, n)
        what["engine"] = "`Engine.rotate(force=True)`: mint, exchange, CAS write to the file store, audit"

        keyrec, record = engine.read_key_record(name)
        signer = engine.load_pair(name, keyrec.current, "current", record.version).signer
        provider = engine.provider(name)
        start = time.perf_counter()
        for _ in range(n):
            provider.exchange(engine.mint(name, signer))
        results["mint+exchange"] = (time.perf_counter() - start, n, n)
        what["mint+exchange"] = "`Engine.mint` + `provider.exchange`: sign and POST, nothing stored"
        engine.stores.close()

        # -- rotator, one process per token
        ctx.log(f"alternatives: rotator CLI, {cli_runs} runs")
        cmd = [*rotator_cmd(), "--config", str(fleet.config), "rotate", name, "--force"]
        start = time.perf_counter()
        ok = 0
        for _ in range(cli_runs):
            done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True)
            ok += done.returncode == 0 and '"ok": true' in done.stdout
        results["cli"] = (time.perf_counter() - start, ok, cli_runs)
        what["cli"] = "`rotator rotate NAME --force`, a new process per token (start-up included)"

        # -- openssl + curl
        missing = [t for t in ("bash", "openssl", "curl") if not tool(t)]
        if missing:
            table.notes.append(f"openssl + curl loop: not measured: {', '.join(missing)} not installed")
        else:
            count = max(1, n // 3)
            ctx.log(f"alternatives: openssl + curl loop, {count} tokens")
            out_dir = ctx.subdir("alt-openssl-curl")
            script = ["bash", str(SCRIPT), endpoint.url + "/services/oauth2/token", client_id(0),
                      user(0), AUDIENCE, str(ctx.keys.key_file(2048, 0)), str(count), str(out_dir)]
            start = time.perf_counter()
            done = subprocess.run(script, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            found = re.search(r"ok=(\d+) failed=(\d+)", done.stdout)
            results["shell"] = (seconds, int(found.group(1)) if found else 0, count)
            what["shell"] = ("bench/alt_openssl_curl.sh: `openssl dgst -sha256 -sign` + `curl`, "
                             "new processes and a new connection per token")
            if not found:
                table.notes.append(f"openssl + curl loop failed: {done.stderr.strip()[:200]}")
            table.data["shell_command"] = shlex.join(["bash", "bench/alt_openssl_curl.sh", *script[2:]])

        # -- simple-salesforce
        ctx.log(f"alternatives: simple-salesforce, {slow} logins")
        seconds, ok, error = _simple_salesforce(endpoint.url, pem, slow)
        results["simple-salesforce"] = (seconds, ok, slow)
        what["simple-salesforce"] = ("`SalesforceLogin(privatekey=PEM)`: PyJWT parses the PEM for "
                                     "every login; one kept-alive session")
        if error:
            table.notes.append(f"simple-salesforce: {slow - ok} of {slow} logins failed, first: {error}")

    labels = {
        "engine": "rotator, in-process engine", "mint+exchange": "rotator, mint + exchange only",
        "cli": "rotator CLI per token", "shell": "openssl + curl shell loop",
        "simple-salesforce": "simple-salesforce JWT login",
    }
    engine_rate = results["engine"][1] / results["engine"][0]
    for key, (seconds, ok, attempted) in results.items():
        per_s = ok / seconds if ok else 0.0
        table.add(**{
            "Tool": labels[key], "What one token costs": what[key], "N": attempted,
            "Tokens/s": round(per_s, 1), "ms / token": fmt_ms(seconds / attempted),
            "rotator engine ÷ this": "1x" if key == "engine" else (
                f"{engine_rate / per_s:.1f}x" if per_s else "—"),
        })
        table.data[key] = {"seconds": seconds, "ok": ok, "attempted": attempted}
        if ok < attempted and key != "simple-salesforce":
            table.notes.append(f"{labels[key]}: {attempted - ok} of {attempted} failed")
    table.notes.insert(0, (
        "Same endpoint process, same RSA-2048 key and connected app for every row; "
        "`rotator engine ÷ this` above 1x means rotator's in-process engine makes tokens that many "
        "times faster. The first two rows keep one HTTP connection; the shell loop opens one per token."
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
