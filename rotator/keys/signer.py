"""The Signer interface: what the engine needs from a key to mint a JWT-bearer assertion.

The engine and the key lifecycle see only `Signer`; `PemSigner` (a private key loaded from
the key record's PEM) is today's implementation. A signer whose key lives elsewhere (Vault
Transit, AWS KMS) implements the same two members.
"""

from __future__ import annotations

from typing import Any, Protocol

import jwt

from rotator.keys.crypto import PrivateKey


class Signer(Protocol):
    """Signs assertions; names the certificate (SHA-256 of its DER) that verifies them."""

    @property
    def cert_sha256(self) -> str: ...

    def sign(self, claims: dict[str, Any]) -> str:
        """The compact JWS of `claims`; raises RotatorError if the key cannot sign."""
        ...


class PemSigner:
    """A loaded key plus its certificate's fingerprint: mints assertions without re-parsing."""

    def __init__(self, key: PrivateKey, algorithm: str, cert_sha256: str) -> None:
        self.key = key
        self.algorithm = algorithm
        self.cert_sha256 = cert_sha256

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm=self.algorithm, headers={"typ": "JWT"})
