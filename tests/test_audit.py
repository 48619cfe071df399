"""The audit pipeline: catalogue, schema of real events, redaction, tracebacks, keyed fingerprints."""

from __future__ import annotations

import ast
import io
import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from rotator.audit import events
from rotator.audit import fingerprint as audit_hash
from rotator.audit import pipeline as audit
from rotator.audit.chain import verify
from rotator.config import DaemonConfig
from tests.conftest import CLIENT_ID, REPO, USERNAME, SecretGuard, write_config

SESSION_ID = "00D5g000004XyZaEAK!AQ0AQH0dMHYkFZ8tLKrmHq7Vb3BAsvN9qmUwzHdY_t5aPXeXxS.Ys4oGuJkzq"
JWT = ("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiIzTVZHOSIsInN1YiI6ImJvdEBleGFtcGxlLmNvbSJ9."
       "c2lnbmF0dXJlLWJ5dGVzLWhlcmU")
OWNERS_ELSEWHERE = {
    # events other in-flight work emits: checked here on synthetic dicts, there on real ones
    "daemon.started": {"credentials": ["sf"]},
    "daemon.stopping": {"signal": "SIGTERM"},
    "daemon.stopped": {"uptime_s": 12.5},
    "config.loaded": {"path": "/etc/rotator/rotator.toml", "credentials": ["sf"]},
    "config.reloaded": {"path": "/etc/rotator/rotator.toml", "credentials": ["sf"]},
    "config.rejected": {"path": "/etc/rotator/rotator.toml", "outcome": "failure",
                        "error_class": "ConfigError", "diagnosis": "credentials.sf.every: bad"},
    "key.staged": {"credential": "sf", "key_sha256": "a" * 64, "current_sha256": "b" * 64,
                   "not_after": "2027-01-01T00:00:00+00:00", "version": "3"},
    "key.promoted": {"credential": "sf", "key_sha256": "a" * 64, "previous_sha256": "b" * 64,
                     "not_after": "2027-01-01T00:00:00+00:00", "version": "4"},
    "key.discarded": {"credential": "sf", "key_sha256": "a" * 64, "version": "5"},
    "key.published": {"credential": "sf", "target": "hook", "key_sha256": "a" * 64, "ok": True},
    "certificate.expiry_warning": {"credential": "sf", "key_sha256": "a" * 64, "days_left": 6.5,
                                   "threshold": 7, "not_after": "2027-01-01T00:00:00+00:00"},
    "store.auth.login": {"store": "vault", "method": "approle", "ttl_s": 3600},
    "store.auth.renewed": {"store": "vault", "method": "approle", "ttl_s": 3600},
    "store.auth.failed": {"store": "vault", "method": "approle", "outcome": "failure",
                          "error_class": "StoreAuthError", "diagnosis": "permission denied"},
}


@pytest.fixture(autouse=True)
def _fresh_pipeline() -> Iterator[None]:
    """Each test starts and ends with a pipeline that has no audit file and no installation key."""
    audit.configure(stream=io.StringIO())
    audit_hash.use_ephemeral_key()
    yield
    audit.configure(stream=io.StringIO())
    audit_hash.use_ephemeral_key()


def envelope(name: str, **fields: Any) -> dict[str, Any]:
    return {"ts": "2026-11-28T12:00:00.123456Z", "event": name, "level": "info",
            "actor": {"host": "h", "pid": 1, "version": "0.1.0"}, **fields}


def rendered(fmt: str = "json") -> tuple[io.StringIO, structlog.typing.FilteringBoundLogger]:
    out = io.StringIO()
    audit.configure(fmt=fmt, stream=out)
    return out, structlog.get_logger("test")


# ---------------------------------------------------------------------------- catalogue


def test_docs_carry_the_catalogue_table() -> None:
    """docs/audit-events.md holds events.markdown_table() verbatim (`python -m rotator.audit.events`)."""
    docs = (REPO / "docs" / "audit-events.md").read_text()
    assert events.markdown_table() in docs, "regenerate the table: python -m rotator.audit.events"
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", docs, re.M))
    assert documented == set(events.CATALOGUE)


def test_issue_events_are_all_catalogued() -> None:
    """Every event issue #7 names is in the catalogue with its required fields."""
    named = ["rotation.started", "rotation.succeeded", "rotation.failed", "rotation.skipped",
             "rotation.superseded", "token.written", "token.unreadable", "key.loaded",
             "key.created", "key.imported", "key.staged", "key.promoted", "key.discarded",
             "key.published", "certificate.expiry_warning", "store.auth.login",
             "store.auth.renewed", "store.auth.failed", "config.loaded", "config.reloaded",
             "config.rejected", "config.warning", "daemon.started", "daemon.stopping",
             "daemon.stopped", "library.log"]
    assert set(named) <= set(events.CATALOGUE)
    assert {"store", "path", "version", "token_fingerprint"} <= set(events.spec("token.written").required)
    assert {"days_left", "threshold", "not_after"} <= set(
        events.spec("certificate.expiry_warning").required)
    assert {"outcome", "error_class", "diagnosis", "duration_s"} <= set(
        events.spec("rotation.failed").required)


def _emitted_names() -> dict[str, str]:
    """Every string literal in the first argument of an emit(...) call under rotator/."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "rotator").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            name = getattr(func, "attr", None) or getattr(func, "id", None)
            if isinstance(node, ast.Call) and name == "emit" and node.args:
                for const in ast.walk(node.args[0]):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str) \
                            and "." in const.value:
                        found[const.value] = f"{path.relative_to(REPO)}:{node.lineno}"
    return found


def test_every_emitted_event_is_catalogued() -> None:
    """No module emits an event the catalogue (and so the docs) does not know."""
    emitted = _emitted_names()
    assert {"rotation.started", "key.created", "key.imported"} <= set(emitted)  # the scan works
    unknown = {name: where for name, where in emitted.items() if name not in events.CATALOGUE}
    assert not unknown


def test_rotation_scenario_events_fit_the_catalogue(run_cli, endpoint, tmp_path: Path) -> None:
    """keys init, rotate, rotate (skipped), rotate under a 5xx: every audit line validates."""
    cfg = write_config(tmp_path / "rotator.toml", login_url=endpoint.url,
                       daemon={"audit_log": "audit.jsonl"})
    init = run_cli("--config", cfg, "keys", "init", "sf")
    assert init.code == 0, init.err
    endpoint.register_app(CLIENT_ID, init.out, users=[USERNAME])
    runs = [run_cli("--config", cfg, "rotate", "sf"), run_cli("--config", cfg, "rotate", "sf")]
    endpoint.set_fault("5xx", count=1)
    runs.append(run_cli("--config", cfg, "rotate", "sf", "--force"))
    assert [r.json_lines()[0]["action"] for r in runs] == ["rotated", "skipped", "failed"]

    raw = (tmp_path / "audit.jsonl").read_text().splitlines()
    lines = [json.loads(line) for line in raw]
    assert [p for line in lines for p in events.validate(line)] == []
    assert all(line.startswith('{"ts":"') and list(json.loads(line))[1] == "event" for line in raw)
    names = {line["event"] for line in lines}
    assert {"audit.anchor", "key.created", "key.loaded", "rotation.started", "token.written",
            "rotation.succeeded", "rotation.skipped", "rotation.failed"} <= names
    failed = next(line for line in lines if line["event"] == "rotation.failed")
    assert failed["error_class"] == "EndpointUnavailable" and failed["outcome"] == "failure"

    by_rotation: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        if "rotation_id" in line:
            by_rotation[line["rotation_id"]].append(line["event"])
    assert len(by_rotation) == 3
    for names_in_rotation in by_rotation.values():
        assert names_in_rotation[0] == "rotation.started"
        assert sum(n.startswith("rotation.") for n in names_in_rotation) == 2  # start + one end

    streamed = [json.loads(x) for r in runs for x in r.err.splitlines() if x.startswith("{")]
    assert {e["event"] for e in streamed} >= {"rotation.succeeded", "rotation.failed"}
    assert [p for e in streamed for p in events.validate(e)] == []
    assert verify([tmp_path / "audit.jsonl"], key=(tmp_path / "audit-hmac.key").read_bytes()).ok


@pytest.mark.parametrize("name", sorted(OWNERS_ELSEWHERE))
def test_validate_accepts_well_formed_events(name: str) -> None:
    """validate() passes a complete event of each kind other modules emit."""
    assert events.validate(envelope(name, **OWNERS_ELSEWHERE[name])) == []


@pytest.mark.parametrize(("event", "problem"), [
    (envelope("daemon.started.typo"), "not in the catalogue"),
    (envelope("store.auth.login", store="vault"), "missing method"),
    (envelope("store.auth.failed", store="v", method="token", outcome="failure",
              diagnosis="403"), "missing error_class"),
    (envelope("key.published", credential="sf", target="hook", key_sha256="a" * 64, ok=False,
              outcome="failure", diagnosis="exit 3"), "a failure needs error_class"),
    (envelope("config.reloaded", path="p", credentials=[], outcome="done"), "outcome 'done'"),
    (envelope("certificate.expiry_warning", credential="sf", key_sha256="A1:B2", days_left=3,
              threshold=7, not_after="2027-01-01T00:00:00Z"), "key_sha256 'A1:B2'"),
    (envelope("certificate.expiry_warning", credential="sf", key_sha256="a" * 64,
              days_left="3", threshold=7, not_after="2027-01-01T00:00:00Z"), "days_left '3'"),
    ({**envelope("config.warning", warning="w"), "ts": "2026-11-28T12:00:00+01:00"}, "ts"),
    ({**envelope("config.warning", warning="w"), "actor": {"host": "h"}}, "actor"),
    ({**envelope("config.warning", warning="w"), "level": "loud"}, "level 'loud'"),
    (envelope("store.auth.login", store="vault", method="token",
              headers={"x": "[REDACTED VAULT TOKEN]"}), "headers.x holds a secret"),
])
def test_validate_reports_each_problem(event: dict[str, Any], problem: str) -> None:
    """validate() names what is wrong: unknown name, missing field, format, envelope, leak."""
    problems = events.validate(event)
    assert any(problem in p for p in problems), problems


def test_validate_without_envelope_for_bare_captures() -> None:
    """envelope=False checks only the event's own fields (capture_logs without processors)."""
    with capture_logs() as captured:
        audit.emit("config.warning", level="warning", warning="every is shorter than 5m")
    assert events.validate(captured[0]) != []
    assert events.validate(captured[0], envelope=False) == []


# ---------------------------------------------------------------------------- pipeline


def test_lines_start_with_ts_and_event_in_both_formats() -> None:
    """JSON and console lines begin with the timestamp, then the event name."""
    out, _ = rendered("json")
    with audit.bound_contextvars(rotation_id="f" * 32, credential="sf"):
        audit.emit("rotation.started", force=False, dry_run=False)
    line = json.loads(out.getvalue())
    assert list(line)[:3] == ["ts", "event", "level"] and line["credential"] == "sf"
    out, _ = rendered("console")
    audit.emit("config.warning", level="warning", warning="w")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[warning\s*\] config\.warning",
                    out.getvalue())


def test_rotation_end_events_get_a_duration() -> None:
    """The closing event of a rotation carries duration_s measured from its rotation.started."""
    with capture_logs(processors=audit.shared_processors()) as captured, \
            audit.bound_contextvars(rotation_id="e" * 32, credential="sf"):
        audit.emit("rotation.started", force=False, dry_run=False)
        audit.emit("rotation.skipped", outcome="skipped", reason="fresh")
    assert "duration_s" not in captured[0]
    assert isinstance(captured[1]["duration_s"], float) and captured[1]["duration_s"] >= 0
    assert events.validate(captured[1]) == []


# ---------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(("secret", "sensitive", "mask"), [
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
     "MIIEvQIBADAN", "[REDACTED PEM PRIVATE KEY]"),
    ("-----BEGIN RSA PRIVATE KEY-----\\nMIIEpAIBAAKCAQEAtruncated-in-an-escaped-string",
     "MIIEpAIBAAKC", "[REDACTED PEM RSA PRIVATE KEY]"),
    ("-----BEGIN CERTIFICATE-----\nMIIC+zCCAeOgAwIBAgIUJq\n-----END CERTIFICATE-----",
     "MIIC+zCCAeOg", "[REDACTED PEM CERTIFICATE]"),
    (JWT, "c2lnbmF0dXJl", "[REDACTED JWT]"),
    ("hvs.CAESIJ1k0T2oH3xq8y5ZpQ", "CAESIJ1k0T2o", "[REDACTED VAULT TOKEN]"),
    ("AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXA", "[REDACTED AWS KEY ID]"),
    (SESSION_ID, "AQ0AQH0dMHYk", "[REDACTED SESSION ID]"),
    ("Authorization: Bearer q1w2e3r4t5y6u7i8o9p0", "q1w2e3r4t5y6", "Authorization: [REDACTED]"),
    ("authorization=Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNz", "authorization=[REDACTED]"),
    ('"X-Vault-Token": "s.Qf1s5zigZ4K5xC1kE3sKyJtq"', "Qf1s5zigZ4K5", '"X-Vault-Token": "[REDACTED]"'),
    ("OAuth 9fJ3kL0pQ2rS5tU8vW1xY4z", "9fJ3kL0pQ2rS", "OAuth [REDACTED]"),
    ("grant_type=jwt&client_secret=9f8e7d6c5b4a", "9f8e7d6c5b4a", "client_secret=[REDACTED]"),
    ("{'aws_secret_access_key': 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'}", "wJalrXUtnFEM",
     "'aws_secret_access_key': '[REDACTED]'"),
])
def test_each_secret_pattern_is_masked(secret: str, sensitive: str, mask: str) -> None:
    """A secret inside free text is replaced by its mask; the text before it survives."""
    text = audit.redact_text(f"before {secret} after")
    assert mask in text and text.startswith("before ")
    assert sensitive not in text


@pytest.mark.parametrize("field", [*sorted(audit.SECRET_FIELDS), "Authorization", "X-Vault-Token"])
def test_secret_fields_are_masked_top_level_and_nested(field: str) -> None:
    """A secret-named field is masked whatever its value, at the top and inside mappings."""
    with capture_logs(processors=audit.shared_processors()) as captured:
        audit.emit("library.log", logger="t", message="m", **{field: "plain-looking-value"},
                   headers={field: "plain-looking-value", "accept": "json"})
    event = captured[0]
    assert event[field] == "[REDACTED]"
    assert event["headers"] == {field: "[REDACTED]", "accept": "json"}


def test_objects_and_bytes_never_reach_the_renderer_raw() -> None:
    """Bytes render as a length, other objects as their redacted str."""
    class Leaky:
        def __str__(self) -> str:
            return f"session {SESSION_ID}"

    out, log = rendered()
    log.info("library.log", blob=b"\x00secret-key-bytes", obj=Leaky(), items={"hvs.CAESIJ1k0T2oH3xq8y5ZpQ"})
    line = json.loads(out.getvalue())
    assert line["blob"] == "<17 bytes>"
    assert line["obj"] == "session [REDACTED SESSION ID]"
    assert line["items"] == ["[REDACTED VAULT TOKEN]"]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_never_show_locals(fmt: str) -> None:
    """An exception logged with a secret local variable prints the traceback, never the local."""
    out, log = rendered(fmt)

    def exchange() -> None:
        client_secret_value = "local-only-secret-0123456789"  # noqa: F841 (the point of the test)
        raise ValueError("endpoint said no")

    try:
        exchange()
    except ValueError:
        log.exception("library.log", logger="t", message="boom")
    text = out.getvalue()
    assert "endpoint said no" in text and "exchange" in text
    assert "local-only-secret" not in text and "client_secret_value" not in text


def test_stdlib_logging_goes_through_redaction_without_traceback() -> None:
    """A library's log record (APScheduler's job error) becomes library.log: redacted, no frames."""
    out, _ = rendered()
    try:
        raise RuntimeError("inner")
    except RuntimeError:
        logging.getLogger("apscheduler.executors.default").error(
            "Job raised with token %s", SESSION_ID, exc_info=True)
    line = json.loads(out.getvalue())
    assert line["event"] == "library.log" and line["logger"] == "apscheduler.executors.default"
    assert line["message"] == "Job raised with token [REDACTED SESSION ID]"
    assert "exception" not in line and "inner" not in out.getvalue()


def test_guard_scans_rotated_audit_files(tmp_path: Path) -> None:
    """The suite's secret guard reads audit.jsonl.3 as it reads audit.jsonl."""
    guard = SecretGuard()
    guard.roots.append(tmp_path)
    guard.add(SESSION_ID)
    (tmp_path / "audit.jsonl.3").write_text(json.dumps({"t": SESSION_ID}) + "\n")
    (tmp_path / "rotator.toml.1").write_text(SESSION_ID)  # not a log: not scanned
    leaks = guard.leaks([])
    assert len(leaks) == 1 and "audit.jsonl.3" in leaks[0]


# ---------------------------------------------------------------------------- audit file + key


def test_unwritable_audit_file_fails_early_with_exit_2(run_cli, endpoint, tmp_path: Path) -> None:
    """An audit_log under a regular file: one line naming it, exit 2, nothing rotated."""
    (tmp_path / "blocker").write_text("")
    cfg = write_config(tmp_path / "rotator.toml", login_url=endpoint.url,
                       daemon={"audit_log": "blocker/audit.jsonl", "state_dir": "state"})
    result = run_cli("--config", cfg, "rotate", "sf")
    assert result.code == 2
    assert result.err.strip().splitlines() == [result.err.strip()]
    assert "blocker/audit.jsonl: cannot open the audit log" in result.err
    assert endpoint.token_requests == 0


def test_write_failure_marks_the_stream_line_and_does_not_raise(tmp_path: Path) -> None:
    """If the audit file breaks mid-run the event still reaches stdout, flagged, and is counted."""
    out, _ = rendered()
    path = tmp_path / "audit.jsonl"
    sink = audit.use_audit_file(path, max_bytes=1 << 20)
    assert sink is not None
    path.unlink()
    path.mkdir()  # the next open fails with EISDIR
    audit.emit("config.warning", level="warning", warning="w")
    line = json.loads(out.getvalue())
    assert line["event"] == "config.warning" and "audit.jsonl" in line["audit_file_error"]
    assert sink.failures == 1


@pytest.mark.parametrize(("settings", "expected"), [
    ({"audit_hmac_key_file": "k/explicit.key", "state_dir": "s", "audit_log": "l/a.jsonl"},
     "k/explicit.key"),
    ({"state_dir": "s", "audit_log": "l/a.jsonl"}, "s/audit-hmac.key"),
    ({"audit_log": "l/a.jsonl"}, "l/a-hmac.key"),
    ({}, None),
])
def test_hmac_key_fallback_order(tmp_path: Path, settings: dict[str, str], expected: str | None) -> None:
    """Key file: audit_hmac_key_file, else state_dir/audit-hmac.key, else <audit_log stem>-hmac.key."""
    daemon = DaemonConfig(**{k: tmp_path / v for k, v in settings.items()})
    audit.use_settings(daemon)
    if expected is None:
        assert audit_hash.key_source() is None
        return
    key_file = tmp_path / expected
    assert audit_hash.key_source() == key_file
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_bytes()) == 32


def test_audit_hash_matches_under_the_installation_key(run_cli, tmp_path: Path) -> None:
    """`audit hash -` reproduces a fingerprint made earlier with the same key file, from stdin."""
    cfg = write_config(tmp_path / "rotator.toml", login_url="http://127.0.0.1:1",
                       daemon={"state_dir": "state"})
    audit_hash.use_key_file(tmp_path / "state" / "audit-hmac.key")
    expected = audit_hash.token_fingerprint(SESSION_ID)
    audit_hash.use_ephemeral_key()
    via_stdin = run_cli("--config", cfg, "audit", "hash", "-", stdin=SESSION_ID + "\n")
    assert via_stdin.code == 0 and via_stdin.out.strip() == expected
    other = run_cli("--config", cfg, "audit", "hash", "-", stdin="00Dsomething-else!x\n")
    assert other.out.strip() != expected and other.out.startswith("hmac-sha256:")


def test_audit_hash_refuses_without_an_installation_key(run_cli, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With no key configured, `audit hash` exits 2 instead of printing a meaningless hash."""
    monkeypatch.setenv("ROTATOR_CONFIG", str(tmp_path / "absent.toml"))
    result = run_cli("audit", "hash", "-", stdin="tok-1234567890\n")
    assert result.code == 2 and result.out == ""
    assert "no audit HMAC key configured" in result.err


def test_concurrent_key_creation_agrees(tmp_path: Path) -> None:
    """Two processes creating the key at once end up with the same key (link, not overwrite)."""
    import subprocess
    import sys

    from tests.conftest import rotator_subprocess_env

    script = ("import sys; from pathlib import Path; from rotator.audit import fingerprint as h; "
              "h.use_key_file(Path(sys.argv[1])); print(h.token_fingerprint('x'))")
    key = tmp_path / "state" / "audit-hmac.key"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(key)], stdout=subprocess.PIPE,
                              text=True, env=rotator_subprocess_env()) for _ in range(3)]
    outputs = {p.communicate(timeout=30)[0].strip() for p in procs}
    assert len(outputs) == 1 and next(iter(outputs)).startswith("hmac-sha256:")
    assert not [p for p in key.parent.iterdir() if p.name.endswith(".tmp")]
    assert os.stat(key).st_mode & 0o777 == 0o600


def test_library_warnings_are_rate_limited() -> None:
    """A flood of one library warning (an overloaded scheduler) becomes one line a minute."""
    import io
    import json
    import logging

    from rotator.audit import pipeline as audit

    out = io.StringIO()
    audit.configure(fmt="json", stream=out)
    log = logging.getLogger("apscheduler.executors.default")
    for i in range(50):
        log.warning("Execution of job %s skipped: maximum number of running instances", i)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 1
    assert lines[0]["event"] == "library.log" and "skipped" in lines[0]["message"]
