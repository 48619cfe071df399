"""The Vault emulator, driven only through hvac over a real socket."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
import requests

from rotator.testing.vault import VaultEmulator

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KV = "secret"


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.25

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def vault(clock: FakeClock) -> Iterator[VaultEmulator]:
    with VaultEmulator(clock=clock) as emulator:
        yield emulator


@pytest.fixture
def root(vault: VaultEmulator) -> hvac.Client:
    return hvac.Client(url=vault.url, token=vault.root_token)


def client_for(vault: VaultEmulator, token: str | None = None, **kwargs: object) -> hvac.Client:
    return hvac.Client(url=vault.url, token=token, **kwargs)


def read(client: hvac.Client, path: str, version: int | None = None) -> dict:
    return client.secrets.kv.v2.read_secret_version(
        path, version=version, raise_on_deleted_version=True
    )


def write(client: hvac.Client, path: str, secret: dict, cas: int | None = None) -> dict:
    return client.secrets.kv.v2.create_or_update_secret(path, secret=secret, cas=cas)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ---------------------------------------------------------------------------- KV v2


def test_write_then_read_latest_and_older_versions(root: hvac.Client, clock: FakeClock) -> None:
    """Each write makes a new version; reads return the latest or the one asked for."""
    first = write(root, "app/key", {"pem": "one"})
    clock.advance(10)
    second = write(root, "app/key", {"pem": "two"}, cas=1)
    assert (first["data"]["version"], second["data"]["version"]) == (1, 2)
    assert second["data"]["deletion_time"] == "" and second["data"]["destroyed"] is False

    latest = read(root, "app/key")
    assert latest["data"]["data"] == {"pem": "two"}
    assert latest["data"]["metadata"]["version"] == 2
    assert latest["data"]["metadata"]["custom_metadata"] is None
    older = read(root, "app/key", version=1)
    assert older["data"]["data"] == {"pem": "one"}
    created = [parse_time(r["data"]["metadata"]["created_time"]) for r in (older, latest)]
    assert created[1] - created[0] == timedelta(seconds=10)


def test_missing_path_and_missing_version_are_404(root: hvac.Client) -> None:
    """Absent secrets and versions raise InvalidPath (Vault's 404 with empty errors)."""
    with pytest.raises(hvac.exceptions.InvalidPath) as missing:
        read(root, "nope")
    assert missing.value.errors == []
    write(root, "there", {"a": "b"})
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(root, "there", version=7)


def test_cas_zero_stale_and_current(root: hvac.Client) -> None:
    """cas=0 only creates, a stale cas is refused, the current version's cas succeeds."""
    assert write(root, "cas", {"v": "1"}, cas=0)["data"]["version"] == 1
    with pytest.raises(hvac.exceptions.InvalidRequest) as exists:
        write(root, "cas", {"v": "x"}, cas=0)
    assert exists.value.errors == ["check-and-set parameter did not match the current version"]
    assert write(root, "cas", {"v": "2"}, cas=1)["data"]["version"] == 2
    with pytest.raises(hvac.exceptions.InvalidRequest):
        write(root, "cas", {"v": "x"}, cas=1)
    assert write(root, "cas", {"v": "3"}, cas=2)["data"]["version"] == 3
    assert read(root, "cas")["data"]["data"] == {"v": "3"}


def race_once(vault: VaultEmulator, expected: int) -> dict[str, str]:
    """Two clients write with cas=expected at the same moment; returns name -> won/lost."""
    clients = {name: client_for(vault, vault.root_token) for name in ("a", "b")}
    barrier = threading.Barrier(len(clients))
    outcomes: dict[str, str] = {}

    def attempt(name: str) -> None:
        barrier.wait()
        try:
            write(clients[name], "race", {"n": name}, cas=expected)
            outcomes[name] = "won"
        except hvac.exceptions.InvalidRequest:
            outcomes[name] = "lost"

    threads = [threading.Thread(target=attempt, args=(name,)) for name in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return outcomes


def test_concurrent_writers_with_the_same_cas_exactly_one_wins(vault: VaultEmulator) -> None:
    """Two clients racing with the same cas: one write lands, the other gets InvalidRequest."""
    vault.kv_put(KV, "race", {"n": "0"})
    for expected in range(1, 11):
        outcomes = race_once(vault, expected)
        assert sorted(outcomes.values()) == ["lost", "won"]
        winner = next(name for name, result in outcomes.items() if result == "won")
        assert vault.kv_get(KV, "race") == {"n": winner}
    assert max(vault.kv_versions(KV, "race")) == 11


def test_max_versions_drops_oldest_first(root: hvac.Client, vault: VaultEmulator) -> None:
    """Per-path max_versions keeps a sliding window; the default window is 10."""
    root.secrets.kv.v2.update_metadata("small", max_versions=3)
    for n in range(1, 6):
        write(root, "small", {"n": str(n)})
    meta = root.secrets.kv.v2.read_secret_metadata("small")["data"]
    assert sorted(meta["versions"], key=int) == ["3", "4", "5"]
    assert (meta["current_version"], meta["oldest_version"], meta["max_versions"]) == (5, 3, 3)
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(root, "small", version=2)
    assert read(root, "small", version=3)["data"]["data"] == {"n": "3"}

    for n in range(1, 13):
        write(root, "default", {"n": str(n)})
    assert sorted(vault.kv_versions(KV, "default")) == list(range(3, 13))


def test_custom_metadata_round_trip(root: hvac.Client) -> None:
    """custom_metadata set through metadata shows up on data reads, writes and metadata."""
    write(root, "tagged", {"k": "v"})
    root.secrets.kv.v2.update_metadata(
        "tagged", custom_metadata={"owner": "rotator", "kind": "signing-key"}
    )
    expected = {"owner": "rotator", "kind": "signing-key"}
    assert read(root, "tagged")["data"]["metadata"]["custom_metadata"] == expected
    assert write(root, "tagged", {"k": "w"})["data"]["custom_metadata"] == expected
    meta = root.secrets.kv.v2.read_secret_metadata("tagged")["data"]
    assert meta["custom_metadata"] == expected


def test_metadata_read_shape(root: hvac.Client, clock: FakeClock) -> None:
    """Metadata has Vault's fields: versions map, current/oldest, times, settings."""
    write(root, "meta", {"a": "1"})
    clock.advance(5)
    write(root, "meta", {"a": "2"})
    meta = root.secrets.kv.v2.read_secret_metadata("meta")["data"]
    assert meta["current_version"] == 2 and meta["oldest_version"] == 0
    assert meta["max_versions"] == 0  # no per-path override, as Vault reports it
    assert meta["cas_required"] is False and meta["delete_version_after"] == "0s"
    assert set(meta["versions"]) == {"1", "2"}
    assert meta["versions"]["1"] == {
        "created_time": meta["created_time"], "deletion_time": "", "destroyed": False,
    }
    assert parse_time(meta["updated_time"]) - parse_time(meta["created_time"]) == timedelta(
        seconds=5
    )
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.secrets.kv.v2.read_secret_metadata("absent")


def test_soft_delete_returns_404_with_metadata(root: hvac.Client) -> None:
    """A deleted latest version reads as 404 whose body still carries its metadata."""
    write(root, "gone", {"a": "1"})
    root.secrets.kv.v2.delete_latest_version_of_secret("gone")
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(root, "gone")
    soft = root.secrets.kv.v2.read_secret_version("gone", raise_on_deleted_version=False)
    assert soft["data"]["data"] is None
    assert soft["data"]["metadata"]["deletion_time"] != ""
    assert write(root, "gone", {"a": "2"}, cas=1)["data"]["version"] == 2
    root.secrets.kv.v2.delete_metadata_and_all_versions("gone")
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.secrets.kv.v2.read_secret_metadata("gone")


def test_list_secrets(root: hvac.Client) -> None:
    """LIST returns child keys with folders suffixed by '/'; an empty folder is 404."""
    for path in ("apps/one", "apps/two", "apps/deep/three", "top"):
        write(root, path, {"x": "y"})
    assert root.secrets.kv.v2.list_secrets("")["data"]["keys"] == ["apps/", "top"]
    assert root.secrets.kv.v2.list_secrets("apps")["data"]["keys"] == ["deep/", "one", "two"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.secrets.kv.v2.list_secrets("nothing-here")


# ---------------------------------------------------------------------------- auth


def test_approle_login(vault: VaultEmulator) -> None:
    """AppRole login returns a token carrying the role's policies plus default."""
    vault.add_policy("app", {"secret/data/app/*": ["read"]})
    vault.kv_put(KV, "app/db", {"password": "p"})
    role_id, secret_id = vault.add_approle("rotator", policies=["app"], token_ttl=600)
    client = client_for(vault)
    login = client.auth.approle.login(role_id, secret_id)
    auth = login["auth"]
    assert auth["client_token"].startswith("hvs.") and client.token == auth["client_token"]
    assert auth["token_policies"] == ["app", "default"] and auth["policies"] == ["app", "default"]
    assert auth["lease_duration"] == 600 and auth["renewable"] is True
    assert auth["metadata"] == {"role_name": "rotator"}
    assert read(client, "app/db")["data"]["data"] == {"password": "p"}

    for bad in ((role_id, "wrong-secret"), ("wrong-role", secret_id)):
        with pytest.raises(hvac.exceptions.InvalidRequest) as refused:
            client_for(vault).auth.approle.login(*bad)
        assert refused.value.errors == ["invalid role or secret ID"]


def test_kubernetes_login(vault: VaultEmulator) -> None:
    """Kubernetes login accepts exactly the role's JWT; a wrong JWT is Forbidden."""
    vault.add_kubernetes_role("rotator", jwt="header.payload.sig", policies=["reader"])
    client = client_for(vault)
    auth = client.auth.kubernetes.login("rotator", "header.payload.sig")["auth"]
    assert auth["token_policies"] == ["default", "reader"]
    assert auth["metadata"]["role"] == "rotator"
    assert client.auth.token.lookup_self()["data"]["policies"] == ["default", "reader"]
    with pytest.raises(hvac.exceptions.Forbidden):
        client_for(vault).auth.kubernetes.login("rotator", "header.other.sig")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client_for(vault).auth.kubernetes.login("no-such-role", "header.payload.sig")


def test_lookup_self_ttl_follows_the_clock(vault: VaultEmulator, clock: FakeClock) -> None:
    """lookup-self reports the remaining ttl and an RFC 3339 expire_time."""
    client = client_for(vault, vault.create_token(policies=["default"], ttl=600))
    data = client.auth.token.lookup_self()["data"]
    assert data["ttl"] == 600 and data["creation_ttl"] == 600 and data["renewable"] is True
    assert data["type"] == "service" and data["policies"] == ["default"]
    expire = parse_time(data["expire_time"])
    assert expire.timestamp() == pytest.approx(clock.now + 600, abs=1e-3)
    clock.advance(100)
    assert client.auth.token.lookup_self()["data"]["ttl"] == 500


def test_renew_self_extends_and_caps_at_max_ttl(vault: VaultEmulator, clock: FakeClock) -> None:
    """renew-self sets the ttl to the increment, capped (with a warning) at the max TTL."""
    client = client_for(vault, vault.create_token(ttl=600, max_ttl=1000))
    clock.advance(500)
    renewed = client.auth.token.renew_self(increment=300)
    assert renewed["auth"]["lease_duration"] == 300 and renewed["warnings"] is None
    assert client.auth.token.lookup_self()["data"]["ttl"] == 300
    capped = client.auth.token.renew_self(increment="1h")
    assert capped["auth"]["lease_duration"] == 500
    assert capped["warnings"] == [
        'TTL of "1h" exceeded the effective max_ttl of "8m20s"; TTL value is capped accordingly'
    ]
    clock.advance(500)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.auth.token.lookup_self()


def test_non_renewable_token_is_refused(vault: VaultEmulator) -> None:
    """Renewing a non-renewable token is a 400 'lease is not renewable'."""
    client = client_for(vault, vault.create_token(renewable=False))
    with pytest.raises(hvac.exceptions.InvalidRequest) as refused:
        client.auth.token.renew_self(increment="1h")
    assert refused.value.errors == ["lease is not renewable"]


def test_expired_token_is_forbidden(vault: VaultEmulator, clock: FakeClock) -> None:
    """Past its ttl a token gets 403 permission denied everywhere, renewal included."""
    vault.kv_put(KV, "x", {"a": "b"})
    client = client_for(vault, vault.create_token(policies=["root"], ttl=60))
    assert read(client, "x")["data"]["data"] == {"a": "b"}
    clock.advance(60)
    with pytest.raises(hvac.exceptions.Forbidden) as denied:
        read(client, "x")
    assert denied.value.errors == ["permission denied"]
    with pytest.raises(hvac.exceptions.Forbidden):
        client.auth.token.renew_self()
    assert client.is_authenticated() is False


def test_revoked_and_missing_tokens_are_forbidden(vault: VaultEmulator) -> None:
    """revoke-self, revoke_token() and no token at all all end in Forbidden."""
    client = client_for(vault, vault.create_token())
    client.auth.token.revoke_self()
    with pytest.raises(hvac.exceptions.Forbidden):
        client.auth.token.lookup_self()
    other = vault.create_token()
    vault.revoke_token(other)
    with pytest.raises(hvac.exceptions.Forbidden):
        client_for(vault, other).auth.token.lookup_self()
    with pytest.raises(hvac.exceptions.Forbidden):
        read(client_for(vault), "x")


# ---------------------------------------------------------------------------- policies


def test_read_only_policy_cannot_write(vault: VaultEmulator) -> None:
    """A read-only policy reads data but writes and metadata reads are Forbidden."""
    vault.add_policy("ro", {"secret/data/app/*": ["read"]})
    vault.kv_put(KV, "app/key", {"pem": "x"})
    client = client_for(vault, vault.create_token(policies=["ro"]))
    assert read(client, "app/key")["data"]["data"] == {"pem": "x"}
    with pytest.raises(hvac.exceptions.Forbidden) as denied:
        write(client, "app/key", {"pem": "y"}, cas=1)
    assert denied.value.errors == ["1 error occurred:\n\t* permission denied\n\n"]
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.read_secret_metadata("app/key")
    with pytest.raises(hvac.exceptions.Forbidden):
        read(client, "other/key")
    assert vault.kv_get(KV, "app/key") == {"pem": "x"}


def test_create_without_update_creates_but_cannot_overwrite(vault: VaultEmulator) -> None:
    """'create' alone writes a new path; writing it again needs 'update'."""
    vault.add_policy("create-only", {"secret/data/*": ["create"]})
    client = client_for(vault, vault.create_token(policies=["create-only"]))
    assert write(client, "fresh", {"a": "1"}, cas=0)["data"]["version"] == 1
    with pytest.raises(hvac.exceptions.Forbidden):
        write(client, "fresh", {"a": "2"}, cas=1)
    assert vault.kv_versions(KV, "fresh") == {1: {"a": "1"}}


def test_segment_wildcard_and_deny(vault: VaultEmulator) -> None:
    """'+' matches one segment, a longer exact rule wins, and deny beats other policies."""
    vault.add_policy("teams", {"secret/data/+/db": ["read"], "secret/data/team-a/*": ["read"]})
    vault.add_policy("no-b", {"secret/data/team-b/db": ["deny"]})
    for path in ("team-a/db", "team-b/db", "team-c/db", "team-c/sub/db"):
        vault.kv_put(KV, path, {"p": path})
    client = client_for(vault, vault.create_token(policies=["teams", "no-b"]))
    assert read(client, "team-a/db")["data"]["data"] == {"p": "team-a/db"}
    assert read(client, "team-c/db")["data"]["data"] == {"p": "team-c/db"}
    for denied in ("team-b/db", "team-c/sub/db"):
        with pytest.raises(hvac.exceptions.Forbidden):
            read(client, denied)


# ---------------------------------------------------------------------------- seal, faults


def test_sealed_vault_is_down(vault: VaultEmulator, root: hvac.Client) -> None:
    """Sealed: requests raise VaultDown, health reports sealed with 503; unseal restores."""
    vault.kv_put(KV, "x", {"a": "b"})
    vault.seal()
    with pytest.raises(hvac.exceptions.VaultDown):
        read(root, "x")
    health = root.sys.read_health_status(method="GET")
    assert health.status_code == 503 and health.json()["sealed"] is True
    assert root.sys.is_sealed() is True
    vault.unseal()
    assert root.sys.read_health_status(method="GET")["sealed"] is False
    assert read(root, "x")["data"]["data"] == {"a": "b"}


def test_5xx_and_429_faults(vault: VaultEmulator, root: hvac.Client) -> None:
    """5xx maps to InternalServerError, 429 to RateLimitExceeded, only on matching paths."""
    vault.kv_put(KV, "x", {"a": "b"})
    vault.set_fault("5xx", path_prefix="/v1/secret/data/")
    with pytest.raises(hvac.exceptions.InternalServerError):
        read(root, "x")
    assert root.auth.token.lookup_self()["data"]["id"] == vault.root_token
    vault.clear_faults()
    vault.set_fault("429", count=2)
    for _ in range(2):
        with pytest.raises(hvac.exceptions.RateLimitExceeded) as limited:
            read(root, "x")
    assert "rate limit quota exceeded" in limited.value.errors[0]
    assert read(root, "x")["data"]["data"] == {"a": "b"}


def test_count_one_fault_clears_itself(vault: VaultEmulator, root: hvac.Client) -> None:
    """A count=1 fault hits exactly one request."""
    vault.kv_put(KV, "x", {"a": "b"})
    vault.set_fault("5xx", count=1, status=502)
    with pytest.raises(hvac.exceptions.BadGateway):
        read(root, "x")
    assert read(root, "x")["data"]["data"] == {"a": "b"}
    assert read(root, "x")["data"]["data"] == {"a": "b"}


def test_reset_fault_is_a_connection_error(vault: VaultEmulator, root: hvac.Client) -> None:
    """A reset aborts the connection: requests raises ConnectionError; the next call works."""
    vault.kv_put(KV, "x", {"a": "b"})
    vault.set_fault("reset", count=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        read(root, "x")
    assert read(root, "x")["data"]["data"] == {"a": "b"}


def test_slow_fault_times_out_a_short_timeout(vault: VaultEmulator) -> None:
    """A slow reply exceeds hvac's timeout and raises a requests Timeout."""
    vault.kv_put(KV, "x", {"a": "b"})
    client = client_for(vault, vault.root_token, timeout=0.5)
    vault.set_fault("slow", count=1, delay=5.0)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        read(client, "x")
    assert time.monotonic() - started < 3.0  # the client's 0.5s (slack for a busy machine), not 5s
    assert read(client, "x")["data"]["data"] == {"a": "b"}


def test_requests_log_records_method_and_path(vault: VaultEmulator, root: hvac.Client) -> None:
    """Every request is logged as (method, path) without the query string."""
    write(root, "logged", {"a": "b"})
    read(root, "logged", version=1)
    root.auth.token.lookup_self()
    assert vault.requests == [
        ("POST", "/v1/secret/data/logged"),
        ("GET", "/v1/secret/data/logged"),
        ("GET", "/v1/auth/token/lookup-self"),
    ]


def test_unknown_route_is_404_with_vaults_message(root: hvac.Client) -> None:
    """A path no mount serves gets Vault's 'no handler for route' error."""
    with pytest.raises(hvac.exceptions.InvalidPath) as missing:
        root.secrets.kv.v2.read_secret_version(
            "x", mount_point="kv", raise_on_deleted_version=True
        )
    assert missing.value.errors == ['no handler for route "kv/data/x". route entry not found.']


def test_namespaces_keep_data_apart(vault: VaultEmulator) -> None:
    """X-Vault-Namespace selects a separate KV space and is recorded."""
    team = client_for(vault, vault.root_token, namespace="team-a")
    write(team, "shared/name", {"owner": "team-a"})
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(client_for(vault, vault.root_token), "shared/name")
    assert read(team, "shared/name")["data"]["data"] == {"owner": "team-a"}
    assert vault.kv_get(KV, "shared/name", namespace="team-a") == {"owner": "team-a"}
    assert vault.namespaces_seen == {"team-a"}


def test_keep_alive_200_sequential_reads_are_fast(vault: VaultEmulator, root: hvac.Client) -> None:
    """200 reads on one kept-alive connection finish well under the Nagle-stall budget (8 s)."""
    vault.kv_put(KV, "hot", {"a": "b"})
    read(root, "hot")
    started = time.perf_counter()
    for _ in range(200):
        read(root, "hot")
    assert time.perf_counter() - started < 7.0


def test_command_line_serves_until_interrupted() -> None:
    """`python -m rotator.testing.vault` prints VAULT_ADDR/VAULT_TOKEN and serves hvac."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env["PYTHONPATH"] = str(REPO)
    process = subprocess.Popen(
        [sys.executable, "-m", "rotator.testing.vault", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        match = re.fullmatch(r"VAULT_ADDR=(\S+) VAULT_TOKEN=(\S+)\n", line)
        assert match, line
        client = hvac.Client(url=match.group(1), token=match.group(2))
        write(client, "cli", {"a": "b"})
        assert read(client, "cli")["data"]["data"] == {"a": "b"}
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
