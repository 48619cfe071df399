"""What every key service signer offers, and the checks they share.

A :class:`RemoteKey` is one fixed key (a Transit key *version*, a KMS key id) that signs
RSASSA-PKCS1-v1_5 with SHA-256 (RS256) somewhere else. It never exposes private material: it
has a reference (for messages and records), a public key and ``sign``.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric import rsa

# The RSA sizes both key services offer that Salesforce accepts (as rotator.keys.crypto.ALLOWED_RSA_BITS).
RSA_BITS = (2048, 3072, 4096)


@runtime_checkable
class RemoteKey(Protocol):
    """One signing key held by a key service."""

    @property
    def reference(self) -> str:
        """Where the key lives, e.g. ``transit/sf-prod v3`` or a KMS key ARN: not secret."""
        ...

    @property
    def key_size(self) -> int:
        """RSA modulus bits: a signature is exactly ``key_size // 8`` bytes."""
        ...

    def public_key(self) -> rsa.RSAPublicKey:
        ...

    def sign(self, message: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 over SHA-256(message), made by the key service."""
        ...


def sha256(message: bytes) -> bytes:
    return hashlib.sha256(message).digest()
