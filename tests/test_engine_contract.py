"""What the engine promises the store, the audit trail and its caller, checked field by field.

Each test runs a real rotation (the Salesforce-compatible endpoint on loopback, a file store,
or the Vault emulator) and asserts exactly what the engine passed on: the compare-and-set
version, the idempotency key (`request_id` = the rotation id), the write's metadata labels,
the audit events' fields, and the `RotationResult`. The only wrapper is `RecordingStore`,
which keeps each write's arguments and then hands them to the real store unchanged.
Found by mutation testing (docs/mutation.md): these were the engine's blind spots.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import hvac
import pytest
from structlog.testing import capture_logs

from rotator.audit import pipeline as audit
from rotator.audit.events import validate
from rotator.audit.fingerprint import token_fingerprint
from rotator.config import Config, load_config
from rotator.engine import STEPS, Engine, RotationResult, audit_fingerprint
from rotator.errors import ConfigError, StoreConflict
from rotator.keys.crypto import cert_info, load_certificate
from rotator.policy import Due
from rotator.records import TokenRecord
from rotator.stores import Record, SecretStore, StoreSet, WriteResult
from rotator.testing.salesforce import SalesforceEndpoint
from rotator.testing.vault import VaultEmulator
from tests.conftest import CLIENT_ID, USERNAME, toml_value, write_config

pytestmark = pytest.mark.integration

DAY = 86400.0
TOKEN = "sf/token"
ROTATION_ID = re.compile(r"[0-9a-f]{32}")


# ---------------------------------------------------------------------------- recording store


@dataclass(frozen=True)
class Write:
    path: str
    data: dict[str, Any]
    kwargs: dict[str, Any]


class RecordingStore:
    """A real store that remembers every write's arguments, then passes them on unchanged."""

    def __init__(self, inner: SecretStore) -> None:
        self.inner = inner
        self.name = inner.name
        self.writes: list[Write] = []

    def write(self, path: str, data: dict[str, Any], **kwargs: Any) -> WriteResult:
        self.writes.append(Write(path, json.loads(json.dumps(data)), dict(kwargs)))
        return self.inner.write(path, data, **kwargs)

    def token_writes(self) -> list[Write]:
        return [w for w in self.writes if w.path.endswith("/token")]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RecordingStores(StoreSet):
    """The process's stores, each wrapped in a RecordingStore."""

    def __getitem__(self, name: str) -> Any:
        store = super().__getitem__(name)
        if not isinstance(store, RecordingStore):
            store = self._stores[name] = RecordingStore(store)
        return store


# ---------------------------------------------------------------------------- fixtures


@dataclass
class Setup:
    config: Config
    path: Path  # the config file
    endpoint: SalesforceEndpoint
    key_sha256: str
    stores: RecordingStores
    steps: list[tuple[str, str]]
    on_step: dict[str, Callable[[], None]]  # step name -> action run when the engine gets there

    @property
    def store(self) -> RecordingStore:
        return self.stores["local"]

    def engine(self, clock: Callable[[], float] = time.time) -> Engine:
        def hook(name: str, step: str) -> None:
            self.steps.append((name, step))
            action = self.on_step.get(step)
            if action is not None:
                action()

        return Engine(self.config, stores=self.stores, clock=clock, on_step=hook)

    def token_file(self) -> Path:
        return self.path.parent / "store" / "sf" / "token.json"

    def stored(self) -> Record:
        record = self.store.inner.read(TOKEN)
        assert record is not None
        return record


def make_setup(run_cli: Any, endpoint: SalesforceEndpoint, tmp_path: Path, **overrides: Any) -> Setup:
    path = write_config(tmp_path / "rotator.toml", login_url=endpoint.url,
                        credentials={"sf": overrides})
    init = run_cli("--config", path, "keys", "init", "sf", "--days", "30")
    assert init.code == 0, init.err
    endpoint.register_app(CLIENT_ID, init.out, users=[USERNAME])
    config = load_config(path)
    sha = cert_info(load_certificate(init.out)).sha256
    return Setup(config, path, endpoint, sha, RecordingStores(config.stores), [], {})


@pytest.fixture
def setup(run_cli: Any, endpoint: SalesforceEndpoint, tmp_path: Path) -> Setup:
    return make_setup(run_cli, endpoint, tmp_path)


@pytest.fixture
def captured() -> Iterator[list[dict[str, Any]]]:
    """Every audit event as the renderer sees it (context vars merged: rotation_id, credential)."""
    with capture_logs(processors=audit.shared_processors()) as events:
        yield events


def of(events: list[dict[str, Any]], result: RotationResult) -> list[dict[str, Any]]:
    """The events of one rotation, in order."""
    return [e for e in events if e.get("rotation_id") == result.rotation_id]


def one(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [e for e in events if e["event"] == name]
    assert len(found) == 1, [e["event"] for e in events]
    return found[0]


def file_version(raw: bytes, root: Path) -> str:
    """The file store's version of a record: HMAC-SHA256 of its bytes under the store's key."""
    key = (root / ".version-key").read_bytes()
    return hmac.new(key, raw, hashlib.sha256).hexdigest()[:20]


def assert_rotated(result: RotationResult, setup: Setup, started_before: float) -> None:
    assert result.ok and result.action == "rotated", result.error
    assert result.error is None and result.reason is None
    assert result.name == "sf"
    assert ROTATION_ID.fullmatch(result.rotation_id or "")
    assert result.key_sha256 == setup.key_sha256
    assert result.token_version == setup.stored().version
    assert 0 < result.duration < time.monotonic() - started_before + 0.001


# ---------------------------------------------------------------------------- a rotation's write


def test_first_rotation_writes_with_cas_none_and_the_rotation_id(setup: Setup, captured) -> None:
    """No token yet: CAS 'must not exist', request_id = rotation id, labels, audit lines, result."""
    started = time.monotonic()
    result = setup.engine().rotate("sf")
    assert_rotated(result, setup, started)
    rid = result.rotation_id
    assert setup.steps == [("sf", step) for step in STEPS]

    (write,) = setup.store.token_writes()
    assert write.path == TOKEN
    assert write.kwargs == {
        "expected_version": None,
        "request_id": rid,
        "metadata": {"credential": "sf", "key_sha256": setup.key_sha256, "rotation_id": rid,
                     "written_by": "rotator"},
    }
    stored = setup.stored().data
    assert write.data == stored
    assert stored["rotation_id"] == rid and stored["key_sha256"] == setup.key_sha256
    assert stored["credential"] == "sf" and stored["access_token"] == setup.endpoint.issued[-1]
    assert stored["instance_url"] == setup.endpoint.url and stored["token_type"] == "Bearer"
    assert stored["scope"] == "api" and stored["id"].startswith(setup.endpoint.url)

    events = of(captured, result)
    names = [e["event"] for e in events]
    assert names.index("rotation.started") < names.index("token.written") \
        < names.index("rotation.succeeded") == len(names) - 1
    started_event = one(events, "rotation.started")
    assert started_event["force"] is False and started_event["dry_run"] is False
    assert started_event["credential"] == "sf"
    assert one(events, "key.loaded")["role"] == "current"  # the first load in this process
    written = one(events, "token.written")
    assert {k: written[k] for k in ("store", "path", "version", "previous_version", "key_sha256",
                                    "token_fingerprint", "expires_at", "credential")} == {
        "store": "local", "path": TOKEN, "version": result.token_version, "previous_version": None,
        "key_sha256": setup.key_sha256, "token_fingerprint": token_fingerprint(stored["access_token"]),
        "expires_at": None, "credential": "sf",
    }
    assert written["token_fingerprint"] == audit_fingerprint(stored["access_token"])
    succeeded = one(events, "rotation.succeeded")
    assert succeeded["outcome"] == "success" and succeeded["level"] == "info"
    assert succeeded["key_sha256"] == setup.key_sha256 and succeeded["version"] == result.token_version
    assert [p for e in events for p in validate(e)] == []


def test_next_rotation_writes_against_the_version_it_read(setup: Setup, captured) -> None:
    """A forced rotation: CAS on the stored version, a new rotation id, previous_version audited."""
    engine = setup.engine()
    first = engine.rotate("sf")
    assert first.ok, first.error
    before = setup.token_file().read_bytes()
    started = time.monotonic()
    second = engine.rotate("sf", force=True)
    assert_rotated(second, setup, started)
    assert second.rotation_id != first.rotation_id
    assert second.token_version != first.token_version

    last = setup.store.token_writes()[-1]
    root = setup.path.parent / "store"
    assert last.kwargs["expected_version"] == file_version(before, root) == first.token_version
    assert last.kwargs["request_id"] == second.rotation_id
    assert last.kwargs["metadata"]["rotation_id"] == second.rotation_id
    assert setup.stored().data["rotation_id"] == second.rotation_id

    events = of(captured, second)
    assert one(events, "rotation.started")["force"] is True
    written = one(events, "token.written")
    assert written["previous_version"] == first.token_version
    assert written["version"] == second.token_version == file_version(
        setup.token_file().read_bytes(), setup.path.parent / "store")


def test_fresh_token_is_skipped_unless_forced(setup: Setup, captured) -> None:
    """A fresh token: no mint, no request, no write, the reason said; --force rotates anyway."""
    engine = setup.engine()
    assert engine.rotate("sf").ok
    before = setup.token_file().read_bytes()
    requests, writes = setup.endpoint.token_requests, len(setup.store.writes)
    setup.steps.clear()

    skipped = engine.rotate("sf")
    assert skipped.ok and skipped.action == "skipped" and skipped.name == "sf"
    assert skipped.reason is not None and "fresh until" in skipped.reason
    assert skipped.token_version is None and skipped.key_sha256 is None and skipped.error is None
    assert ROTATION_ID.fullmatch(skipped.rotation_id or "")
    assert setup.steps == [("sf", "start"), ("sf", "key-loaded")]
    assert setup.endpoint.token_requests == requests and len(setup.store.writes) == writes
    assert setup.token_file().read_bytes() == before
    event = one(of(captured, skipped), "rotation.skipped")
    assert event["reason"] == skipped.reason and event["outcome"] == "skipped"

    forced = engine.rotate("sf", force=True)
    assert forced.action == "rotated" and setup.endpoint.token_requests == requests + 1
    assert setup.token_file().read_bytes() != before


def test_token_from_another_key_is_replaced_even_when_fresh(setup: Setup) -> None:
    """The due check gets the current key's fingerprint: a token minted with another key is renewed."""
    engine = setup.engine()
    assert engine.rotate("sf").ok
    data = json.loads(setup.token_file().read_text())
    data["key_sha256"] = "0" * 64
    setup.token_file().write_text(json.dumps(data))
    result = engine.rotate("sf")
    assert result.action == "rotated", result
    assert setup.stored().data["key_sha256"] == setup.key_sha256


def test_dry_run_mints_but_never_exchanges_or_writes(setup: Setup, captured) -> None:
    """--dry-run, with and without a fresh token: key loaded, assertion minted, then it stops."""
    engine = setup.engine()
    for round_ in ("no token", "fresh token"):
        requests, writes = setup.endpoint.token_requests, len(setup.store.writes)
        setup.steps.clear()
        result = engine.rotate("sf", dry_run=True)
        assert result.ok and result.action == "dry-run" and result.name == "sf", (round_, result)
        assert result.reason == "dry run: minted, not exchanged"
        assert result.key_sha256 == setup.key_sha256 and result.token_version is None
        assert ROTATION_ID.fullmatch(result.rotation_id or "")
        assert setup.steps == [("sf", "start"), ("sf", "key-loaded"), ("sf", "minted")]
        assert setup.endpoint.token_requests == requests
        assert len(setup.store.writes) == writes
        events = of(captured, result)
        assert one(events, "rotation.started")["dry_run"] is True
        skipped = one(events, "rotation.skipped")
        assert skipped["reason"] == "dry run" and skipped["outcome"] == "skipped"
        if round_ == "no token":
            assert not setup.token_file().exists()
            assert engine.rotate("sf").ok


def test_dry_run_leaves_the_key_record_alone_in_the_renewal_window(setup: Setup) -> None:
    """A dry run 25 days into a 30-day certificate stages no key and records no expiry warning."""
    key_file = setup.path.parent / "store" / "sf" / "key.json"
    before = key_file.read_bytes()
    result = setup.engine(clock=lambda: time.time() + 25 * DAY).rotate("sf", dry_run=True)
    assert result.action == "dry-run", result
    assert key_file.read_bytes() == before
    assert [w.path for w in setup.store.writes] == []


# ---------------------------------------------------------------------------- races


def _another_writer(setup: Setup, *, issued_at: str | None, access_token: str) -> Callable[[], None]:
    """At 'exchanged', a second replica stores its own token first (CAS on what it read)."""

    def write() -> None:
        current = setup.store.inner.read(TOKEN)
        data = dict(current.data) if current else {}
        data.update(access_token=access_token, rotation_id="f" * 32)
        if issued_at is not None:
            data["issued_at"] = issued_at
        setup.store.inner.write(TOKEN, data, expected_version=current.version if current else None)

    return write


def test_another_writers_fresh_token_wins_the_race(setup: Setup, captured) -> None:
    """CAS fails because a replica stored a fresh token meanwhile: superseded, theirs kept."""
    engine = setup.engine()
    first = engine.rotate("sf")
    assert first.ok
    setup.steps.clear()
    setup.on_step["exchanged"] = _another_writer(setup, issued_at=None,
                                                 access_token="theirs-" + "x" * 40)
    result = engine.rotate("sf", force=True)
    assert result.ok and result.action == "superseded" and result.name == "sf", result
    assert result.reason == "another writer won the race" and result.error is None
    assert result.token_version is None and ROTATION_ID.fullmatch(result.rotation_id or "")
    theirs = setup.stored().data
    assert theirs["access_token"] == "theirs-" + "x" * 40 and theirs["rotation_id"] == "f" * 32
    attempt = setup.store.token_writes()[-1]
    assert attempt.kwargs["expected_version"] == first.token_version
    assert attempt.kwargs["request_id"] == result.rotation_id
    events = of(captured, result)
    event = one(events, "rotation.superseded")
    assert event["outcome"] == "skipped"
    assert event["reason"] == "another writer stored a fresh token first"
    assert not {"token.written", "rotation.succeeded", "rotation.failed"} & {e["event"] for e in events}
    assert [step for _, step in setup.steps] == list(STEPS[:-1])  # no "written"


def test_another_writers_stale_token_fails_the_rotation(setup: Setup, captured) -> None:
    """CAS fails and what the other writer stored is already due: the conflict is the result."""
    engine = setup.engine()
    assert engine.rotate("sf").ok
    setup.on_step["exchanged"] = _another_writer(setup, issued_at="2020-01-01T00:00:00Z",
                                                 access_token="stale-" + "y" * 40)
    started = time.monotonic()
    result = engine.rotate("sf", force=True)
    assert not result.ok and result.action == "failed"
    assert isinstance(result.error, StoreConflict)
    assert ROTATION_ID.fullmatch(result.rotation_id or "")
    assert 0 < result.duration < time.monotonic() - started + 0.001
    assert setup.stored().data["access_token"] == "stale-" + "y" * 40
    assert result.to_json() == {"name": "sf", "ok": False, "action": "failed",
                                "error": result.error.diagnostics()}
    failed = one(of(captured, result), "rotation.failed")
    assert failed["level"] == "error" and failed["outcome"] == "failure"
    assert failed["error_class"] == "StoreConflict" == result.error.kind
    assert failed["diagnosis"] == result.error.diagnostics()
    assert failed["retryable"] is result.error.retryable
    assert 0 <= failed["duration_s"] < 60
    assert validate(failed) == []


def test_failure_before_the_rotation_starts_is_audited_with_its_duration(setup: Setup, captured) -> None:
    """An unknown credential fails before rotation.started: the failure still has duration_s."""
    result = setup.engine().rotate("nope")
    assert not result.ok and result.action == "failed" and result.name == "nope"
    assert isinstance(result.error, ConfigError)
    assert result.to_json()["error"] == result.error.diagnostics()
    failed = one(of(captured, result), "rotation.failed")
    assert failed["credential"] == "nope" and failed["error_class"] == "ConfigError"
    assert failed["retryable"] is False
    assert isinstance(failed["duration_s"], float) and 0 <= failed["duration_s"] < 60
    assert validate(failed) == []


# ---------------------------------------------------------------------------- unreadable tokens


@pytest.mark.parametrize("content", ["{not json", '{"access_token": 5, "instance_url": []}'],
                         ids=["not-json", "not-a-token-record"])
def test_unreadable_token_is_replaced_with_cas_on_its_version(setup: Setup, captured,
                                                              content: str) -> None:
    """A broken token record is audited, reads as 'no token', and is replaced by CAS on its version."""
    path = setup.token_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(0o600)
    broken = file_version(path.read_bytes(), setup.path.parent / "store")
    engine = setup.engine()
    with capture_logs(processors=audit.shared_processors()) as outside:  # no rotation context bound
        token, record = engine.read_token("sf")
    assert token is None and record is not None and record.version == broken
    assert one(outside, "token.unreadable")["credential"] == "sf"

    result = engine.rotate("sf")
    assert result.action == "rotated", result
    assert setup.store.token_writes()[-1].kwargs["expected_version"] == broken
    events = of(captured, result)
    unreadable = one(events, "token.unreadable")
    assert unreadable["credential"] == "sf" and unreadable["level"] == "warning"
    assert "sf/token" in unreadable["diagnosis"]
    assert one(events, "token.written")["previous_version"] == broken
    assert validate(unreadable) == []


def test_read_token_returns_the_record_and_its_raw_version(setup: Setup) -> None:
    """Engine.read_token: (None, None) before the first write, then the parsed record."""
    engine = setup.engine()
    assert engine.read_token("sf") == (None, None)
    result = engine.rotate("sf")
    token, record = engine.read_token("sf")
    assert isinstance(token, TokenRecord) and record is not None
    assert record.version == result.token_version
    assert token.rotation_id == result.rotation_id and token.credential == "sf"


def test_provider_is_built_once_per_credential(setup: Setup) -> None:
    """The engine keeps one provider per credential (its HTTP session is reused)."""
    engine = setup.engine()
    assert engine.provider("sf") is engine.provider("sf")
    assert engine.resolve("sf").provider is engine.provider("sf")
    assert engine.resolve("sf").name == "sf"


# ---------------------------------------------------------------------------- token lifetime


class ExpiringEndpoint(SalesforceEndpoint):
    """The Salesforce-compatible endpoint, answering like a generic RFC 7523 server with expires_in."""

    def _issue(self, client_id: str, username: str, now: float) -> dict[str, Any]:
        return {**super()._issue(client_id, username, now), "expires_in": 900}


def test_expiry_from_the_endpoint_reaches_the_record_and_the_audit(run_cli, tmp_path: Path,
                                                                   secret_guard) -> None:
    """expires_in -> the record's expires_at -> token.written's expires_at (ISO 8601)."""
    with ExpiringEndpoint() as endpoint:
        secret_guard.endpoints.append(endpoint)
        setup = make_setup(run_cli, endpoint, tmp_path, provider="jwt-bearer", login_url=None,
                           token_url=endpoint.token_url, audience=endpoint.url)
        with capture_logs(processors=audit.shared_processors()) as captured:  # after the CLI ran
            result = setup.engine().rotate("sf")
        assert result.action == "rotated", result
        token = TokenRecord.from_data(setup.stored().data, where="x")
        assert token.expires_at is not None
        assert 800 < token.expires_at.timestamp() - time.time() <= 900
        written = one(of(captured, result), "token.written")
        # the record keeps whole seconds; the audit line has the endpoint's exact instant
        audited = datetime.fromisoformat(written["expires_at"])
        assert audited.tzinfo is not None and audited.replace(microsecond=0) == token.expires_at


# ---------------------------------------------------------------------------- Vault KV v2


def _vault_setup(vault: VaultEmulator, endpoint: SalesforceEndpoint, rsa_keys: Any,
                 tmp_path: Path) -> tuple[Config, str]:
    token_file = tmp_path / "vault-token"
    token_file.write_text(vault.root_token + "\n")
    stores = "\n".join([
        "[stores.vault]", 'type = "vault"', f"url = {toml_value(vault.url)}", 'timeout = "5s"',
        "[stores.vault.auth]", 'method = "token"', f"token_file = {toml_value(str(token_file))}",
    ])
    path = write_config(tmp_path / "rotator.toml", login_url=endpoint.url, stores=stores,
                        credentials={"sf": {"key": "vault:sf/key", "token": "vault:sf/token"}})
    vault.kv_put("secret", "sf/key", {"private_key": rsa_keys[0].key_pem,
                                      "certificate": rsa_keys[0].cert_pem})
    endpoint.register_app(CLIENT_ID, rsa_keys[0].cert_pem, users=[USERNAME])
    return load_config(path), cert_info(load_certificate(rsa_keys[0].cert_pem)).sha256


def test_vault_labels_and_deleted_version_replaced_by_cas(endpoint, rsa_keys, tmp_path: Path,
                                                          captured) -> None:
    """In Vault: custom_metadata names the rotation; a deleted current version is replaced by CAS."""
    with VaultEmulator() as vault:
        config, sha = _vault_setup(vault, endpoint, rsa_keys, tmp_path)
        engine = Engine(config)
        first = engine.rotate("sf")
        assert first.action == "rotated" and first.token_version == "1", first
        client = hvac.Client(url=vault.url, token=vault.root_token)
        meta = client.secrets.kv.v2.read_secret_metadata(path="sf/token", mount_point="secret")
        custom = meta["data"]["custom_metadata"]
        assert custom == {"credential": "sf", "key_sha256": sha, "rotation_id": first.rotation_id,
                          "written_by": "rotator", "version": "1"}

        client.secrets.kv.v2.delete_latest_version_of_secret(path="sf/token", mount_point="secret")
        assert engine.read_token("sf")[1] == Record({}, "1")
        second = engine.rotate("sf")
        assert second.action == "rotated" and second.token_version == "2", second
        events = of(captured, second)
        assert "KV version 1 is deleted" in one(events, "token.unreadable")["diagnosis"]
        written = one(events, "token.written")
        assert written["store"] == "vault" and written["version"] == "2"
        assert written["previous_version"] == "1"
        assert vault.kv_get("secret", "sf/token")["rotation_id"] == second.rotation_id
        engine.stores.close()


def test_key_record_changes_use_the_version_the_rotation_read(setup: Setup) -> None:
    """In the renewal window the rotation stages a key with CAS on the key record it loaded."""
    key_file = setup.path.parent / "store" / "sf" / "key.json"
    read = file_version(key_file.read_bytes(), setup.path.parent / "store")
    setup.engine(clock=lambda: time.time() + 25 * DAY).rotate("sf")
    key_writes = [w for w in setup.store.writes if w.path == "sf/key"]
    assert key_writes, "nothing staged 25 days into a 30-day certificate"
    assert key_writes[0].kwargs["expected_version"] == read  # first try, no lost round trip
    assert key_file.read_bytes() != key_file.with_name("key.json.prev").read_bytes()


def test_the_daemon_schedules_from_the_token_it_wrote_without_reading_it_back(setup: Setup) -> None:
    """A rotation hands back the record it stored (never in its repr); the daemon computes the
    next run from it instead of reading the token it has just written (issue 21)."""
    from rotator.daemon.metrics import Metrics
    from rotator.daemon.scheduling import Rotations

    engine = setup.engine()
    result = engine.rotate("sf", force=True)
    assert result.action == "rotated" and result.token is not None
    assert result.token.to_data() == setup.stored().data
    assert result.token.access_token not in repr(result)

    rotations = Rotations(Metrics(process=False), workers=1)
    rotations.use(engine)
    rotations.add("sf")
    reads: list[str] = []
    real = engine.read_token
    engine.read_token = lambda name: reads.append(name) or real(name)  # type: ignore[method-assign]
    with pytest.MonkeyPatch.context() as patch:  # the stored token is fresh: call it due
        patch.setattr("rotator.engine.token_due", lambda *a, **k: Due(True, "test"))
        rotations._run("sf")  # the job, as the scheduler runs it
    state = rotations.states["sf"]
    assert state.last_result == "rotated" and reads == []
    stored = TokenRecord.from_data(setup.stored().data, where="test")
    assert state.token_issued_at == stored.issued_at
