"""RS256 JWT assertions signed by a key service: the keyless twin of
:class:`rotator.keys.signer.PemSigner`.

Same interface as the PEM signer (``sign(claims) -> str``, ``algorithm``, ``cert_sha256``), so the
engine can mint with either. The JWT is assembled here (RFC 7515 compact serialisation:
base64url header ``{"alg":"RS256","typ":"JWT"}``, base64url claims, base64url signature), and the
key service only signs the ``header.payload`` bytes.

Every signature is verified locally against the certificate's public key before it is used:
it costs ~0.1 ms, and a key service answering with the wrong key version, a different key or
garbage is caught here — not by Salesforce, where each rejected login counts against the org.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from rotator.errors import KeyMaterialError
from rotator.keys.remote.base import RemoteKey

_HEADER = base64.urlsafe_b64encode(
    json.dumps({"alg": "RS256", "typ": "JWT"}, separators=(",", ":")).encode()
).rstrip(b"=")


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class RemoteSigner:
    """Mints RS256 assertions with a :class:`RemoteKey`; checks each signature with `public_key`."""

    algorithm = "RS256"

    def __init__(self, key: RemoteKey, cert_sha256: str, public_key: rsa.RSAPublicKey | None = None) -> None:
        self.key = key
        self.cert_sha256 = cert_sha256
        # The certificate's public key when given (what Salesforce will verify with), else the key's.
        self._public = public_key if public_key is not None else key.public_key()

    def __repr__(self) -> str:
        return f"<RemoteSigner {self.key.reference} cert {self.cert_sha256[:16]}>"

    def sign_bytes(self, message: bytes) -> bytes:
        signature = self.key.sign(message)
        try:
            self._public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise KeyMaterialError(
                f"{self.key.reference}: the key service's signature does not verify with the "
                f"certificate {self.cert_sha256[:16]}",
                hint="the key reference and the certificate belong to different keys; "
                     "run `rotator check` and re-make the certificate if needed",
            ) from None
        return signature

    def sign(self, claims: dict[str, Any]) -> str:
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = _HEADER + b"." + payload
        return (signing_input + b"." + b64url(self.sign_bytes(signing_input))).decode("ascii")
