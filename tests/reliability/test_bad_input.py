"""Bad input: malformed configs, key records, certificates and token responses, one table.

Each row runs one CLI command (in-process, output captured) and must end with the right exit
code and its one-line error — `rotator: error: ...` on stderr for bad usage, config or input
(exit 2), a `FAILED` line from `check`, or the JSON line of `rotate` for a rotation the input
broke (exit 1) — matching the row's pattern. No row may produce a traceback or an "internal
error" (an exception rotator did not convert). A few rows also run in a real child process.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from rotator.keys.crypto import cert_to_pem, key_to_pem, self_signed_certificate
from tests.conftest import CLIENT_ID, run_rotator, write_config

pytestmark = pytest.mark.integration

DEEP = "[" * 100_000 + "]" * 100_000  # nested deeper than Python's recursion limit


# ---------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Material:
    rsa1024_key: str
    rsa1024_cert: str
    ec_key: str
    ec_cert: str
    encrypted_key: str  # rsa_keys[0], encrypted with "correct horse"


@pytest.fixture(scope="module")
def material(rsa_keys) -> Material:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point
    curve = ec.generate_private_key(ec.SECP256R1())
    base = serialization.load_pem_private_key(rsa_keys[0].key_pem.encode(), password=None)
    encrypted = base.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"correct horse"),
    ).decode()
    return Material(
        key_to_pem(small),
        cert_to_pem(self_signed_certificate(small, common_name="small")),
        key_to_pem(curve),
        cert_to_pem(self_signed_certificate(curve, common_name="ec")),
        encrypted,
    )


class Stub:
    """A token endpoint that answers every POST with one canned reply."""

    def __init__(self) -> None:
        self.reply: tuple[int, str, bytes] = (200, "application/json", b"{}")
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, ctype, body = stub.reply
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if status in (301, 302):
                    self.send_header("Location", "https://evil.example.com/token")
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                return None  # the client hung up on a huge reply, as it should

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stub() -> Any:
    server = Stub()
    yield server
    server.stop()


@dataclass
class Env:
    tmp: Path
    keys: Any
    material: Material
    stub: Stub

    @property
    def config(self) -> Path:
        return self.tmp / "rotator.toml"

    def write(
        self,
        *,
        cred: dict[str, Any] | None = None,
        stores: str | None = None,
        daemon: dict[str, Any] | None = None,
        edit: Callable[[str], str] | None = None,
        login_url: str | None = None,
    ) -> Path:
        write_config(
            self.config,
            login_url=login_url or self.stub.url,
            stores=stores,
            credentials={"sf": cred or {}},
            daemon=daemon,
        )
        if edit is not None:
            self.config.write_text(edit(self.config.read_text()))
        return self.config

    def key_record(self, data: Any, *, raw: bytes | None = None) -> None:
        target = self.tmp / "store" / "sf" / "key.json"
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        target.write_bytes(raw if raw is not None else json.dumps(data).encode())

    def good_key(self, **extra: Any) -> dict[str, Any]:
        return {"private_key": self.keys[0].key_pem, "certificate": self.keys[0].cert_pem, **extra}

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path


# ---------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # config | key record | certificate | token response | token record
    code: int
    pattern: str  # the one-line error must match this
    prepare: Callable[[Env], list[str]]  # sets things up, returns the CLI arguments
    channel: str = "stderr"  # stderr | check | rotate


def _check(env: Env) -> list[str]:
    return ["--config", str(env.config), "check"]


def cfg(case_id: str, pattern: str, code: int = 2, **write: Any) -> Case:
    def prepare(env: Env) -> list[str]:
        env.write(**write)
        return _check(env)

    return Case(case_id, "config", code, pattern, prepare)


def raw_cfg(case_id: str, pattern: str, text: str | bytes) -> Case:
    def prepare(env: Env) -> list[str]:
        env.file("rotator.toml", text)
        return _check(env)

    return Case(case_id, "config", 2, pattern, prepare)


def sub(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return edit


def add(line: str) -> Callable[[str], str]:
    return lambda text: text + line + "\n"


CONFIGS = [
    raw_cfg("invalid TOML", r"rotator\.toml: invalid TOML: ", "[daemon\nlisten = 1\n"),
    raw_cfg("not UTF-8", r"rotator\.toml: not UTF-8 text", b'[daemon]\nlisten = "\xff\xfe"\n'),
    raw_cfg("TOML nested too deeply", r"invalid TOML: nested too deeply", "a = " + DEEP[:4000] + "\n"),
    Case(
        "config file missing",
        "config",
        2,
        r"nowhere\.toml: config file not found \(pass --config",
        lambda env: ["--config", str(env.tmp / "nowhere.toml"), "check"],
    ),
    Case(
        "config is a directory",
        "config",
        2,
        r": cannot read config \(Is a directory\)",
        lambda env: ["--config", str(env.tmp), "check"],
    ),
    cfg(
        "unknown section",
        r"^extra: unknown section \(allowed: daemon, stores, credentials\)",
        edit=add("[extra]\nx = 1"),
    ),
    cfg("unknown key", r"^credentials\.sf\.colour: unknown key", cred={"colour": "red"}),
    cfg("every not a duration", r"^credentials\.sf\.every: 'soon' is not a duration", cred={"every": "soon"}),
    cfg("every negative", r"^credentials\.sf\.every: a duration cannot be negative", cred={"every": -5}),
    cfg("every below 1s", r"^credentials\.sf\.every: must be at least 1s", cred={"every": "500ms"}),
    cfg(
        "every NaN",
        r"^credentials\.sf\.every: a duration must be a finite number",
        edit=sub('every = "30m"', "every = nan"),
    ),
    cfg(
        "every inf",
        r"^credentials\.sf\.every: a duration must be a finite number",
        edit=sub('every = "30m"', "every = inf"),
    ),
    cfg(
        "every 1e20 seconds",
        r"^credentials\.sf\.every: a duration must be a finite number.*10 years",
        edit=sub('every = "30m"', "every = 1e20"),
    ),
    cfg(
        "every over 10 years",
        r"^credentials\.sf\.every: '4000d' is longer than 10 years",
        cred={"every": "4000d"},
    ),
    cfg("every a boolean", r"^credentials\.sf\.every: expected a duration string", cred={"every": True}),
    cfg("timeout 0s", r"^credentials\.sf\.timeout: Input should be greater than 0", cred={"timeout": "0s"}),
    cfg(
        "jitter not below every",
        r"^credentials\.sf: jitter must be smaller than every",
        cred={"every": "5m", "jitter": "5m"},
    ),
    cfg(
        "http login_url off loopback",
        r"^credentials\.sf\.login_url: http:// is only allowed for loopback",
        login_url="http://login.salesforce.com",
    ),
    cfg(
        "credentials in login_url",
        r"^credentials\.sf\.login_url: credentials in a URL are not allowed",
        login_url="https://user:pw@login.salesforce.com",
    ),
    cfg(
        "login_url not http(s)",
        r"^credentials\.sf\.login_url: 'ftp://x' is not an http\(s\) URL",
        login_url="ftp://x",
    ),
    cfg(
        "unknown store in ref",
        r"^credentials\.sf\.key: unknown store 'vault' \(stores: local\)",
        cred={"key": "vault:sf/key"},
    ),
    cfg(
        "ref climbs out",
        r"^credentials\.sf\.key: '\.\./etc/passwd' contains '\.' or '\.\.'",
        cred={"key": "local:../etc/passwd"},
    ),
    cfg(
        "ref absolute",
        r"^credentials\.sf\.token: '/etc/shadow' is absolute",
        cred={"token": "local:/etc/shadow"},
    ),
    cfg("ref without store", r"^credentials\.sf\.key: expected STORE:PATH", cred={"key": "sf-key"}),
    cfg(
        "token same as key", r"^credentials\.sf\.token: must differ from key", cred={"token": "local:sf/key"}
    ),
    cfg(
        "unknown store type",
        r"^stores\.local\.type: expected one of file, vault, aws \(got 's3'\)",
        stores='[stores.local]\ntype = "s3"',
    ),
    cfg(
        "unknown provider",
        r"^credentials\.sf\.provider: Input should be 'salesforce' or 'jwt-bearer'",
        cred={"provider": "okta"},
    ),
    cfg(
        "client_id missing", r"^credentials\.sf\.client_id: required key is missing", cred={"client_id": None}
    ),
    cfg(
        "salesforce without username", r"^credentials\.sf: salesforce needs username", cred={"username": None}
    ),
    cfg(
        "salesforce with ES256",
        r"^credentials\.sf: salesforce accepts only RS256",
        cred={"algorithm": "ES256"},
    ),
    cfg(
        "assertion lifetime over 3m",
        r"^credentials\.sf: salesforce wants exp within 3 minutes",
        cred={"assertion_lifetime": "10m"},
    ),
    cfg(
        "retry_min above retry_max",
        r"^credentials\.sf: retry_min is larger than retry_max",
        cred={"retry_min": "1h", "retry_max": "1m"},
    ),
    cfg(
        "request cap 0",
        r"^credentials\.sf\.max_requests_per_hour: Input should be greater than or equal to 1",
        cred={"max_requests_per_hour": 0},
    ),
    cfg(
        "request cap a word",
        r"^credentials\.sf\.max_requests_per_hour: Input should be a valid integer",
        cred={"max_requests_per_hour": "many"},
    ),
    cfg(
        "bad credential name",
        r"^credentials\.bad name!: names use letters",
        edit=sub("[credentials.sf]", '[credentials."bad name!"]'),
    ),
    cfg("listen not HOST:PORT", r"^daemon\.listen: 'nowhere' is not HOST:PORT", daemon={"listen": "nowhere"}),
    cfg("workers 0", r"^daemon\.workers: Input should be greater than or equal to 1", daemon={"workers": 0}),
    cfg(
        "vault over plain http",
        r"^stores\.vault\.url: http:// is only allowed for loopback",
        stores='[stores.local]\ntype = "file"\npath = "store"\n[stores.vault]\ntype = "vault"\n'
        'url = "http://vault.example.com:8200"',
    ),
    cfg(
        "approle without files",
        r"^stores\.vault\.auth: approle auth needs role_id_file and secret_id_file",
        stores='[stores.local]\ntype = "file"\npath = "store"\n[stores.vault]\ntype = "vault"\n'
        'url = "https://vault.example.com:8200"\nauth = { method = "approle" }',
    ),
    cfg(
        "aws endpoint over plain http",
        r"^stores\.aws\.endpoint_url: http:// is only allowed for loopback",
        stores='[stores.local]\ntype = "file"\npath = "store"\n[stores.aws]\ntype = "aws"\n'
        'endpoint_url = "http://secretsmanager.example.com"',
    ),
    cfg(
        "jwt-bearer without token_url",
        r"^credentials\.sf: jwt-bearer needs token_url",
        cred={"provider": "jwt-bearer"},
    ),
    cfg(
        "extra_claims override iss",
        r"^credentials\.sf\.extra_claims: cannot override iss",
        cred={
            "provider": "jwt-bearer",
            "token_url": "https://auth.example.com/token",
            "extra_claims": {"iss": "me"},
        },
    ),
    cfg("store not a table", r"^stores\.local: expected a table", stores='[stores]\nlocal = "file"'),
    cfg(
        "vault timeout 0",
        r"^stores\.vault\.timeout: Input should be greater than 0",
        stores='[stores.local]\ntype = "file"\npath = "store"\n[stores.vault]\ntype = "vault"\n'
        'url = "https://vault.example.com:8200"\ntimeout = 0',
    ),
]


def key_case(
    case_id: str,
    pattern: str,
    code: int,
    record: Callable[[Env], Any] | None = None,
    raw: Callable[[Env], bytes] | None = None,
) -> Case:
    def prepare(env: Env) -> list[str]:
        env.write()
        if raw is not None:
            env.key_record(None, raw=raw(env))
        elif record is not None:
            env.key_record(record(env))
        return _check(env)

    return Case(case_id, "key record", code, pattern, prepare, channel="check")


def _pem_garbage(label: str) -> str:
    return f"-----BEGIN {label}-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END {label}-----\n"


KEY_RECORDS = [
    key_case("no key record", r"local:sf/key: no key record \(create one with `rotator keys init sf`", 1),
    key_case(
        "key record not JSON", r"local:sf/key: record is not valid JSON", 1, raw=lambda e: b"private_key=..."
    ),
    key_case(
        "key record a JSON array", r"local:sf/key: record is not a JSON object", 1, record=lambda e: [1, 2]
    ),
    key_case(
        "key record nested too deeply",
        r"local:sf/key: record is not valid JSON",
        1,
        raw=lambda e: DEEP.encode(),
    ),
    key_case(
        "key record over 1 MiB",
        r"local:sf/key: record is larger than 1048576 bytes",
        1,
        raw=lambda e: b'{"x": "' + b"a" * (1024 * 1024) + b'"}',
    ),
    key_case(
        "no private_key/certificate",
        r"key record has no private_key/certificate",
        1,
        record=lambda e: {"note": "empty"},
    ),
    key_case(
        "private_key a number",
        r"private_key is missing or not a string",
        1,
        record=lambda e: e.good_key(private_key=42),
    ),
    key_case(
        "certificate missing",
        r"certificate is missing or not a string",
        1,
        record=lambda e: {"private_key": e.keys[0].key_pem},
    ),
    key_case(
        "private_key over 64 KiB",
        r"private_key is larger than 65536 characters",
        1,
        record=lambda e: e.good_key(private_key="A" * 70_000),
    ),
    key_case(
        "passphrase a number", r"passphrase must be a string", 1, record=lambda e: e.good_key(passphrase=7)
    ),
    key_case(
        "private_key not PEM",
        r"local:sf/key: not a PEM private key \(no BEGIN line\)",
        2,
        record=lambda e: e.good_key(private_key="MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
    ),
    key_case(
        "private_key malformed PEM",
        r"local:sf/key: malformed PEM private key",
        2,
        record=lambda e: e.good_key(private_key=_pem_garbage("PRIVATE KEY")),
    ),
    key_case(
        "certificate not PEM",
        r"local:sf/key: not a PEM certificate",
        2,
        record=lambda e: e.good_key(certificate="hello"),
    ),
    key_case(
        "certificate malformed PEM",
        r"local:sf/key: malformed PEM certificate",
        2,
        record=lambda e: e.good_key(certificate=_pem_garbage("CERTIFICATE")),
    ),
    key_case(
        "certificate with a lone surrogate",
        r"local:sf/key: not a PEM certificate \(not plain text\)",
        2,
        raw=lambda e: json.dumps(e.good_key(certificate=e.keys[0].cert_pem + "\ud800")).encode(),
    ),
    key_case(
        "key and certificate mismatch",
        r"private_key does not match certificate",
        2,
        record=lambda e: e.good_key(certificate=e.keys[1].cert_pem),
    ),
    key_case(
        "RSA-1024 key",
        r"RSA key is 1024 bits; at least 2048 are required",
        2,
        record=lambda e: {"private_key": e.material.rsa1024_key, "certificate": e.material.rsa1024_cert},
    ),
    key_case(
        "EC key for Salesforce",
        r"RS256 needs an RSA key, this is an EC key",
        2,
        record=lambda e: {"private_key": e.material.ec_key, "certificate": e.material.ec_cert},
    ),
    key_case(
        "encrypted key, no passphrase",
        r"the key is encrypted \(add its passphrase\)",
        2,
        record=lambda e: e.good_key(private_key=e.material.encrypted_key),
    ),
    key_case(
        "encrypted key, wrong passphrase",
        r"wrong passphrase or corrupt key",
        2,
        record=lambda e: e.good_key(private_key=e.material.encrypted_key, passphrase="wrong"),
    ),
]


def import_case(case_id: str, pattern: str, key: Callable[[Env], Any], cert: Callable[[Env], Any]) -> Case:
    def prepare(env: Env) -> list[str]:
        env.write()
        args = ["--config", str(env.config), "keys", "import", "sf"]
        key_value, cert_value = key(env), cert(env)
        key_path = env.file("server.key", key_value) if key_value is not None else env.tmp / "missing.key"
        cert_path = env.file("server.crt", cert_value) if cert_value is not None else env.tmp / "missing.crt"
        return [*args, "--key", str(key_path), "--cert", str(cert_path)]

    return Case(case_id, "certificate", 2, pattern, prepare)


def _der(env: Env) -> bytes:
    from cryptography import x509

    return x509.load_pem_x509_certificate(env.keys[0].cert_pem.encode()).public_bytes(
        serialization.Encoding.DER
    )


CERTIFICATES = [
    import_case(
        "certificate file is a key",
        r"server\.crt: not a PEM certificate",
        lambda e: e.keys[0].key_pem,
        lambda e: e.keys[0].key_pem,
    ),
    import_case(
        "certificate file is DER", r"server\.crt: not PEM text \(DER\?", lambda e: e.keys[0].key_pem, _der
    ),
    import_case(
        "certificate file garbage PEM",
        r"server\.crt: malformed PEM certificate",
        lambda e: e.keys[0].key_pem,
        lambda e: _pem_garbage("CERTIFICATE"),
    ),
    import_case(
        "certificate of another key",
        r"server\.key and .*server\.crt: private_key does not match",
        lambda e: e.keys[0].key_pem,
        lambda e: e.keys[1].cert_pem,
    ),
    import_case(
        "certificate file missing",
        r"missing\.crt: file not found",
        lambda e: e.keys[0].key_pem,
        lambda e: None,
    ),
    import_case(
        "certificate file too large",
        r"server\.crt: larger than 65536 bytes",
        lambda e: e.keys[0].key_pem,
        lambda e: "A" * 70_000,
    ),
    import_case(
        "key file is a certificate",
        r"server\.key: malformed PEM private key",
        lambda e: e.keys[0].cert_pem,
        lambda e: e.keys[0].cert_pem,
    ),
]


def reply_case(
    case_id: str, pattern: str, status: int, ctype: str, body: bytes | Callable[[Env], bytes]
) -> Case:
    def prepare(env: Env) -> list[str]:
        env.write()
        env.key_record(env.good_key())
        env.stub.reply = (status, ctype, body(env) if callable(body) else body)
        return ["--config", str(env.config), "rotate", "sf"]

    return Case(case_id, "token response", 1, pattern, prepare, channel="rotate")


JSON = "application/json;charset=UTF-8"


def _ok(**fields: Any) -> Callable[[Env], bytes]:
    def body(env: Env) -> bytes:
        data = {
            "access_token": "00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog.39AsX.LVpxezPwuX5VAIrrbbHMuol7o",
            "instance_url": env.stub.url,
            "id": env.stub.url + "/id/00D/005",
            "token_type": "Bearer",
            "scope": "api",
            "issued_at": "1700000000000",
        }
        data.update(fields)
        return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()

    return body


TOKEN_RESPONSES = [
    reply_case(
        "reply not JSON",
        r"HTTP 200 reply is not JSON \(application/json\)",
        200,
        JSON,
        b'{"access_token":"00D',
    ),
    reply_case(
        "reply an HTML page",
        r"HTTP 200 reply is not JSON \(text/html\)",
        200,
        "text/html",
        b"<html><body>Login</body></html>",
    ),
    reply_case("reply empty", r"HTTP 200 reply is not JSON", 200, JSON, b""),
    reply_case("reply a JSON array", r"HTTP 200 reply is not a JSON object", 200, JSON, b"[1, 2, 3]"),
    reply_case("reply nested too deeply", r"HTTP 200 reply is not JSON", 200, JSON, DEEP.encode()),
    reply_case(
        "reply over 1 MiB",
        r"reply larger than 1048576 bytes; refusing to read it",
        200,
        JSON,
        b'{"access_token": "' + b"x" * (2 * 1024 * 1024) + b'"}',
    ),
    reply_case(
        "access_token missing", r"token response has no usable access_token", 200, JSON, _ok(access_token=...)
    ),
    reply_case(
        "access_token a number",
        r"token response has no usable access_token",
        200,
        JSON,
        _ok(access_token=12345),
    ),
    reply_case(
        "access_token 10k characters",
        r"token response has no usable access_token",
        200,
        JSON,
        _ok(access_token="x" * 10_000),
    ),
    reply_case(
        "instance_url missing", r"token response has no instance_url", 200, JSON, _ok(instance_url=...)
    ),
    reply_case(
        "instance_url plain http off loopback",
        r"instance_url refused: http:// is only allowed for loopback hosts",
        200,
        JSON,
        _ok(instance_url="http://evil.example.com"),
    ),
    reply_case("scope a list", r"token response field scope is not a string", 200, JSON, _ok(scope=["api"])),
    reply_case(
        "token_type an object",
        r"token response field token_type is not a string",
        200,
        JSON,
        _ok(token_type={"a": 1}),
    ),
    reply_case(
        "400 without an OAuth error", r"HTTP 400 without an OAuth error", 400, JSON, b'{"message": "no"}'
    ),
    reply_case("error not a string", r"HTTP 401 without an OAuth error", 401, JSON, b'{"error": 42}'),
    reply_case("redirect to another host", r"HTTP 302", 302, JSON, b'{"moved": true}'),
]


def token_record_case(case_id: str, pattern: str, code: int, record: Any, command: str) -> Case:
    def prepare(env: Env) -> list[str]:
        env.write()
        env.key_record(env.good_key())
        target = env.tmp / "store" / "sf" / "token.json"
        target.write_bytes(record if isinstance(record, bytes) else json.dumps(record).encode())
        return ["--config", str(env.config), *command.split()]

    channel = "stderr" if command.startswith("token") else "rotate"
    return Case(case_id, "token record", code, pattern, prepare, channel=channel)


TOKEN_RECORDS = [
    token_record_case(
        "token record not JSON (token)",
        r"local:sf/token: record is not valid JSON",
        1,
        b"{not json",
        "token sf",
    ),
    token_record_case(
        "token record nested too deeply (token)",
        r"local:sf/token: record is not valid JSON",
        1,
        DEEP.encode(),
        "token sf",
    ),
]

CASES = CONFIGS + KEY_RECORDS + CERTIFICATES + TOKEN_RESPONSES + TOKEN_RECORDS


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}: {c.id}" for c in CASES])
def test_bad_input_gets_one_line_and_its_exit_code(
    case: Case, tmp_path, rsa_keys, material, stub, run_cli, report
) -> None:
    """The input is refused with the right exit code and one line matching the row; no traceback."""
    env = Env(tmp_path, rsa_keys, material, stub)
    args = case.prepare(env)
    try:
        result = run_cli(*args)
    finally:
        _drop_deep_records(tmp_path)
    everything = result.out + result.err
    line = _the_line(case, result)
    report.record(
        "bad_input", kind=case.kind, case=case.id, exit_code=result.code, line=line, order=CASES.index(case)
    )
    assert "Traceback" not in everything
    assert "internal error" not in everything
    assert result.code == case.code, (result.code, line, result.err[-500:])
    assert "\n" not in line
    assert re.search(case.pattern, line), line


def _drop_deep_records(root: Path) -> None:
    """The secret guard json-parses every *.json under tmp_path at teardown, and (like rotator
    before) does not survive a record nested deeper than the recursion limit: remove them."""
    for path in root.rglob("*.json*"):
        if path.is_file() and path.read_bytes()[:64] == DEEP.encode()[:64]:
            path.unlink()


def _the_line(case: Case, result: Any) -> str:
    """The one line that tells the operator what is wrong."""
    if case.channel == "rotate":
        (row,) = result.json_lines()
        assert row["ok"] is False and row["action"] == "failed"
        assert all(ln.startswith("{") for ln in result.err.splitlines()), result.err  # audit lines only
        return str(row["error"])
    if case.channel == "check":
        failed = [ln for ln in result.out.splitlines() if ln.startswith("credential sf: FAILED ")]
        assert len(failed) == 1, result.out
        if case.code == 2:  # the usage error is repeated as the one stderr line
            assert result.err.count("\n") == 1 and result.err.startswith("rotator: error: ")
        return failed[0].removeprefix("credential sf: FAILED ")
    errors = [ln for ln in result.err.splitlines() if not ln.startswith("{")]
    assert len(errors) == 1, result.err
    assert errors[0].startswith("rotator: error: ")
    return errors[0].removeprefix("rotator: error: ")


@pytest.mark.parametrize("text", ["every = nan", "a = " + DEEP[:4000]], ids=["every NaN", "deep TOML"])
def test_a_real_process_exits_2_with_one_line(tmp_path, text) -> None:
    """In a real child process too: exit 2, one line on stderr, nothing on stdout, no traceback."""
    config = write_config(
        tmp_path / "rotator.toml",
        login_url="https://login.salesforce.com",
        credentials={"sf": {"client_id": CLIENT_ID}},
    )
    if text.startswith("every"):
        config.write_text(config.read_text().replace('every = "30m"', text))
    else:
        config.write_text(text + "\n")
    done = run_rotator("--config", config, "check")
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1
    assert done.stderr.startswith("rotator: error: ") and "Traceback" not in done.stderr


UNUSABLE_TOKENS = {
    "issued_at a number": {"issued_at": 12345},
    "issued_at past year 9999 in UTC": {"issued_at": "9999-12-31T23:59:59-01:00"},
    "issued_at in year 9999": {"issued_at": "9999-12-31T23:59:59Z"},
    "expires_at in year 1": {"issued_at": "2026-01-01T00:00:00Z", "expires_at": "0001-01-01T00:00:00Z"},
    "nested too deeply": None,
}


@pytest.mark.parametrize("shape", list(UNUSABLE_TOKENS))
def test_unusable_token_record_is_replaced_not_fatal(
    shape, tmp_path, endpoint, rsa_keys, run_cli, report
) -> None:
    """A stored token record rotator cannot use is replaced by the next rotation; the daemon plans it."""
    from rotator.config import load_config
    from rotator.daemon.metrics import Metrics
    from rotator.daemon.scheduling import CountingEngine, Rotations
    from rotator.stores import StoreSet
    from tests.conftest import USERNAME

    config = write_config(tmp_path / "rotator.toml", login_url=endpoint.url)
    endpoint.register_app(CLIENT_ID, rsa_keys[0].cert_pem, users=[USERNAME])
    env = Env(tmp_path, rsa_keys, None, None)  # type: ignore[arg-type]
    env.key_record(env.good_key())
    token = tmp_path / "store" / "sf" / "token.json"
    body = UNUSABLE_TOKENS[shape]
    token.write_bytes(
        DEEP.encode() if body is None else json.dumps({"access_token": "abcdefghij", **body}).encode()
    )
    try:
        rotations = Rotations(Metrics(process=False), workers=1)
        loaded = load_config(config)
        rotations.use(CountingEngine(loaded, stores=StoreSet(loaded.stores), on_request=rotations.on_request))
        first = rotations.add("sf")  # the daemon's start-up planning
        assert first.timestamp() <= __import__("time").time() + 1  # runs at once: no usable token
        result = run_cli("--config", config, "rotate", "sf")
    finally:
        _drop_deep_records(tmp_path)
    unreadable = [json.loads(ln) for ln in result.err.splitlines() if '"token.unreadable"' in ln]
    report.record(
        "bad_input",
        kind="stored token record (replaced)",
        case=shape,
        exit_code=result.code,
        line=unreadable[0]["diagnosis"] if unreadable else "",
        order=1000 + list(UNUSABLE_TOKENS).index(shape),
    )
    assert result.code == 0, result.out + result.err
    assert result.json_lines()[0]["action"] == "rotated"
    assert len(unreadable) == 1
    assert json.loads(token.read_text())["access_token"] in endpoint.issued
