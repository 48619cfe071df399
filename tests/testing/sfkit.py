"""Shared pieces of the Salesforce emulator tests: keys, certificates, signing, a moving clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from rotator.testing.salesforce import JWT_BEARER_GRANT, SalesforceEndpoint

CLIENT_ID = "3MVG9TEST.CONSUMER.KEY"
USER = "bot@example.com"
LOGIN = "https://login.salesforce.com"
INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


class Clock:
    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rotator test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def sign(key: rsa.RSAPrivateKey, now: float, **changes: Any) -> str:
    claims: dict[str, Any] = {"iss": CLIENT_ID, "sub": USER, "aud": LOGIN, "exp": int(now) + 180}
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jwt.encode(claims, key, algorithm="RS256")


def post_token(sf: SalesforceEndpoint, assertion: str, **kwargs: Any) -> requests.Response:
    form = {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
    return requests.post(sf.token_url, data=form, timeout=10, **kwargs)


def mint(sf: SalesforceEndpoint, key: rsa.RSAPrivateKey, now: float, **changes: Any) -> str:
    reply = post_token(sf, sign(key, now, **changes))
    assert reply.status_code == 200, reply.text
    return str(reply.json()["access_token"])


def get(sf: SalesforceEndpoint, path: str, token: str | None, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{sf.url}{path}", params=params, headers=headers, timeout=10)
