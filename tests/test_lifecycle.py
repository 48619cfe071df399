"""Key and certificate lifecycle against the Salesforce-compatible endpoint: expiry warnings,
staged rollover (stage, publish, try pending first, promote), the keys commands, crash safety."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from rotator.audit.events import validate
from rotator.config import load_config
from rotator.engine import Engine, RotationResult
from rotator.errors import StoreUnavailable
from rotator.keys import lifecycle, publish
from rotator.keys.crypto import cert_info, load_certificate
from tests.conftest import CLIENT_ID, USERNAME, write_config

pytestmark = pytest.mark.integration

DAY = 86400.0
HOOK = """\
import json, os, sys
out = sys.argv[1]
data = sys.stdin.read()
with open(out, "w") as handle:
    handle.write(data)
with open(out + ".env", "w") as handle:
    json.dump({"argv": sys.argv[1:], "env": sorted(os.environ)}, handle)
sys.exit(int(os.environ.get("HOOK_EXIT", "0")))
"""


class Clock:
    """Epoch seconds that tests move forward: certificates age without sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, days: float) -> None:
        self.now += days * DAY


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_config(tmp_path: Path, endpoint: Any, **overrides: Any) -> Path:
    return write_config(tmp_path / "rotator.toml", login_url=endpoint.url,
                        credentials={"sf": overrides})


def init_key(run_cli, config: Path, endpoint: Any, days: int = 30) -> str:
    """keys init + upload the certificate to the emulated connected app; returns the PEM."""
    result = run_cli("--config", config, "keys", "init", "sf", "--days", str(days))
    assert result.code == 0, result.err
    endpoint.register_app(CLIENT_ID, result.out, users=[USERNAME])
    return result.out


def hook_script(tmp_path: Path) -> Path:
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    return script


def record(config: Path, path: str) -> dict[str, Any]:
    return json.loads((config.parent / "store" / f"{path}.json").read_text())


def sha(pem: str) -> str:
    return cert_info(load_certificate(pem)).sha256


def rotate(config: Path, clock: Clock, **kwargs: Any) -> tuple[RotationResult, list[dict[str, Any]]]:
    """One rotation by a fresh engine (a restarted process); returns the result and its events."""
    engine = Engine(load_config(config), clock=clock)
    with capture_logs() as events:
        result = engine.rotate("sf", **kwargs)
    return result, events


LIFECYCLE_EVENTS = ("key.", "certificate.", "lifecycle.")


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Events called `name`; every lifecycle event seen must match the catalogue."""
    for event in events:
        if event["event"].startswith(LIFECYCLE_EVENTS):
            assert validate(event, envelope=False) == [], event
    return [e for e in events if e["event"] == name]


def stderr_events(text: str) -> list[str]:
    """Names of the audit lines a CLI command wrote to stderr, each checked in full."""
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    for event in events:
        if event["event"].startswith(LIFECYCLE_EVENTS):
            assert validate(event) == [], event
    return [e["event"] for e in events]


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("{")]


# ---------------------------------------------------------------------------- staging


def test_renewal_window_stages_and_publishes_pending_key(
    tmp_path: Path, endpoint: Any, run_cli, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside the renewal window a pending key is stored and its certificate published to the
    store path, the 0644 file and the hook's stdin (no secrets in the hook's env); the current
    key still signs the token, with one token request."""
    out = tmp_path / "hook.out"
    config = make_config(
        tmp_path, endpoint, renew_before="400d", publish_certificate="local:sf/pending-cert",
        publish_file="published/sf.crt", upload_hook=[sys.executable, str(hook_script(tmp_path)), str(out)],
    )
    old = init_key(run_cli, config, endpoint)
    monkeypatch.setenv("VAULT_TOKEN", "hvs.not-a-real-token-for-this-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret-either")
    result, events = rotate(config, clock)
    assert result.ok and result.action == "rotated", result
    assert result.key_sha256 == sha(old)
    assert endpoint.token_requests == 1
    key = record(config, "sf/key")
    pending = key["pending_certificate"]
    assert key["certificate"] == old and sha(pending) != sha(old) and "pending_staged_at" in key
    assert named(events, "key.staged")[0]["key_sha256"] == sha(pending)
    assert record(config, "sf/pending-cert")["certificate"] == pending
    published = tmp_path / "published" / "sf.crt"
    assert published.read_text() == pending and published.stat().st_mode & 0o777 == 0o644
    assert out.read_text() == pending
    seen = json.loads((tmp_path / "hook.out.env").read_text())
    assert seen["argv"] == [str(out)]
    assert "VAULT_TOKEN" not in seen["env"] and "AWS_SECRET_ACCESS_KEY" not in seen["env"]
    assert "ROTATOR_CERT_SHA256" in seen["env"]
    assert sorted(e["target"] for e in named(events, "key.published") if e["ok"]) == ["file", "hook", "store"]
    assert "pending_published_at" in record(config, "sf/key")
    lifetime = cert_info(load_certificate(pending)).lifetime_seconds / DAY
    assert 29.9 < lifetime < 30.1  # the current certificate's lifetime


def test_outside_renewal_window_nothing_is_staged(
    tmp_path: Path, endpoint: Any, run_cli, clock: Clock
) -> None:
    """Before 2/3 of the lifetime no pending key appears; at 2/3 one does."""
    config = make_config(tmp_path, endpoint)
    init_key(run_cli, config, endpoint, days=30)
    clock.advance(19)
    rotate(config, clock)
    assert "pending_certificate" not in record(config, "sf/key")
    clock.advance(1.1)
    _, events = rotate(config, clock)
    assert "pending_certificate" in record(config, "sf/key")
    assert "2/3" in named(events, "key.staged")[0]["reason"]


def test_publish_target_that_is_a_key_record_is_refused(
    tmp_path: Path, endpoint: Any, run_cli, clock: Clock
) -> None:
    """publish_certificate pointing at the key record would overwrite the keys: config
    validation refuses it (one line naming both fields); past it (defence in depth) the
    publication is refused and audited, the key record (current and pending) stays intact,
    the token is still made."""
    config = make_config(tmp_path, endpoint, renew_before="400d", publish_certificate="local:sf/key")
    refused = run_cli("--config", config, "check")
    assert refused.code == 2 and "credentials.sf.publish_certificate" in refused.err
    assert "credentials.sf.key" in refused.err
    config = make_config(tmp_path, endpoint, renew_before="400d")
    old = init_key(run_cli, config, endpoint)
    loaded = load_config(config)
    cred = loaded.credentials["sf"]
    bypassed = cred.model_copy(update={"publish_certificate": cred.key})
    engine = Engine(type(loaded)(loaded.daemon, loaded.stores, {"sf": bypassed}, loaded.source),
                    clock=clock)
    with capture_logs() as events:
        result = engine.rotate("sf")
    assert result.ok
    failure = named(events, "key.published")[0]
    assert failure["ok"] is False and "is a key or token record" in failure["diagnosis"]
    key = record(config, "sf/key")
    assert key["certificate"] == old and "pending_private_key" in key


def test_status_reports_when_the_next_key_is_staged(tmp_path: Path, endpoint: Any, run_cli) -> None:
    """status --json gives renew_at (2/3 of a 30-day certificate: 20 days after not_before)
    and the pending key's fingerprint once one is staged."""
    config = make_config(tmp_path, endpoint)
    pem = init_key(run_cli, config, endpoint)
    row = json.loads(run_cli("--config", config, "status", "--json").out)[0]
    info = cert_info(load_certificate(pem))
    expected = info.not_before + (info.not_after - info.not_before) * 2 / 3
    assert row["renew_at"] == expected.isoformat() and row["pending_key"] is None
    assert run_cli("--config", config, "keys", "rotate", "sf").code == 0
    row = json.loads(run_cli("--config", config, "status", "--json").out)[0]
    assert row["pending_key"] == sha(record(config, "sf/key")["pending_certificate"])


# ---------------------------------------------------------------------------- rollover


def test_rollover_keeps_tokens_flowing_then_promotes(
    tmp_path: Path, endpoint: Any, run_cli, clock: Clock
) -> None:
    """Until the upload the old key makes the tokens (pending tried first, rejected); after
    it the next run makes one request, writes a token from the new key and promotes it."""
    config = make_config(tmp_path, endpoint, renew_before="400d")
    old = init_key(run_cli, config, endpoint)
    rotate(config, clock)
    new = record(config, "sf/key")["pending_certificate"]

    clock.advance(1)
    endpoint.reset_counters()
    result, events = rotate(config, clock)
    assert result.ok and record(config, "sf/token")["key_sha256"] == sha(old)
    assert [a.outcome for a in endpoint.token_log] == ["invalid_grant", "ok"]
    assert named(events, "key.pending_rejected") and not named(events, "key.promoted")
    assert record(config, "sf/key")["pending_certificate"] == new

    endpoint.upload_certificate(CLIENT_ID, new)  # the old key is refused from now on
    clock.advance(1)
    endpoint.reset_counters()
    result, events = rotate(config, clock)
    assert result.ok and result.action == "rotated"
    assert [a.outcome for a in endpoint.token_log] == ["ok"]  # one request, no failure
    token = record(config, "sf/token")
    assert token["key_sha256"] == sha(new) and endpoint.is_valid(token["access_token"])
    key = record(config, "sf/key")
    assert key["certificate"] == new and key["previous_certificate"] == old
    assert "pending_certificate" not in key and "pending_staged_at" not in key
    promoted = named(events, "key.promoted")
    assert len(promoted) == 1 and promoted[0]["previous_sha256"] == sha(old)
    assert not named(events, "rotation.failed")

    clock.advance(1)
    endpoint.reset_counters()
    result, _ = rotate(config, clock)
    assert result.ok and [a.outcome for a in endpoint.token_log] == ["ok"]  # back to one request


def test_certificate_installed_during_staging_run_switches_at_once(
    tmp_path: Path, endpoint: Any, run_cli, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook that installs the new certificate synchronously makes the old key fail in the
    very run that staged it: that run switches to the pending key and promotes it."""
    config = make_config(tmp_path, endpoint, renew_before="400d", upload_hook=["deploy"])
    old = init_key(run_cli, config, endpoint)

    def deploy(_argv: Any, pem: str, *_args: Any) -> dict[str, Any]:
        endpoint.upload_certificate(CLIENT_ID, pem)
        return {"command": "deploy", "exit_code": 0}

    monkeypatch.setattr(publish, "_run_hook", deploy)
    result, events = rotate(config, clock)
    assert result.ok, result
    assert [a.outcome for a in endpoint.token_log] == ["invalid_grant", "ok"]
    key = record(config, "sf/key")
    assert key["previous_certificate"] == old and "pending_certificate" not in key
    assert record(config, "sf/token")["key_sha256"] == sha(key["certificate"])
    assert named(events, "key.current_rejected") and named(events, "key.promoted")


def test_network_fault_on_pending_key_neither_promotes_nor_discards(
    tmp_path: Path, endpoint: Any, run_cli, clock: Clock
) -> None:
    """A 503 on the pending attempt: the current key still makes the token; the pending key
    stays pending. Once uploaded, a 503 fails the run (retryable) without promoting; the next
    clean run promotes."""
    config = make_config(tmp_path, endpoint)
    old = init_key(run_cli, config, endpoint)
    assert run_cli("--config", config, "keys", "rotate", "sf", "--days", "30").code == 0
    new = record(config, "sf/key")["pending_certificate"]

    endpoint.set_fault("5xx", count=1)
    result, events = rotate(config, clock)
    assert result.ok and record(config, "sf/token")["key_sha256"] == sha(old)
    assert [a.outcome for a in endpoint.token_log] == ["fault:5xx", "ok"]
    assert named(events, "key.pending_failed")[0]["retryable"] is True
    key = record(config, "sf/key")
    assert key["certificate"] == old and key["pending_certificate"] == new

    endpoint.upload_certificate(CLIENT_ID, new)
    endpoint.set_fault("5xx", count=1)
    clock.advance(1)
    result, events = rotate(config, clock)
    assert not result.ok and result.error is not None and result.error.retryable
    key = record(config, "sf/key")
    assert key["certificate"] == old and key["pending_certificate"] == new
    assert not named(events, "key.promoted") and not named(events, "key.discarded")

    clock.advance(1)
    result, _ = rotate(config, clock)
    assert result.ok and record(config, "sf/key")["certificate"] == new


def test_interrupted_promotion_finishes_without_a_token_request(
    tmp_path: Path, endpoint: Any, run_cli, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Token written, key record write lost (crash or outage): the next run sees the token
    minted by the pending key and promotes it without logging in again."""
    config = make_config(tmp_path, endpoint)
    old = init_key(run_cli, config, endpoint)
    assert run_cli("--config", config, "keys", "rotate", "sf").code == 0
    new = record(config, "sf/key")["pending_certificate"]
    endpoint.upload_certificate(CLIENT_ID, new)
    real_promote = lifecycle.promote

    def outage(*_args: Any, **_kwargs: Any) -> None:
        raise StoreUnavailable("local", "sf/key", "simulated outage")

    monkeypatch.setattr(lifecycle, "promote", outage)
    result, events = rotate(config, clock)
    assert result.ok and record(config, "sf/token")["key_sha256"] == sha(new)
    assert record(config, "sf/key")["pending_certificate"] == new
    assert named(events, "lifecycle.failed")[0]["step"] == "promote"

    monkeypatch.setattr(lifecycle, "promote", real_promote)
    endpoint.reset_counters()
    result, events = rotate(config, clock)  # token still fresh: skipped, yet promoted
    assert result.action == "skipped" and endpoint.token_requests == 0
    key = record(config, "sf/key")
    assert key["certificate"] == new and key["previous_certificate"] == old
    assert named(events, "key.promoted")


def race_on_key_write(engine: Engine, when: Any, change: Any) -> None:
    """Make another writer change sf/key just before our first key record write that `when` picks."""
    store = engine.stores["local"]
    real_write = store.write
    raced: list[bool] = []

    def racing_write(path: str, data: dict[str, Any], **kwargs: Any) -> Any:
        if path == "sf/key" and not raced and when(data):
            raced.append(True)
            current = store.read(path)
            assert current is not None
            real_write(path, change(current.data), expected_version=current.version)
        return real_write(path, data, **kwargs)

    store.write = racing_write  # type: ignore[method-assign]


def test_lost_race_while_staging_keeps_the_other_pending_key(
    tmp_path: Path, endpoint: Any, run_cli, clock: Clock, rsa_keys: list[Any]
) -> None:
    """Another writer stages a pending key while we stage: our CAS write loses, we re-read,
    and their pending key is kept (never overwritten, never lost)."""
    config = make_config(tmp_path, endpoint, renew_before="400d", expiry_warnings=[])
    init_key(run_cli, config, endpoint)
    engine = Engine(load_config(config), clock=clock)
    theirs = rsa_keys[0]
    race_on_key_write(engine, lambda data: "pending_certificate" in data,
                      lambda data: {**data, "pending_private_key": theirs.key_pem,
                                    "pending_certificate": theirs.cert_pem})
    with capture_logs() as events:
        result = engine.rotate("sf")
    assert result.ok
    assert record(config, "sf/key")["pending_certificate"] == theirs.cert_pem
    assert not named(events, "key.staged")


def test_lost_race_while_promoting_retries_and_keeps_both_changes(
    tmp_path: Path, endpoint: Any, run_cli, clock: Clock
) -> None:
    """A concurrent edit of the key record during promotion: re-read, promote again, and the
    other writer's field survives."""
    config = make_config(tmp_path, endpoint, expiry_warnings=[])
    old = init_key(run_cli, config, endpoint)
    assert run_cli("--config", config, "keys", "rotate", "sf").code == 0
    new = record(config, "sf/key")["pending_certificate"]
    endpoint.upload_certificate(CLIENT_ID, new)
    engine = Engine(load_config(config), clock=clock)
    race_on_key_write(engine, lambda data: "previous_certificate" in data,
                      lambda data: {**data, "note": "edited by an operator"})
    with capture_logs() as events:
        assert engine.rotate("sf").ok
    key = record(config, "sf/key")
    assert key["certificate"] == new and key["previous_certificate"] == old
    assert key["note"] == "edited by an operator"
    assert len(named(events, "key.promoted")) == 1


# ---------------------------------------------------------------------------- expiry warnings


def test_each_expiry_threshold_warns_once_across_restarts(
    tmp_path: Path, endpoint: Any, run_cli, clock: Clock
) -> None:
    """Crossing 30 then 14 days left gives one warning per threshold, whatever the number of
    runs and restarts; the warned thresholds are remembered in the key record."""
    config = make_config(tmp_path, endpoint)
    pem = init_key(run_cli, config, endpoint, days=30)
    warnings: list[dict[str, Any]] = []
    for step in (0.5, 0.5, 1.0, 15.0, 0.5, 0.5):  # days left: 29.5 29 28 13 12.5 12
        clock.advance(step)
        result, events = rotate(config, clock)
        assert result.ok
        warnings += named(events, "certificate.expiry_warning")
    assert [w["threshold"] for w in warnings] == [30, 14]
    first = warnings[0]
    assert first["credential"] == "sf" and first["key_sha256"] == sha(pem)
    assert 29 < first["days_left"] <= 30 and first["not_after"].startswith("20")
    assert 12 < warnings[1]["days_left"] <= 14
    assert record(config, "sf/key")["expiry_warned"] == {sha(pem): [30, 14]}


def test_expiry_warning_fires_even_when_key_record_is_read_only(
    tmp_path: Path, endpoint: Any, run_cli, clock: Clock
) -> None:
    """A key record that cannot be written still gets its warning (once per process), and
    the token is still made."""
    config = make_config(tmp_path, endpoint)
    init_key(run_cli, config, endpoint, days=30)
    clock.advance(17)
    engine = Engine(load_config(config), clock=clock)
    store = engine.stores["local"]
    real_write = store.write

    def read_only_key(path: str, data: dict[str, Any], **kwargs: Any) -> Any:
        if path == "sf/key":
            raise StoreUnavailable("local", path, "read-only for this test")
        return real_write(path, data, **kwargs)

    store.write = read_only_key  # type: ignore[method-assign]
    with capture_logs() as events:
        assert engine.rotate("sf").ok
        clock.advance(0.5)
        assert engine.rotate("sf").ok
    assert [w["threshold"] for w in named(events, "certificate.expiry_warning")] == [30, 14]
    assert "expiry_warned" not in record(config, "sf/key")


# ---------------------------------------------------------------------------- keys commands


def test_keys_rotate_promote_discard_and_refusals(
    tmp_path: Path, endpoint: Any, run_cli
) -> None:
    """keys rotate stages (refused while one is pending), promote without --force needs the
    endpoint to accept the pending key, discard drops it and withdraws the published file;
    every refusal is exit 2 with one line, every transition an audit event."""
    config = make_config(tmp_path, endpoint, publish_file="sf.crt")
    old = init_key(run_cli, config, endpoint)
    cli = ("--config", config, "keys")

    for verb in ("promote", "discard"):
        refused = run_cli(*cli, verb, "sf")
        assert refused.code == 2 and error_lines(refused.err) == [
            f"rotator: error: sf: no pending key to {verb}" + (
                " (stage one with `rotator keys rotate sf`)" if verb == "promote" else "")]

    staged = run_cli(*cli, "rotate", "sf", "--days", "60")
    assert staged.code == 0, staged.err
    assert staged.out.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE" not in staged.out
    assert {"key.staged", "key.published"} <= set(stderr_events(staged.err))
    first = record(config, "sf/key")["pending_certificate"]
    assert staged.out == first and (tmp_path / "sf.crt").read_text() == first

    again = run_cli(*cli, "rotate", "sf")
    assert again.code == 2 and len(error_lines(again.err)) == 1
    assert "already staged" in again.err

    rejected = run_cli(*cli, "promote", "sf")
    assert rejected.code == 2 and len(error_lines(rejected.err)) == 1
    assert "invalid assertion" in rejected.err
    endpoint.set_fault("5xx", count=1)
    unreachable = run_cli(*cli, "promote", "sf")
    assert unreachable.code == 1 and "HTTP 503" in unreachable.err  # a runtime failure, not a refusal
    key = record(config, "sf/key")
    assert key["certificate"] == old and key["pending_certificate"] == first

    dropped = run_cli(*cli, "discard", "sf")
    assert dropped.code == 0 and "key.discarded" in stderr_events(dropped.err)
    assert "pending_certificate" not in record(config, "sf/key")
    assert not (tmp_path / "sf.crt").exists()  # no pipeline can upload a discarded certificate

    assert run_cli(*cli, "rotate", "sf").code == 0
    second = record(config, "sf/key")["pending_certificate"]
    endpoint.upload_certificate(CLIENT_ID, second)
    promoted = run_cli(*cli, "promote", "sf")
    assert promoted.code == 0, promoted.err
    assert promoted.out.strip() == f"sf: promoted key {sha(second)}"
    assert "key.promoted" in stderr_events(promoted.err)
    key = record(config, "sf/key")
    assert key["certificate"] == second and key["previous_certificate"] == old


def test_keys_promote_force_makes_no_token_request(tmp_path: Path, endpoint: Any, run_cli) -> None:
    """--force promotes without asking the endpoint; the event says it was forced."""
    config = make_config(tmp_path, endpoint)
    old = init_key(run_cli, config, endpoint)
    assert run_cli("--config", config, "keys", "rotate", "sf").code == 0
    pending = record(config, "sf/key")["pending_certificate"]
    endpoint.reset_counters()
    forced = run_cli("--config", config, "keys", "promote", "sf", "--force")
    assert forced.code == 0, forced.err
    assert endpoint.token_requests == 0
    event = next(json.loads(line) for line in forced.err.splitlines()
                 if line.startswith("{") and json.loads(line)["event"] == "key.promoted")
    assert event["forced"] is True and event["key_sha256"] == sha(pending)
    key = record(config, "sf/key")
    assert key["certificate"] == pending and key["previous_certificate"] == old


# ---------------------------------------------------------------------------- upload hook


def test_failed_hook_is_audited_and_retried_hourly(
    tmp_path: Path, endpoint: Any, run_cli, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook exiting 3 is audited with its exit status and does not stop the token; the
    publication is retried after an hour, not on every run, and then marked published."""
    out = tmp_path / "hook.out"
    config = make_config(tmp_path, endpoint, renew_before="400d",
                         upload_hook=[sys.executable, str(hook_script(tmp_path)), str(out)])
    init_key(run_cli, config, endpoint)
    monkeypatch.setattr(publish, "HOOK_ENV", (*publish.HOOK_ENV, "HOOK_EXIT"))
    monkeypatch.setenv("HOOK_EXIT", "3")
    engine = Engine(load_config(config), clock=clock)
    with capture_logs() as events:
        assert engine.rotate("sf").ok
        clock.advance(0.5 / 24)
        assert engine.rotate("sf", force=True).ok
    attempts = named(events, "key.published")
    assert len(attempts) == 1 and attempts[0]["ok"] is False and attempts[0]["exit_code"] == 3
    assert "pending_published_at" not in record(config, "sf/key")

    monkeypatch.setenv("HOOK_EXIT", "0")
    clock.advance(1 / 24)
    with capture_logs() as events:
        assert engine.rotate("sf").ok
    assert [e["ok"] for e in named(events, "key.published")] == [True]
    assert "pending_published_at" in record(config, "sf/key")


def test_hook_timeout_kills_the_hook(
    tmp_path: Path, endpoint: Any, run_cli, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook that hangs is killed at the timeout; the failure is audited, the token made."""
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(60)\n")
    config = make_config(tmp_path, endpoint, renew_before="400d",
                         upload_hook=[sys.executable, str(script)])
    init_key(run_cli, config, endpoint)
    monkeypatch.setattr(publish, "HOOK_TIMEOUT", 0.5)
    started = time.monotonic()
    result, events = rotate(config, clock)
    assert result.ok and time.monotonic() - started < 10
    failure = named(events, "key.published")[0]
    assert failure["ok"] is False and "no exit within" in failure["diagnosis"]
    assert "pending_certificate" in record(config, "sf/key")


# ---------------------------------------------------------------------------- other stores


@pytest.fixture(params=["vault", "aws"])
def remote_store(request: pytest.FixtureRequest, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A `[stores.remote]` table backed by the Vault emulator or moto's Secrets Manager."""
    if request.param == "vault":
        pytest.importorskip("rotator.stores.vault")
        from rotator.testing.vault import VaultEmulator

        with VaultEmulator() as vault:
            (tmp_path / "vault-token").write_text(vault.root_token)
            yield (f'[stores.remote]\ntype = "vault"\nurl = "{vault.url}"\nmount = "secret"\n'
                   'auth = { method = "token", token_file = "vault-token" }')
        return
    pytest.importorskip("rotator.stores.aws")
    pytest.importorskip("moto")
    from rotator.testing.aws import AWS_ENV_CLEAR, MotoServer, aws_env

    for name in AWS_ENV_CLEAR:
        monkeypatch.delenv(name, raising=False)
    for name, value in aws_env().items():
        monkeypatch.setenv(name, value)
    with MotoServer() as moto:
        moto.reset()
        yield f'[stores.remote]\ntype = "aws"\nregion = "us-east-1"\nendpoint_url = "{moto.url}"'


def test_rollover_in_remote_store(
    tmp_path: Path, endpoint: Any, run_cli, clock: Clock, remote_store: str
) -> None:
    """The same stage -> reject -> upload -> promote cycle with the key record, the token and
    the published certificate in Vault KV v2 or Secrets Manager (CAS writes all along)."""
    config = write_config(
        tmp_path / "rotator.toml", login_url=endpoint.url, stores=remote_store,
        credentials={"sf": {"key": "remote:sf/key", "token": "remote:sf/token",
                            "publish_certificate": "remote:sf/pending-cert", "renew_before": "400d"}},
    )
    old = init_key(run_cli, config, endpoint)
    engine = Engine(load_config(config), clock=clock)
    store = engine.stores["remote"]

    def data(path: str) -> dict[str, Any]:
        found = store.read(path)
        assert found is not None
        return found.data

    with capture_logs() as events:
        assert engine.rotate("sf").ok
        new = data("sf/key")["pending_certificate"]
        assert data("sf/pending-cert")["certificate"] == new
        clock.advance(1)
        assert engine.rotate("sf").ok
        assert data("sf/token")["key_sha256"] == sha(old)
        endpoint.upload_certificate(CLIENT_ID, new)
        clock.advance(1)
        assert engine.rotate("sf").ok
    assert data("sf/token")["key_sha256"] == sha(new)
    key = data("sf/key")
    assert key["certificate"] == new and key["previous_certificate"] == old
    assert "pending_certificate" not in key
    assert len(named(events, "key.promoted")) == 1
    engine.stores.close()
