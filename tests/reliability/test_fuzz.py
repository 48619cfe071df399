"""Fuzzing with Hypothesis: what rotator parses never raises anything but rotator's own errors.

Targets: the config loader (TOML bytes, and tables near a valid config), the duration parser,
the record parsers (key and token records, the file store's reader, PEM keys and
certificates), the token response parser (the whole provider path after the HTTP call), and
the audit verifier (random files, and valid chains with one change each). Each target also
checks a property stronger than "did not crash": a token response rotator accepts makes a
token record rotator can read back, and a changed audit chain never verifies as unchanged.

Derandomized (the same examples every run; no example database is written) and sized to run
in about ten seconds in all.
"""

from __future__ import annotations

import contextlib
import json
import math
import string
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator import policy
from rotator.audit.chain import AuditFile, verify
from rotator.config import load_config, parse_config
from rotator.durations import format_duration, parse_duration
from rotator.errors import EndpointError, InputError, KeyMaterialError, RecordError, RotatorError
from rotator.keys.crypto import load_certificate, load_private_key
from rotator.providers.base import HttpReply
from rotator.records import KeyRecord, TokenRecord
from rotator.stores.file import FileStore

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=examples)


EVERYTHING = st.characters(exclude_categories=())  # surrogates included: JSON can carry them

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(EVERYTHING, max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
toml_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(EVERYTHING, max_size=30)
    | st.datetimes()
    | st.dates()
)
toml_values = st.recursive(
    toml_scalars.filter(lambda v: v is not None),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


def _count(report: Any, target: str, counter: list[int]) -> None:
    report.record("fuzz", target=target, examples=counter[0])


# ---------------------------------------------------------------------------- config loader

VALID = {
    "daemon": {"listen": ""},
    "stores": {"local": {"type": "file", "path": "store"}},
    "credentials": {
        "sf": {
            "provider": "salesforce",
            "client_id": "3MVG9x",
            "username": "u@example.com",
            "login_url": "https://login.salesforce.com",
            "key": "local:sf/key",
            "token": "local:sf/token",
            "every": "30m",
        }
    },
}
CRED_KEYS = [
    *VALID["credentials"]["sf"],
    "jitter",
    "timeout",
    "retry_min",
    "retry_max",
    "token_url",
    "assertion_lifetime",
    "max_requests_per_hour",
    "extra_claims",
    "expiry_warnings",
    "renew_before",
    "upload_hook",
    "publish_file",
    "algorithm",
    "audience",
]
TOML_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " \n\t[]{}=\".,:-_#'", max_size=300)


def test_config_loader_raises_only_config_errors(tmp_path: Path, report) -> None:
    """TOML bytes (random, and mutations of a valid file) load or fail with ConfigError."""
    counter = [0]
    path = tmp_path / "rotator.toml"
    valid_text = _toml(VALID)

    @fuzz(300)
    @given(
        st.one_of(
            TOML_TEXT.map(str.encode),
            st.binary(max_size=200),
            st.integers(1, 3000).map(lambda n: f"a = {'[' * n}{']' * n}".encode()),
            st.tuples(st.integers(0, len(valid_text)), TOML_TEXT).map(
                lambda cut: (valid_text[: cut[0]] + cut[1] + valid_text[cut[0] :]).encode()
            ),
        )
    )
    def run(raw: bytes) -> None:
        counter[0] += 1
        path.write_bytes(raw)
        try:
            load_config(path)
        except RotatorError as exc:
            assert exc.exit_code == 2 and "\n" not in exc.diagnostics()

    run()
    _count(report, "config loader: TOML bytes", counter)


def test_config_tables_raise_only_config_errors(tmp_path: Path, report) -> None:
    """Any value for any setting validates (to schedulable durations) or fails with a ConfigError."""
    counter = [0]

    @fuzz(500)
    @given(
        st.sampled_from(CRED_KEYS),
        st.one_of(toml_values, st.floats(), st.integers(-(2**70), 2**70)),
        st.sampled_from(["cred", "cred", "daemon", "store"]),
    )
    def run(key: str, value: Any, where: str) -> None:
        counter[0] += 1
        raw = json.loads(json.dumps(VALID))
        if where == "cred":
            raw["credentials"]["sf"][key] = value
        elif where == "daemon":
            raw["daemon"][key.replace("every", "shutdown_timeout")] = value
        else:
            raw["stores"]["local"][key] = value
        try:
            config = parse_config(raw, base_dir=tmp_path)
        except RotatorError as exc:
            assert exc.exit_code == 2 and "\n" not in exc.diagnostics()
            return
        cred = config.credentials["sf"]
        for seconds in (cred.every, cred.jitter, cred.timeout, cred.retry_min, cred.retry_max):
            assert math.isfinite(seconds) and 0 <= seconds <= 10 * 365 * 86400
        assert cred.timeout > 0

    run()
    _count(report, "config loader: settings", counter)


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((f"{prefix}{key}", value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    text = "\n".join(lines) + "\n"
    for name, table in tables:
        if all(isinstance(v, dict) for v in table.values()):
            text += _toml(table, prefix=name + ".")
        else:
            text += f"[{name}]\n" + _toml(table, prefix=name + ".")
    return text


# ---------------------------------------------------------------------------- durations


def test_duration_parser(report) -> None:
    """parse_duration gives finite seconds within 10 years that round-trip, or raises ValueError."""
    counter = [0]

    @fuzz(600)
    @given(
        st.one_of(
            st.text(EVERYTHING, max_size=20),
            st.lists(
                st.tuples(st.integers(0, 10**6), st.sampled_from(["ms", "s", "m", "h", "d", "w"])),
                min_size=1,
                max_size=4,
            ).map(lambda parts: "".join(f"{n}{u}" for n, u in parts)),
            st.integers(0, 10**12).map(lambda n: format_duration(n)),
        )
    )
    def run(text: str) -> None:
        counter[0] += 1
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            assert "\n" not in str(exc)
            return
        assert math.isfinite(seconds) and 0 <= seconds <= 10 * 365 * 86400
        if seconds >= 1:
            assert parse_duration(format_duration(seconds)) == pytest.approx(round(seconds), abs=0.5)

    run()
    _count(report, "duration parser", counter)


# ---------------------------------------------------------------------------- records


def test_record_parsers(tmp_path: Path, report) -> None:
    """Key and token records and file-store bytes parse or raise RecordError; parsed tokens give deadlines."""
    counter = [0]
    store = FileStore("local", tmp_path / "store")
    target = tmp_path / "store" / "r.json"
    target.parent.mkdir()
    now = datetime.now(UTC)
    stamps = st.one_of(
        st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
        st.text(EVERYTHING, max_size=30),
        st.integers(),
        st.floats(),
        st.none(),
    )
    tokens = st.fixed_dictionaries(
        {"access_token": st.one_of(st.text(EVERYTHING, max_size=20), json_scalars), "issued_at": stamps},
        optional={
            "expires_at": stamps,
            "instance_url": json_scalars,
            "scope": json_scalars,
            "key_sha256": json_scalars,
        },
    )
    keys = st.fixed_dictionaries(
        {},
        optional={
            name: st.one_of(st.text(EVERYTHING, max_size=40), json_scalars)
            for name in (
                "private_key",
                "certificate",
                "passphrase",
                "pending_private_key",
                "pending_certificate",
                "previous_private_key",
                "previous_certificate",
            )
        },
    )

    @fuzz(800)
    @given(st.one_of(json_values, tokens, keys, st.binary(max_size=100)))
    def run(data: Any) -> None:
        counter[0] += 1
        if isinstance(data, bytes):
            target.write_bytes(data)
            try:
                record = store.read("r")
            except RecordError:
                return
            data = record.data if record is not None else {}
        with contextlib.suppress(RecordError):
            KeyRecord.from_data(data, where="k")
        try:
            token = TokenRecord.from_data(data, where="t")
        except RecordError:
            return
        TokenRecord.from_data(token.to_data(), where="t")  # what rotator writes, it reads back
        policy.token_due(token, every=1800, jitter=60, now=now, key_sha256="x")
        policy.refresh_deadline(token, every=1800)
        policy.due_at(token, every=1800, jitter=60)

    try:
        run()
    finally:
        target.unlink(missing_ok=True)
    _count(report, "record parsers (key, token, file store)", counter)


def test_pem_parsers(rsa_keys, report) -> None:
    """Key and certificate PEMs, random or damaged, load or raise KeyMaterialError."""
    counter = [0]
    key_pem, cert_pem = rsa_keys[0].key_pem, rsa_keys[0].cert_pem

    def damaged(pem: str) -> Any:
        return st.tuples(
            st.integers(0, len(pem) - 1), st.text(EVERYTHING, min_size=1, max_size=3), st.integers(0, 3)
        ).map(lambda c: pem[: c[0]] + c[1] + pem[c[0] + c[2] :])

    @fuzz(300)
    @given(
        st.one_of(
            st.text(EVERYTHING, max_size=200),
            damaged(key_pem),
            damaged(cert_pem),
            st.just("-----BEGIN PRIVATE KEY-----\n\ud800\n-----END PRIVATE KEY-----\n"),
        ),
        st.one_of(st.none(), st.text(EVERYTHING, max_size=10)),
    )
    def run(text: str, passphrase: str | None) -> None:
        counter[0] += 1
        for load in (
            lambda: load_private_key(text, passphrase=passphrase, where="k"),
            lambda: load_certificate(text, where="c"),
        ):
            try:
                load()
            except KeyMaterialError as exc:
                assert "\n" not in exc.diagnostics()

    run()
    _count(report, "PEM key and certificate parsers", counter)


# ---------------------------------------------------------------------------- token responses


def test_token_response_parser(monkeypatch, report) -> None:
    """Any endpoint reply yields a token that reads back as a record, or an EndpointError."""
    from rotator.config import CredentialConfig
    from rotator.providers import base, jwt_bearer, salesforce

    counter = [0]
    sf = salesforce.SalesforceProvider(
        "sf",
        CredentialConfig.model_validate(
            {
                "provider": "salesforce",
                "client_id": "c",
                "username": "u",
                "login_url": "http://127.0.0.1:9",
                "key": "l:k",
                "token": "l:t",
            }
        ),
    )
    generic = jwt_bearer.JwtBearerProvider(
        "g",
        CredentialConfig.model_validate(
            {
                "provider": "jwt-bearer",
                "client_id": "c",
                "token_url": "http://127.0.0.1:9/token",
                "key": "l:k",
                "token": "l:t",
            }
        ),
    )
    reply: list[HttpReply] = []
    monkeypatch.setattr(base, "post_form", lambda *a, **k: reply[0])  # the HTTP call, nothing after it
    fields = st.fixed_dictionaries(
        {},
        optional={
            "access_token": st.one_of(st.text(EVERYTHING, max_size=30), json_scalars),
            "instance_url": st.one_of(
                st.sampled_from(
                    [
                        "https://na1.salesforce.com",
                        "http://127.0.0.1:9",
                        "http://evil.example",
                        "https://[::1",
                        "ftp://x",
                        "",
                    ]
                ),
                json_scalars,
            ),
            "issued_at": st.one_of(st.integers(-(10**20), 10**20).map(str), json_scalars),
            "expires_in": st.one_of(st.integers(-(10**20), 10**20), json_scalars),
            "error": json_scalars,
            "error_description": json_values,
            "scope": json_scalars,
            "token_type": json_scalars,
            "id": json_scalars,
        },
    )
    bodies = st.one_of(
        fields.map(lambda d: json.dumps(d).encode()),
        st.binary(max_size=100),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.just(b'{"access_token": "t", "instance_url": "https://x", "expires_in": 1e999}'),
    )

    @fuzz(800)
    @given(
        st.sampled_from([200, 200, 200, 400, 401, 302, 429, 500, 503]),
        bodies,
        st.sampled_from(["application/json", "text/html", ""]),
        st.one_of(st.none(), st.text(max_size=12)),
    )
    def run(status: int, body: bytes, ctype: str, retry_after: str | None) -> None:
        counter[0] += 1
        headers = {"content-type": ctype}
        if retry_after is not None:
            headers["retry-after"] = retry_after
        reply[:] = [HttpReply(status, headers, body)]
        for provider in (sf, generic):
            try:
                response = provider.exchange("assertion")
            except EndpointError as exc:
                assert "\n" not in exc.diagnostics()
                continue
            record = TokenRecord(
                access_token=response.access_token,
                instance_url=response.instance_url,
                token_type=response.token_type,
                scope=response.scope,
                id=response.id,
                issued_at=response.issued_at,
                expires_at=response.expires_at,
                credential="sf",
                key_sha256="x",
            )
            again = TokenRecord.from_data(record.to_data(), where="t")  # never a poisoned record
            policy.refresh_deadline(again, every=1800)

    run()
    _count(report, "token response parser (salesforce + generic)", counter)


# ---------------------------------------------------------------------------- audit verifier


def test_audit_verifier_on_random_files(tmp_path: Path, report) -> None:
    """Any file: verify returns a verdict, or says (InputError) it is not an audit log."""
    counter = [0]
    path = tmp_path / "audit.jsonl"

    @fuzz(300)
    @given(
        st.one_of(
            st.binary(max_size=300),
            st.lists(json_values.map(json.dumps), max_size=5).map(lambda ls: "\n".join(ls).encode()),
            st.just(("[" * 5000 + "]" * 5000 + "\n").encode()),
        )
    )
    def run(raw: bytes) -> None:
        counter[0] += 1
        path.write_bytes(raw)
        try:
            verdict = verify([path])
        except InputError:
            return
        assert verdict.ok in (True, False)

    try:
        run()
    finally:
        path.unlink(missing_ok=True)  # the secret guard json-parses *.json* files at teardown
    _count(report, "audit verifier: random files", counter)


def test_audit_verifier_detects_every_change(tmp_path: Path, report) -> None:
    """A chain with a byte changed, a line dropped or swapped, or its end cut never verifies unchanged."""
    counter = [0]
    original = tmp_path / "chain.jsonl"
    key = b"fuzz-installation-key-0123456789"
    audit_file = AuditFile(original, max_bytes=10**9, key=key)
    for n in range(6):
        audit_file.append(
            {
                "ts": f"2026-01-01T00:00:0{n}Z",
                "event": "rotation.started",
                "level": "info",
                "credential": "sf",
                "n": n,
            }
        )
    good = original.read_bytes()
    head = verify([original], key=key).head
    assert verify([original], key=key).ok
    path = tmp_path / "audit.jsonl"
    lines = good.split(b"\n")[:-1]

    @fuzz(400)
    @given(
        st.one_of(
            st.tuples(st.just("byte"), st.integers(0, len(good) - 1), st.integers(0, 255)),
            st.tuples(st.just("drop"), st.integers(0, len(lines) - 1), st.just(0)),
            st.tuples(st.just("swap"), st.integers(0, len(lines) - 2), st.just(0)),
            st.tuples(st.just("cut"), st.integers(1, len(good) - 1), st.just(0)),
        )
    )
    def run(change: tuple[str, int, int]) -> None:
        counter[0] += 1
        kind, at, value = change
        if kind == "byte":
            if good[at] == value:
                return
            data = good[:at] + bytes([value]) + good[at + 1 :]
        elif kind == "drop":
            data = b"\n".join(lines[:at] + lines[at + 1 :]) + b"\n"
        elif kind == "swap":
            swapped = [*lines]
            swapped[at], swapped[at + 1] = swapped[at + 1], swapped[at]
            data = b"\n".join(swapped) + b"\n"
        else:
            data = good[:at]
        path.write_bytes(data)
        try:
            verdict = verify([path], key=key)
        except InputError:
            return
        if kind == "cut" and data.endswith(b"\n"):
            # whole lines cut from the end: only the recorded head shows it (documented)
            assert not verdict.ok or verdict.head != head
            return
        assert not verdict.ok or verdict.head != head, (kind, at, value)

    try:
        run()
    finally:
        path.unlink(missing_ok=True)
    _count(report, "audit verifier: changed chains", counter)
