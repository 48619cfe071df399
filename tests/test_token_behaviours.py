"""The platform's token behaviours (issue 16, items 7, 8, 10), over real sockets.

* session reuse: Salesforce may answer a new JWT login with the token of a still-active
  session. The emulator does so with `reuse_sessions=True`; both modes, file store and Vault.
* token lifetime: `session_timeout` fills expires_at as an estimate; a JWT access token's own
  `exp` wins; `every` at or above the timeout is a config error, above half of it a warning.
* verify before write: `verify = "userinfo" | "query"` probes a new token at its instance; a
  token that fails is not written and the stored one stays byte for byte.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests
from structlog.testing import capture_logs

from rotator.audit import pipeline as audit
from rotator.audit.events import validate
from rotator.audit.fingerprint import token_fingerprint
from rotator.clock import parse_rfc3339
from rotator.config import load_config
from rotator.daemon.metrics import ACTION_RESULT
from rotator.engine import Engine, RotationResult
from rotator.errors import EndpointUnavailable, TokenVerificationFailed
from rotator.providers.lifetime import MAX_PAYLOAD_CHARS, jwt_expiry, token_expiry
from rotator.testing.salesforce import SalesforceEndpoint
from rotator.testing.vault import VaultEmulator
from tests.conftest import CLIENT_ID, USERNAME, toml_value, write_config

pytestmark = pytest.mark.integration


class Captured(list):
    """Audit events as the renderer sees them, from `start()` on (the CLI used for `keys init`
    configures the audit pipeline anew, so capturing starts after it)."""

    def start(self) -> None:
        self._cm = capture_logs(processors=audit.shared_processors())
        self._events = self._cm.__enter__()

    def stop(self) -> None:
        self._cm.__exit__(None, None, None)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._events)


@pytest.fixture
def captured() -> Iterator[Captured]:
    events = Captured()
    yield events
    if hasattr(events, "_cm"):
        events.stop()


def events_of(events: list[dict[str, Any]], result: RotationResult) -> list[dict[str, Any]]:
    return [e for e in events if e.get("rotation_id") == result.rotation_id]


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == name]


def setup_file(run_cli: Any, endpoint: SalesforceEndpoint, tmp_path: Path, *,
               app: dict[str, Any] | None = None, **overrides: Any) -> Engine:
    path = write_config(tmp_path / "rotator.toml", login_url=endpoint.url,
                        credentials={"sf": overrides})
    init = run_cli("--config", path, "keys", "init", "sf", "--days", "30")
    assert init.code == 0, init.err
    endpoint.register_app(CLIENT_ID, init.out, users=[USERNAME], **(app or {}))
    return Engine(load_config(path))


def token_file(engine: Engine) -> Path:
    assert engine.config.source is not None
    return Path(engine.config.source).parent / "store" / "sf" / "token.json"


def stored(engine: Engine) -> dict[str, Any]:
    record = engine.stores["local"].read("sf/token")
    assert record is not None
    return record.data


def userinfo(endpoint: SalesforceEndpoint, token: str) -> int:
    """Use the token the way a consumer does (over the socket)."""
    reply = requests.get(f"{endpoint.url}/services/oauth2/userinfo",
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return reply.status_code


# ---------------------------------------------------------------------------- 7. session reuse


def test_without_reuse_every_rotation_writes_a_new_token(run_cli, endpoint, tmp_path, captured) -> None:
    engine = setup_file(run_cli, endpoint, tmp_path)
    captured.start()
    first = engine.rotate("sf")
    token_one = stored(engine)["access_token"]
    second = engine.rotate("sf", force=True)
    assert (first.action, second.action) == ("rotated", "rotated"), second.error
    assert stored(engine)["access_token"] != token_one
    events = events_of(captured, second)
    assert len(named(events, "token.written")) == 1 and named(events, "token.reused") == []
    assert "reused" not in named(events, "rotation.succeeded")[0]


def test_a_reused_session_is_recorded_as_reused_not_as_a_new_token(
    run_cli, endpoint, tmp_path, captured
) -> None:
    endpoint.reuse_sessions = True
    engine = setup_file(run_cli, endpoint, tmp_path)
    captured.start()
    first = engine.rotate("sf")
    assert first.action == "rotated", first.error
    before = stored(engine)
    second = engine.rotate("sf", force=True)
    assert second.ok and second.action == "reused", second.error
    assert endpoint.issued == [before["access_token"]] * 2  # the endpoint really reused it
    after = stored(engine)
    # the same token, never discarded or revoked: a consumer holding it carries on
    assert after["access_token"] == before["access_token"]
    assert userinfo(endpoint, after["access_token"]) == 200
    # the record follows the session the login extended: newer issued_at, this rotation's id
    assert parse_rfc3339(after["issued_at"]) >= parse_rfc3339(before["issued_at"])
    assert after["rotation_id"] == second.rotation_id and second.token_version != first.token_version

    events = events_of(captured, second)
    assert named(events, "token.written") == []  # the audit trail shows no "new" token
    (reused,) = named(events, "token.reused")
    (written,) = named(events_of(captured, first), "token.written")
    assert reused["token_fingerprint"] == written["token_fingerprint"] \
        == token_fingerprint(before["access_token"])
    assert reused["previous_version"] == first.token_version and reused["version"] == second.token_version
    (succeeded,) = named(events, "rotation.succeeded")
    assert succeeded["reused"] is True and succeeded["outcome"] == "success"
    assert [p for e in captured for p in validate(e)] == []

    # for scheduling it is a fresh rotation: nothing is due until `every` has passed again
    third = engine.rotate("sf")
    assert third.action == "skipped", third
    assert len(endpoint.issued) == 2
    assert ACTION_RESULT["reused"] == "success"  # /metrics counts it as a successful run


def test_reuse_ends_with_the_session(run_cli, endpoint, tmp_path) -> None:
    """Once the session is gone (revoked here), the next login is a new token, written as such."""
    endpoint.reuse_sessions = True
    engine = setup_file(run_cli, endpoint, tmp_path)
    engine.rotate("sf")
    old = stored(engine)["access_token"]
    endpoint.revoke(old)
    result = engine.rotate("sf", force=True)
    assert result.action == "rotated", result.error
    assert stored(engine)["access_token"] != old


@pytest.mark.parametrize("reuse", [False, True])
def test_reuse_on_and_off_with_vault(reuse: bool, endpoint, rsa_keys, tmp_path, captured) -> None:
    endpoint.reuse_sessions = reuse
    with VaultEmulator() as vault:
        token_path = tmp_path / "vault-token"
        token_path.write_text(vault.root_token + "\n")
        stores = "\n".join([
            "[stores.vault]", 'type = "vault"', f"url = {toml_value(vault.url)}", 'timeout = "5s"',
            "[stores.vault.auth]", 'method = "token"', f"token_file = {toml_value(str(token_path))}",
        ])
        path = write_config(tmp_path / "rotator.toml", login_url=endpoint.url, stores=stores,
                            credentials={"sf": {"key": "vault:sf/key", "token": "vault:sf/token"}})
        vault.kv_put("secret", "sf/key", {"private_key": rsa_keys[0].key_pem,
                                          "certificate": rsa_keys[0].cert_pem})
        endpoint.register_app(CLIENT_ID, rsa_keys[0].cert_pem, users=[USERNAME])
        engine = Engine(load_config(path))
        captured.start()
        first = engine.rotate("sf")
        second = engine.rotate("sf", force=True)
        assert first.action == "rotated" and first.token_version == "1", first.error
        assert second.action == ("reused" if reuse else "rotated"), second.error
        assert second.token_version == "2"
        client = hvac.Client(url=vault.url, token=vault.root_token)
        tokens = [client.secrets.kv.v2.read_secret_version(
            path="sf/token", mount_point="secret", version=v, raise_on_deleted_version=True,
        )["data"]["data"]["access_token"] for v in (1, 2)]
        assert (tokens[0] == tokens[1]) is reuse
        assert userinfo(endpoint, tokens[1]) == 200
        events = events_of(captured, second)
        assert len(named(events, "token.reused" if reuse else "token.written")) == 1
        assert named(events, "token.written" if reuse else "token.reused") == []


def test_token_comparison_is_exact() -> None:
    from rotator.engine import _same_token
    from rotator.records import TokenRecord

    record = TokenRecord("00Dabc!token", None, "Bearer", None, None, datetime.now(UTC), None, "sf", "")
    assert _same_token(record, "00Dabc!token")
    assert not _same_token(record, "00Dabc!tokeN")
    assert not _same_token(record, "00Dabc!token ")
    assert not _same_token(None, "00Dabc!token")


# ---------------------------------------------------------------------------- 8. token lifetime


def test_session_timeout_fills_expires_at_as_an_estimate(run_cli, endpoint, tmp_path, captured) -> None:
    engine = setup_file(run_cli, endpoint, tmp_path, session_timeout="2h", every="30m")
    captured.start()
    result = engine.rotate("sf")
    assert result.ok, result.error
    data = stored(engine)
    issued, expires = parse_rfc3339(data["issued_at"]), parse_rfc3339(data["expires_at"])
    assert expires - issued == timedelta(hours=2)
    (written,) = named(events_of(captured, result), "token.written")
    assert abs(parse_rfc3339(written["expires_at"]) - expires) < timedelta(seconds=1)  # record: whole s


def test_without_session_timeout_expires_at_stays_unknown(run_cli, endpoint, tmp_path) -> None:
    engine = setup_file(run_cli, endpoint, tmp_path)
    engine.rotate("sf")
    assert stored(engine)["expires_at"] is None


def test_a_jwt_access_token_gives_its_own_exp_which_wins(run_cli, endpoint, tmp_path) -> None:
    """External Client Apps may issue JWT access tokens: their exp (10 min here) beats the estimate."""
    engine = setup_file(run_cli, endpoint, tmp_path, session_timeout="2h", every="30m",
                        app={"jwt_access_tokens": True, "session_timeout": 600})
    assert engine.rotate("sf").ok
    data = stored(engine)
    payload = data["access_token"].split(".")[1]
    exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
    assert parse_rfc3339(data["expires_at"]) == datetime.fromtimestamp(exp, tz=UTC)
    assert parse_rfc3339(data["expires_at"]) - parse_rfc3339(data["issued_at"]) < timedelta(minutes=11)


def _jwt(payload: Any, *, raw: bytes | None = None) -> str:
    body = raw if raw is not None else json.dumps(payload).encode()
    segment = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    return f"eyJhbGciOiJSUzI1NiJ9.{segment}.c2ln"


def test_jwt_expiry_reads_only_a_sane_integer_exp() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    at = int(now.timestamp())
    assert jwt_expiry(_jwt({"exp": at + 600}), issued_at=now) == now + timedelta(minutes=10)
    hostile = [
        _jwt({"exp": at + 600.5}), _jwt({"exp": str(at + 600)}), _jwt({"exp": True}),
        _jwt({"exp": at - 3600}),                       # before issue
        _jwt({"exp": at + 8 * 86400}),                  # longer than any session
        _jwt({"exp": 10**30}), _jwt({"exp": -(10**30)}),
        _jwt([at + 600]), _jwt(None, raw=b"\xff\xfe not json"), _jwt({"nbf": at}),
        _jwt({"exp": at + 600, "pad": "x" * MAX_PAYLOAD_CHARS}),  # payload too large to decode
        "00Dxx0000001gPL!AQ4AQFakeOpaqueSessionId", "a.b", "a..c", "a.!!!.c",
        _jwt({"exp": at + 600}) + ".extra",
    ]
    for token in hostile:
        assert jwt_expiry(token, issued_at=now) is None, token[:60]
    # an unreadable JWT falls back to the estimate, as an opaque token does
    fallback = token_expiry(_jwt({"exp": "soon"}), issued_at=now, session_timeout=7200)
    assert fallback == now + timedelta(hours=2)
    assert token_expiry("opaque", issued_at=now, session_timeout=None) is None


def test_every_at_or_above_session_timeout_is_a_config_error(run_cli, endpoint, tmp_path) -> None:
    for every in ("2h", "3h"):
        path = write_config(tmp_path / "rotator.toml", login_url=endpoint.url,
                            credentials={"sf": {"every": every, "session_timeout": "2h"}})
        result = run_cli("--config", path, "check")
        assert result.code == 2, result
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.err
        assert "credentials.sf" in lines[0] and "every" in lines[0] and "session_timeout" in lines[0]


def test_session_timeout_is_refused_for_generic_servers(run_cli, endpoint, tmp_path) -> None:
    path = write_config(tmp_path / "rotator.toml", login_url=endpoint.url, credentials={"sf": {
        "provider": "jwt-bearer", "token_url": endpoint.url + "/services/oauth2/token",
        "session_timeout": "2h", "username": None}})
    result = run_cli("--config", path, "check")
    assert result.code == 2 and "session_timeout" in result.err, result


def test_check_warns_when_every_is_more_than_half_the_session_timeout(run_cli, endpoint, tmp_path) -> None:
    for every, warned in (("61m", True), ("1h", False), ("30m", False)):
        path = write_config(tmp_path / "rotator.toml", login_url=endpoint.url,
                            credentials={"sf": {"every": every, "session_timeout": "2h"}})
        result = run_cli("--config", path, "check")
        warning = [line for line in result.out.splitlines()
                   if line.startswith("warning:") and "session_timeout" in line]
        assert bool(warning) is warned, result.out
        if warned:
            assert "credentials.sf.every" in warning[0] and "every <= 1h" in warning[0]


# ---------------------------------------------------------------------------- 10. verify before write


@pytest.mark.parametrize("probe", ["userinfo", "query"])
def test_verify_probes_the_new_token_before_writing_it(probe, run_cli, endpoint, tmp_path, captured) -> None:
    engine = setup_file(run_cli, endpoint, tmp_path, verify=probe)
    captured.start()
    api_before = endpoint.api_requests
    result = engine.rotate("sf")
    assert result.action == "rotated", result.error
    events = events_of(captured, result)
    names = [e["event"] for e in events]
    assert names.index("token.verified") < names.index("token.written")
    (verified,) = named(events, "token.verified")
    assert verified["probe"] == probe and verified["status"] == 200
    assert (endpoint.api_requests > api_before) is (probe == "query")  # the query went to the REST API
    assert [p for e in events for p in validate(e)] == []


@pytest.mark.parametrize("probe", ["userinfo", "query"])
def test_a_token_failing_its_probe_is_not_written(probe, run_cli, endpoint, tmp_path, captured) -> None:
    engine = setup_file(run_cli, endpoint, tmp_path, verify=probe)
    captured.start()
    assert engine.rotate("sf").ok
    before = token_file(engine).read_bytes()

    # the app's policy changed: the next token is dead on arrival (revoked before the probe)
    def revoke_new(name: str, step: str) -> None:
        if step == "exchanged":
            endpoint.revoke(endpoint.issued[-1])

    engine.on_step = revoke_new
    result = engine.rotate("sf", force=True)
    assert not result.ok and isinstance(result.error, TokenVerificationFailed)
    assert not result.error.retryable
    assert token_file(engine).read_bytes() == before  # the old token stays, byte for byte
    assert userinfo(endpoint, json.loads(before)["access_token"]) == 200
    events = events_of(captured, result)
    assert named(events, "token.written") == [] and named(events, "token.reused") == []
    (failed,) = named(events, "token.verification_failed")
    assert failed["probe"] == probe and failed["status"] == 401
    assert failed["log_level"] == "warning"  # the rotation.failed line that follows is the error
    assert failed["error_code"] == "INVALID_SESSION_ID"
    (rotation,) = named(events, "rotation.failed")
    assert rotation["error_class"] == "TokenVerificationFailed" and "HTTP 401" in rotation["diagnosis"]
    assert [p for e in events for p in validate(e)] == []


def test_a_probe_the_instance_cannot_answer_is_retryable_and_writes_nothing(
    run_cli, endpoint, tmp_path
) -> None:
    engine = setup_file(run_cli, endpoint, tmp_path, verify="query")
    assert engine.rotate("sf").ok
    before = token_file(engine).read_bytes()
    endpoint.set_fault("5xx", target="rest", status=503)
    result = engine.rotate("sf", force=True)
    assert isinstance(result.error, EndpointUnavailable) and result.error.retryable, result.error
    assert token_file(engine).read_bytes() == before


def test_a_slow_probe_is_cut_at_the_credential_timeout(run_cli, endpoint, tmp_path) -> None:
    engine = setup_file(run_cli, endpoint, tmp_path, verify="query", timeout="1s")
    assert engine.rotate("sf").ok
    before = token_file(engine).read_bytes()
    endpoint.set_fault("slow", target="rest", delay=30)
    started = time.monotonic()
    result = engine.rotate("sf", force=True)
    assert isinstance(result.error, EndpointUnavailable), result.error
    assert time.monotonic() - started < 15  # bounded by timeout, not by the 30 s stall
    assert token_file(engine).read_bytes() == before
    endpoint.clear_faults()


def test_verify_is_off_by_default_and_salesforce_only(run_cli, endpoint, tmp_path, captured) -> None:
    engine = setup_file(run_cli, endpoint, tmp_path)
    captured.start()
    result = engine.rotate("sf")
    assert named(events_of(captured, result), "token.verified") == []
    path = write_config(tmp_path / "generic.toml", login_url=endpoint.url, credentials={"sf": {
        "provider": "jwt-bearer", "token_url": endpoint.url + "/services/oauth2/token",
        "verify": "userinfo", "username": None}})
    refused = run_cli("--config", path, "check")
    assert refused.code == 2 and "verify" in refused.err, refused


def test_the_daemon_counts_a_reused_token_as_a_fresh_rotation(run_cli, tmp_path, secret_guard) -> None:
    """Scheduling: after a reuse the credential is fresh (next run `every` later, also after a
    restart), /readyz stays ready, /metrics counts a success."""
    from rotator.daemon.metrics import Metrics
    from rotator.daemon.scheduling import Rotations

    now = [1_900_000_000.0]
    with SalesforceEndpoint(reuse_sessions=True, clock=lambda: now[0]) as endpoint:
        secret_guard.endpoints.append(endpoint)
        config = setup_file(run_cli, endpoint, tmp_path).config
        metrics = Metrics(process=False)
        rotations = Rotations(metrics, workers=1, clock=lambda: now[0])
        engine = Engine(config, clock=lambda: now[0])
        rotations.use(engine)
        try:
            assert rotations.add("sf").timestamp() == now[0]  # no token yet: at once
            rotations._run("sf")
            assert rotations.snapshot()["sf"]["last_result"] == "rotated"
            now[0] += 1800  # `every` later: due, and the session is still active
            rotations._run("sf")
            state = rotations.snapshot()["sf"]
            assert state["last_result"] == "reused" and state["consecutive_failures"] == 0
            assert len(endpoint.issued) == 2 and endpoint.issued[0] == endpoint.issued[1]
            assert rotations.readiness()[0]
            # a restart (or reload) does not log in again at once: the token is fresh
            first = rotations.add("sf").timestamp()
            assert first >= now[0] + 1800 * 0.9 - 1
            samples = {(s.labels.get("result"), s.name): s.value
                       for family in metrics.registry.collect()
                       for s in family.samples if s.labels.get("credential") == "sf"}
            assert samples[("success", "rotator_rotation_total")] == 2
            assert samples[("failure", "rotator_rotation_total")] == 0
        finally:
            engine.stores.close()
