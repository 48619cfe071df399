"""`python -m bench._servers KIND SPEC.json`: one emulated service in its own process.

Prints one JSON line ({"url": ...}) once serving, then serves until its stdin closes (so it
never outlives the benchmark that started it). KIND is `salesforce` (SPEC: apps,
login_rate_limit, delay), `vault` (root token in the line) or `moto`.

simple-salesforce sends `exp` as a decimal string (f"{timestamp:.0f}"); Salesforce accepts
that, and so does the emulator (rotator/testing/salesforce.py), so every tool in the
comparison talks to the same unmodified endpoint.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path
from typing import Any


def _salesforce(spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from rotator.testing import salesforce

    endpoint = salesforce.SalesforceEndpoint(login_rate_limit=int(spec.get("login_rate_limit", 10**9)))
    for app in spec.get("apps", []):
        endpoint.register_app(app["client_id"], app["cert_pem"], users=app.get("users", []))
    if spec.get("delay"):  # every token request answered late: a remote endpoint's round trip
        endpoint.set_fault("slow", count=None, delay=float(spec["delay"]))
    endpoint.start()
    return endpoint, {"url": endpoint.url}


def _vault(spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from rotator.testing.vault import VaultEmulator

    emulator = VaultEmulator(port=0).start()
    return emulator, {"url": emulator.url, "token": emulator.root_token}


def _moto(spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:  # moto wants a port; let the kernel pick a free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, {"url": f"http://{host}:{port}"}


def main(argv: list[str]) -> int:
    kind, spec_file = argv
    spec = json.loads(Path(spec_file).read_text())
    server, info = {"salesforce": _salesforce, "vault": _vault, "moto": _moto}[kind](spec)
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    done = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
