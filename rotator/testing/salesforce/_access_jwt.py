"""JWT-based access tokens, as External Client Apps can issue them, signed by the emulator.

Salesforce can issue an access token that is itself a JWT (RS256, with `exp`) instead of an
opaque session id. The emulator signs them with its own RSA key (made on first use) and
serves the public half as a JWK set at ``/id/keys``. Nothing about the claim set is promised
beyond what a client may read: `iss`, `sub`, `aud`, `client_id`, `scp`, `iat`, `nbf`, `exp`, `jti`.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class AccessTokenSigner:
    """The emulator's signing key for JWT access tokens (RSA-2048, generated lazily)."""

    def __init__(self) -> None:
        self._key: rsa.RSAPrivateKey | None = None
        self.kid = secrets.token_hex(4)

    def _private(self) -> rsa.RSAPrivateKey:
        if self._key is None:
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self._key

    def sign(self, claims: dict[str, Any], *, tenant: str) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid, "tnk": tenant}
        signing_input = (
            _b64(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self._private().sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    def jwks(self) -> dict[str, Any]:
        numbers = self._private().public_key().public_numbers()
        return {"keys": [{
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
            "n": _int_b64(numbers.n), "e": _int_b64(numbers.e),
        }]}

    def public_key(self) -> rsa.RSAPublicKey:
        return self._private().public_key()
