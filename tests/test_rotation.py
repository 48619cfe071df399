"""The whole path over a real socket: key -> assertion -> token endpoint -> file store -> consumer."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests

from rotator.config import load_config
from rotator.engine import Engine
from rotator.errors import EndpointUnavailable, TokenRejected
from tests.conftest import CLIENT_ID, USERNAME, write_config

ALL_DOCUMENTED_ERRORS = [
    # (how to break it, error, description, a word the diagnosis must contain)
    ("unregistered cert", "invalid_grant", "invalid assertion", "upload"),
    ("wrong audience", "invalid_grant", "audience is invalid", "login_url"),
    ("unknown user", "invalid_grant", "user hasn't approved this consumer", "pre-authorize"),
    ("unknown client", "invalid_client_id", "client identifier invalid", "consumer key"),
    ("not admin approved", "invalid_app_access", "user is not admin approved", "Permitted Users"),
    ("clock behind", "invalid_grant", "expired authorization code", "clock"),
]


def setup_credential(run_cli, endpoint, config: Path) -> str:
    """keys init + register the certificate with the endpoint (the connected-app upload)."""
    result = run_cli("--config", config, "keys", "init", "sf")
    assert result.code == 0, result.err
    endpoint.register_app(CLIENT_ID, result.out, users=[USERNAME])
    return result.out


def token_file(config: Path) -> Path:
    return config.parent / "store" / "sf" / "token.json"


def test_rotate_writes_a_working_token(run_cli, endpoint, config_path: Path) -> None:
    """rotate mints, exchanges and writes a token record a consumer can use right away."""
    setup_credential(run_cli, endpoint, config_path)
    result = run_cli("--config", config_path, "rotate", "sf")
    assert result.code == 0, result.err
    assert result.json_lines() == [{"name": "sf", "ok": True, "action": "rotated", "error": None}]
    record = json.loads(token_file(config_path).read_text())
    assert set(record) >= {"access_token", "instance_url", "token_type", "scope", "id",
                           "issued_at", "expires_at", "credential", "key_sha256"}
    assert record["token_type"] == "Bearer" and record["credential"] == "sf"
    assert record["instance_url"] == endpoint.url and record["expires_at"] is None
    assert record["issued_at"].endswith("Z")
    shown = run_cli("--config", config_path, "cert", "show", "sf", "--json").json_lines()[0]
    assert record["key_sha256"] == shown["sha256"]
    assert token_file(config_path).stat().st_mode & 0o777 == 0o600
    reply = requests.get(f"{record['instance_url']}/services/data/v62.0/query",
                         params={"q": "SELECT Id FROM Organization"},
                         headers={"Authorization": f"Bearer {record['access_token']}"}, timeout=5)
    assert reply.status_code == 200 and reply.json()["totalSize"] == 1


def test_simple_salesforce_consumer(run_cli, endpoint, config_path: Path) -> None:
    """simple-salesforce, as an application uses it, queries with the token from the store."""
    from simple_salesforce import Salesforce

    setup_credential(run_cli, endpoint, config_path)
    assert run_cli("--config", config_path, "rotate", "sf").code == 0
    field = run_cli("--config", config_path, "token", "sf", "--field", "access_token", guard=False)
    record = json.loads(token_file(config_path).read_text())
    assert field.out.strip() == record["access_token"]
    session = requests.Session()
    # simple-salesforce only speaks https; the emulator's plain http URL is rewritten by a
    # transport adapter so the client code under test is the unmodified library.
    session.mount("https://", _HttpsToHttp(endpoint.url))
    sf = Salesforce(instance_url=record["instance_url"].replace("http://", "https://"),
                    session_id=record["access_token"], session=session)
    rows = sf.query("SELECT Id, Name FROM Organization")
    assert rows["totalSize"] == 1
    assert rows["records"][0]["Name"]


class _HttpsToHttp(requests.adapters.HTTPAdapter):
    def __init__(self, http_url: str) -> None:
        super().__init__()
        self.http_url = http_url

    def send(self, request, **kwargs):  # type: ignore[override]
        request.url = request.url.replace("https://", "http://", 1)
        return super().send(request, **kwargs)


def test_second_rotate_skips_fresh_token(run_cli, endpoint, config_path: Path) -> None:
    """A fresh token is not replaced (no login) unless --force."""
    setup_credential(run_cli, endpoint, config_path)
    run_cli("--config", config_path, "rotate", "sf")
    before = token_file(config_path).read_bytes()
    skipped = run_cli("--config", config_path, "rotate", "--all").json_lines()
    assert skipped[0]["action"] == "skipped"
    assert endpoint.token_requests == 1
    assert token_file(config_path).read_bytes() == before
    forced = run_cli("--config", config_path, "rotate", "sf", "--force").json_lines()
    assert forced[0]["action"] == "rotated"
    assert endpoint.token_requests == 2
    assert token_file(config_path).read_bytes() != before
    prev = token_file(config_path).with_name("token.json.prev")
    assert prev.read_bytes() == before


def test_a_fresh_token_the_caller_wrote_itself_is_due_by_its_schedule(
    run_cli, endpoint, config_path: Path
) -> None:
    """`own` (the daemon's last rotation id): the caller's own fresh token is replaced when its
    schedule runs; a fresh token someone else wrote (another id, or none given) still skips."""
    setup_credential(run_cli, endpoint, config_path)
    engine = Engine(load_config(config_path))
    first = engine.rotate("sf")
    assert first.action == "rotated" and first.rotation_id
    assert engine.rotate("sf").action == "skipped"
    assert engine.rotate("sf", own="0" * 32).action == "skipped"  # another writer's token
    assert endpoint.token_requests == 1
    again = engine.rotate("sf", own=first.rotation_id)
    assert again.ok and again.action in ("rotated", "reused")
    assert endpoint.token_requests == 2
    stored = json.loads(token_file(config_path).read_text())
    assert stored["rotation_id"] == again.rotation_id != first.rotation_id
    assert engine.rotate("sf", own=first.rotation_id).action == "skipped"  # no longer ours


def test_dry_run_does_not_exchange(run_cli, endpoint, config_path: Path) -> None:
    """--dry-run loads and mints but never reaches the endpoint nor writes."""
    setup_credential(run_cli, endpoint, config_path)
    result = run_cli("--config", config_path, "rotate", "sf", "--dry-run")
    assert result.json_lines()[0]["action"] == "dry-run"
    assert endpoint.token_requests == 0
    assert not token_file(config_path).exists()


def _break(kind: str, endpoint, config: Path, tmp_path: Path, run_cli) -> Path:
    """Set up a credential, get one good token, then break it the way `kind` says."""
    setup_credential(run_cli, endpoint, config)
    assert run_cli("--config", config, "rotate", "sf").code == 0
    other = tmp_path / "other.toml"
    if kind == "unregistered cert":
        endpoint.upload_certificate(CLIENT_ID, run_cli("--config", write_config(
            tmp_path / "x.toml", login_url=endpoint.url, stores='[stores.local]\ntype = "file"\n'
            'path = "store-x"'), "keys", "init", "sf").out)
        return config
    overrides = {
        "wrong audience": {"audience": "https://login.example.com"},
        "unknown user": {"username": "nobody@example.com"},
        "unknown client": {"client_id": "3MVGunknown"},
    }.get(kind)
    if overrides is not None:
        return write_config(other, login_url=endpoint.url, credentials={"sf": overrides})
    if kind == "not admin approved":
        endpoint.register_app(CLIENT_ID, run_cli("--config", config, "cert", "show", "sf", "--pem").out,
                              users=[USERNAME], admin_approved=False)
        return config
    assert kind == "clock behind"
    return config


@pytest.mark.parametrize(("kind", "error", "description", "hint_word"), ALL_DOCUMENTED_ERRORS)
def test_documented_errors_keep_old_token(
    run_cli, endpoint, config_path: Path, tmp_path: Path, kind, error, description, hint_word
) -> None:
    """Each documented error: rotation fails with its diagnosis; the old token stays byte for byte."""
    config = _break(kind, endpoint, config_path, tmp_path, run_cli)
    before = token_file(config_path).read_bytes()
    if kind == "clock behind":
        engine = Engine(load_config(config), clock=lambda: time.time() - 400)
        result = engine.rotate("sf", force=True)
    else:
        cli = run_cli("--config", config, "rotate", "sf", "--force")
        assert cli.code == 1
        line = cli.json_lines()[0]
        assert line["ok"] is False and line["action"] == "failed"
        result = None
        diagnosis = line["error"]
    if result is not None:
        assert not result.ok
        assert isinstance(result.error, TokenRejected)
        diagnosis = result.error.diagnostics()
    assert error in diagnosis and description in diagnosis
    assert hint_word in diagnosis
    assert token_file(config_path).read_bytes() == before


@pytest.mark.parametrize("fault", ["5xx", "429", "html", "html200", "reset", "badjson",
                                   "missing_fields", "huge"])
def test_endpoint_faults_are_retryable_and_harmless(
    run_cli, endpoint, config_path: Path, fault: str
) -> None:
    """Server trouble is reported as retryable and never touches the stored token."""
    setup_credential(run_cli, endpoint, config_path)
    run_cli("--config", config_path, "rotate", "sf")
    before = token_file(config_path).read_bytes()
    endpoint.set_fault(fault, count=1, retry_after=7)
    engine = Engine(load_config(config_path))
    result = engine.rotate("sf", force=True)
    assert not result.ok
    assert result.error is not None and result.error.retryable, result.error
    if fault == "429":
        assert isinstance(result.error, EndpointUnavailable) and result.error.retry_after == 7
    assert token_file(config_path).read_bytes() == before
    assert engine.rotate("sf", force=True).ok  # the fault cleared: recovery
    assert token_file(config_path).read_bytes() != before


def test_slow_endpoint_times_out(run_cli, endpoint, tmp_path: Path) -> None:
    """A reply slower than the configured timeout is a retryable failure, not a hang."""
    config = write_config(tmp_path / "r.toml", login_url=endpoint.url,
                          credentials={"sf": {"timeout": "1s"}})
    setup_credential(run_cli, endpoint, config)
    endpoint.set_fault("slow", count=1, delay=10)
    started = time.monotonic()
    result = Engine(load_config(config)).rotate("sf", force=True)
    assert time.monotonic() - started < 6  # the 1s timeout plus a busy machine's slack, not 10s
    assert not result.ok and result.error is not None and result.error.retryable
    assert "no reply within 1s" in result.error.diagnostics()


def test_refused_connection_names_address(run_cli, tmp_path: Path) -> None:
    """Nothing listening: the diagnosis names the URL and says refused."""
    config = write_config(tmp_path / "r.toml", login_url="http://127.0.0.1:9")
    run_cli("--config", config, "keys", "init", "sf")
    line = run_cli("--config", config, "rotate", "sf").json_lines()[0]
    assert "http://127.0.0.1:9/services/oauth2/token" in line["error"]
    assert "refused" in line["error"]


def test_assertion_claims(run_cli, endpoint, config_path: Path) -> None:
    """`rotator jwt` prints RS256 with iss/sub/aud/exp(+iat), exp integer and <= 3 minutes ahead."""
    import jwt as pyjwt

    cert_pem = setup_credential(run_cli, endpoint, config_path)
    token = run_cli("--config", config_path, "jwt", "sf", guard=False).out.strip()
    header = pyjwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "typ": "JWT"}
    from rotator.keys.crypto import load_certificate

    claims = pyjwt.decode(token, load_certificate(cert_pem).public_key(), algorithms=["RS256"],
                          audience=endpoint.url)
    assert claims["iss"] == CLIENT_ID and claims["sub"] == USERNAME
    assert isinstance(claims["exp"], int)
    assert 0 < claims["exp"] - time.time() <= 181
    assert claims["exp"] - claims["iat"] == 180


def test_key_loaded_once_per_process(run_cli, endpoint, config_path: Path, monkeypatch) -> None:
    """Many rotations in one process parse the private key once."""
    import rotator.keys.crypto as crypto

    setup_credential(run_cli, endpoint, config_path)
    calls = []
    real = crypto.load_private_key
    monkeypatch.setattr(crypto, "load_private_key", lambda *a, **k: calls.append(1) or real(*a, **k))
    engine = Engine(load_config(config_path))
    for _ in range(5):
        assert engine.rotate("sf", force=True).ok
    assert len(calls) == 1
    assert endpoint.token_requests == 5


def test_status_and_check(run_cli, endpoint, config_path: Path) -> None:
    """status shows token age and certificate days left; check reaches stores and keys read-only."""
    setup_credential(run_cli, endpoint, config_path)
    checked = run_cli("--config", config_path, "check")
    assert checked.code == 0, checked.out + checked.err
    assert "credential sf: ok" in checked.out
    assert endpoint.token_requests == 0
    run_cli("--config", config_path, "rotate", "sf")
    rows = json.loads(run_cli("--config", config_path, "status", "--json").out)
    assert rows[0]["credential"] == "sf"
    assert 0 <= rows[0]["token_age_s"] < 60
    assert 364 < rows[0]["cert_days_left"] <= 365
    text = run_cli("--config", config_path, "status").out
    assert text.startswith("sf:") and "days left" in text


def test_status_says_how_fresh_the_daemon_state_is(run_cli, endpoint, tmp_path: Path) -> None:
    """The daemon's fields come from state.json; status says when it was written (a stale file
    means no daemon is keeping it current), and says nothing of it when there is none."""
    config = write_config(tmp_path / "rotator.toml", login_url=endpoint.url, daemon={"state_dir": "state"})
    setup_credential(run_cli, endpoint, config)
    row = json.loads(run_cli("--config", config, "status", "--json").out)[0]
    assert row["state_written_at"] is None and row["state_age_s"] is None
    assert "daemon state" not in run_cli("--config", config, "status").out

    written = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 90))
    (tmp_path / "state").mkdir(mode=0o700, exist_ok=True)
    (tmp_path / "state" / "state.json").write_text(json.dumps({
        "version": 1, "pid": 1, "updated_at": written,
        "credentials": {"sf": {"next_run": "2030-01-01T00:00:00Z", "last_success": None,
                               "last_error": "boom", "consecutive_failures": 2}}}))
    row = json.loads(run_cli("--config", config, "status", "--json").out)[0]
    assert row["state_written_at"] == written and 89 <= row["state_age_s"] <= 150
    assert row["next_run"] == "2030-01-01T00:00:00Z" and row["consecutive_failures"] == 2
    text = run_cli("--config", config, "status").out
    assert "2 consecutive failures" in text and re.search(r"\(daemon state 1m[3-5]\ds old\)", text), text


def test_token_command_errors(run_cli, endpoint, config_path: Path) -> None:
    """token before any rotation, an unknown field, an unknown credential: clear errors."""
    setup_credential(run_cli, endpoint, config_path)
    assert "no token yet" in run_cli("--config", config_path, "token", "sf").err
    run_cli("--config", config_path, "rotate", "sf")
    bad_field = run_cli("--config", config_path, "token", "sf", "--field", "nope")
    assert bad_field.code == 2 and "--field nope" in bad_field.err
    unknown = run_cli("--config", config_path, "rotate", "nope")
    assert unknown.code == 2 and "no credential named 'nope'" in unknown.err


def test_corrupt_token_record_is_replaced(run_cli, endpoint, config_path: Path) -> None:
    """A garbled token file does not block rotation; it is replaced by a good record."""
    setup_credential(run_cli, endpoint, config_path)
    path = token_file(config_path)
    path.write_text("{not json")
    path.chmod(0o600)
    result = run_cli("--config", config_path, "rotate", "sf")
    assert result.json_lines()[0]["action"] == "rotated"
    assert json.loads(path.read_text())["credential"] == "sf"


def test_no_key_record_is_a_clear_error(run_cli, endpoint, config_path: Path) -> None:
    """Rotating before `keys init`: the diagnosis says which record and what to run."""
    line = run_cli("--config", config_path, "rotate", "sf").json_lines()[0]
    assert "local:sf/key: no key record" in line["error"]
    assert "keys init sf" in line["error"]


def test_one_broken_credential_does_not_stop_the_others(run_cli, endpoint, tmp_path: Path,
                                                        monkeypatch) -> None:
    """rotate --all records a bug in one credential (no traceback) and still rotates the rest."""
    from rotator.stores.file import FileStore

    config = write_config(tmp_path / "r.toml", login_url=endpoint.url,
                          credentials={"a": {}, "b": {}})
    for name in ("a", "b"):
        cert = run_cli("--config", config, "keys", "init", name).out
    endpoint.register_app(CLIENT_ID, cert, users=[USERNAME])  # only b's certificate
    real_read = FileStore.read

    def flaky(self, path):
        if path == "a/token":
            raise ZeroDivisionError("secret-ish detail that must not be printed")
        return real_read(self, path)

    monkeypatch.setattr(FileStore, "read", flaky)
    result = run_cli("--config", config, "rotate", "--all")
    lines = {line["name"]: line for line in result.json_lines()}
    assert result.code == 1
    assert lines["a"]["ok"] is False
    assert lines["a"]["error"].startswith("internal error (ZeroDivisionError)")
    assert "secret-ish" not in result.out + result.err
    assert "Traceback" not in result.err
    assert lines["b"]["ok"] is True and lines["b"]["action"] == "rotated"


def test_damaged_pending_slot_does_not_block_current_key(run_cli, endpoint, config_path: Path) -> None:
    """A half-written pending key is ignored (and kept); the current key still produces tokens."""
    setup_credential(run_cli, endpoint, config_path)
    key_file = config_path.parent / "store" / "sf" / "key.json"
    data = json.loads(key_file.read_text())
    data["pending_private_key"] = "-----BEGIN PRIVATE KEY-----\ntruncated"
    key_file.write_text(json.dumps(data))
    result = run_cli("--config", config_path, "rotate", "sf")
    assert result.json_lines()[0]["action"] == "rotated", result.out
    from rotator.records import KeyRecord

    record = KeyRecord.from_data(json.loads(key_file.read_text()), where="x")
    assert record.pending is None and record.damaged
    assert "pending_certificate is missing" in record.damaged[0]
    assert record.to_data()["pending_private_key"].startswith("-----BEGIN")


def test_check_writes_nothing(run_cli, endpoint, tmp_path: Path) -> None:
    """check with audit_log and state_dir set creates no audit file, no key file, no token."""
    config = write_config(tmp_path / "r.toml", login_url=endpoint.url,
                          daemon={"audit_log": "logs/audit.jsonl", "state_dir": "state"})
    (tmp_path / "logs").mkdir()
    setup_credential(run_cli, endpoint, config)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = run_cli("--config", config, "check")
    assert result.code == 0, result.out
    assert "audit_log: ok" in result.out
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert endpoint.token_requests == 0
