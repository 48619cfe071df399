"""What the reliability suite shares: the three stores under test, endpoints, daemon children,
a virtual clock, and the recorder whose numbers become docs/reliability.md.

The recorder writes nothing unless ROTATOR_RELIABILITY_OUT names a directory; then every test
appends JSON lines (one file per xdist worker) that `python -m bench.reliability_report`
summarises. Tests record what they did (faults injected, rotations attempted, kills, bad
inputs, fuzz examples), never secrets.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLIENT_ID, USERNAME, rotator_subprocess_env, write_config

REPORT_ENV = "ROTATOR_RELIABILITY_OUT"


# ---------------------------------------------------------------------------- the recorder


class Recorder:
    """Appends one JSON line per record to <ROTATOR_RELIABILITY_OUT>/<worker>.jsonl."""

    def __init__(self, directory: str | None) -> None:
        self.path: Path | None = None
        if directory:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            self.path = Path(directory) / f"{worker}.jsonl"
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, section: str, **fields: Any) -> None:
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"section": section, **fields}, sort_keys=True, default=str) + "\n")


@pytest.fixture(scope="session")
def report() -> Recorder:
    return Recorder(os.environ.get(REPORT_ENV))


# ---------------------------------------------------------------------------- time and ports


class VirtualClock:
    """Epoch seconds that move only when a test says so (starts at the real time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, moment: float) -> None:
        self.now = max(self.now, moment)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


# ---------------------------------------------------------------------------- the token endpoint


@pytest.fixture
def make_endpoint(secret_guard: Any) -> Iterator[Callable[..., Any]]:
    """SalesforceEndpoints on a fixed port (so `refused` can stop one and start it again)."""
    from rotator.testing.salesforce import SalesforceEndpoint

    started: list[Any] = []

    def make(**kwargs: Any) -> Any:
        server = SalesforceEndpoint(port=free_port(), **kwargs).start()
        secret_guard.endpoints.append(server)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


# ---------------------------------------------------------------------------- the stores


@dataclass
class StoreKit:
    """One store under test, seen the way an operator and a consumer see it."""

    kind: str  # file | vault | aws
    name: str  # the store's name in the config
    block: str  # its [stores.NAME] TOML
    prefix: str  # every path of this test lives under it
    env: dict[str, str] = field(default_factory=dict)  # for a daemon child process
    server: Any = None  # VaultEmulator, or the AwsFaultProxy in front of moto
    extra: dict[str, Any] = field(default_factory=dict)

    def ref(self, leaf: str) -> str:
        return f"{self.name}:{self.prefix}/{leaf}"

    def path(self, leaf: str) -> str:
        return f"{self.prefix}/{leaf}"

    # the operator's view
    def put(self, leaf: str, data: dict[str, Any]) -> None:
        path = self.path(leaf)
        if self.kind == "file":
            target = self.extra["root"] / f"{path}.json"
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(data))
        elif self.kind == "vault":
            self.server.kv_put("secret", path, data)
        else:
            sm = self.extra["sm"]
            try:
                sm.create_secret(Name=path, SecretString=json.dumps(data))
            except sm.exceptions.ResourceExistsException:
                sm.put_secret_value(
                    SecretId=path, SecretString=json.dumps(data), VersionStages=["AWSCURRENT"]
                )

    # the consumer's view, byte for byte (with the store's version where it has one)
    def snapshot(self, leaf: str) -> bytes | None:
        path = self.path(leaf)
        if self.kind == "file":
            try:
                return (self.extra["root"] / f"{path}.json").read_bytes()
            except FileNotFoundError:
                return None
        if self.kind == "vault":
            versions = self.server.kv_versions("secret", path)
            if not versions:
                return None
            latest = max(versions)
            return f"{latest}:".encode() + json.dumps(versions[latest], sort_keys=True).encode()
        sm = self.extra["sm"]
        try:
            reply = sm.get_secret_value(SecretId=path, VersionStage="AWSCURRENT")
        except sm.exceptions.ResourceNotFoundException:
            return None
        return f"{reply['VersionId']}:".encode() + reply["SecretString"].encode()

    def read(self, leaf: str) -> dict[str, Any] | None:
        raw = self.snapshot(leaf)
        if raw is None:
            return None
        if self.kind == "file":
            return json.loads(raw)
        return json.loads(raw.split(b":", 1)[1])

    def stages(self, leaf: str) -> dict[str, list[str]]:
        """AWS only: labelled versions of the secret (moto also lists unlabelled ones)."""
        found = self.extra["sm"].describe_secret(SecretId=self.path(leaf)).get("VersionIdsToStages", {})
        return {version: labels for version, labels in found.items() if labels}


@pytest.fixture(scope="session")
def vault_server() -> Iterator[Any]:
    from rotator.testing.vault import VaultEmulator

    with VaultEmulator() as server:
        yield server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Any]:
    from rotator.testing.aws import MotoServer

    with MotoServer() as server:
        yield server


@pytest.fixture
def make_store(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, secret_guard: Any
) -> Iterator[Callable[[str], StoreKit]]:
    """`make_store(kind)`: a file store under tmp_path, or a fresh corner of the shared Vault
    emulator / moto (its own path prefix, its own Vault policy and token)."""
    cleanups: list[Callable[[], None]] = []

    def make(kind: str) -> StoreKit:
        prefix = "rt" + uuid.uuid4().hex[:10]
        if kind == "file":
            root = tmp_path / "store"
            return StoreKit(
                "file", "local", '[stores.local]\ntype = "file"\npath = "store"', prefix, extra={"root": root}
            )
        if kind == "vault":
            vault = request.getfixturevalue("vault_server")
            vault.unseal()
            vault.clear_faults()
            policy = f"rotator-{prefix}"
            vault.add_policy(policy, vault_rules(prefix))
            token = vault.create_token(policies=[policy], ttl=0, max_ttl=0)
            token_file = tmp_path / f"vault-token-{prefix}"
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
            block = (
                f'[stores.vault]\ntype = "vault"\nurl = "{vault.url}"\ntimeout = "2s"\n'
                f'auth = {{ method = "token", token_file = "{token_file}" }}'
            )

            def restore() -> None:
                if vault._server is None:  # a test stopped it ("unreachable")
                    vault.start()
                vault.unseal()
                vault.clear_faults()
                for value in vault.issued:
                    secret_guard.add(value)

            cleanups.append(restore)
            return StoreKit("vault", "vault", block, prefix, server=vault, extra={"policy": policy})
        if kind == "aws":
            from rotator.testing.aws import AWS_ENV_CLEAR, AwsFaultProxy, aws_env

            moto = request.getfixturevalue("moto_server")
            for name in AWS_ENV_CLEAR:
                monkeypatch.delenv(name, raising=False)
            env = aws_env()
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            proxy = AwsFaultProxy(moto.url).start()
            cleanups.append(proxy.stop)
            block = (
                f'[stores.aws]\ntype = "aws"\nregion = "us-east-1"\nendpoint_url = "{proxy.url}"\n'
                'timeout = "2s"'
            )
            return StoreKit(
                "aws", "aws", block, prefix, env=env, server=proxy, extra={"sm": moto.client(), "moto": moto}
            )
        raise ValueError(kind)

    yield make
    for cleanup in reversed(cleanups):
        cleanup()


def vault_rules(prefix: str, *, token_caps: list[str] | None = None) -> dict[str, list[str]]:
    """rotator's policy (deploy/vault/rotator-policy.hcl) for paths under `prefix`; token_caps
    replaces the capabilities on the token path (an exact path outranks the glob)."""
    rules = {
        f"secret/data/{prefix}/*": ["create", "read", "update"],
        f"secret/metadata/{prefix}/*": ["read", "update"],
    }
    if token_caps is not None:
        rules[f"secret/data/{prefix}/sf/token"] = token_caps
    return rules


def seed_credential(kit: StoreKit, endpoint: Any, pair: Any) -> None:
    """The operator's part: the key record in the store, the certificate in the connected app."""
    kit.put("sf/key", {"private_key": pair.key_pem, "certificate": pair.cert_pem})
    endpoint.register_app(CLIENT_ID, pair.cert_pem, users=[USERNAME])


def credential_config(
    tmp_path: Path,
    endpoint: Any,
    kit: StoreKit,
    *,
    daemon: dict[str, Any] | None = None,
    name: str = "rotator.toml",
    **settings: Any,
) -> Path:
    body = {"key": kit.ref("sf/key"), "token": kit.ref("sf/token"), **settings}
    return write_config(
        tmp_path / name, login_url=endpoint.url, stores=kit.block, credentials={"sf": body}, daemon=daemon
    )


# ---------------------------------------------------------------------------- daemon children


class DaemonChild:
    """`python -m rotator --config X run` (or `-m rotator.testing.faults` when the env sets
    ROTATOR_FAULT_STEP) with its stdout/stderr in files under tmp_path
    (which the secret guard scans: `.out` / `.err`)."""

    def __init__(self, config: Path, tmp_path: Path, label: str, env: dict[str, str]) -> None:
        self.out_path, self.err_path = tmp_path / f"{label}.out", tmp_path / f"{label}.err"
        # With ROTATOR_FAULT_* set, start through the fault injector (production never loads it).
        entry = "rotator.testing.faults" if "ROTATOR_FAULT_STEP" in env else "rotator"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", entry, "--config", str(config), "run"],
                stdout=out,
                stderr=err,
                env=rotator_subprocess_env(**env),
            )

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.out_path.read_text().splitlines():
            if line.startswith("{") and line.endswith("}"):
                event = json.loads(line)
                if name is None or event.get("event") == name:
                    found.append(event)
        return found

    def alive(self) -> bool:
        return self.proc.poll() is None

    def assert_alive(self) -> None:
        assert self.alive(), f"daemon exited {self.proc.returncode}: {self.err_path.read_text()[-2000:]}"

    def kill(self) -> int:
        if self.alive():
            self.proc.kill()
        return self.proc.wait(10)

    def stop(self, timeout: float = 10) -> int:
        if self.alive():
            self.proc.terminate()
        return self.proc.wait(timeout)


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonChild]]:
    started: list[DaemonChild] = []

    def start(config: Path, *, label: str = "daemon", env: dict[str, str] | None = None) -> DaemonChild:
        child = DaemonChild(config, tmp_path, label, env or {})
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()


def assert_clean(child: DaemonChild) -> None:
    """No traceback, nothing on stderr, every line a catalogued audit event."""
    from rotator.audit import events

    out, err = child.out_path.read_text(), child.err_path.read_text()
    assert "Traceback" not in out and "Traceback" not in err
    assert err == "", err[-2000:]
    for event in child.events():
        assert events.validate(event) == [], event
