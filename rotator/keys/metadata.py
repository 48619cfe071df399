"""The Metadata API publication target, as the key lifecycle sees it.

The lifecycle may not import providers or the engine (DEVELOPING.md: layers), so the engine
hands it a `CertificatePublisher` in the `KeyContext`: an object that reads and replaces the
app's one certificate with a session the engine supplies (rotator.providers.metadata).
This module turns one replacement into the details of a `key.published` event, and checks
what was read back.
"""

from __future__ import annotations

from typing import Any, Protocol

from rotator.errors import RotatorError
from rotator.keys.crypto import cert_info_from_pem


class CertificatePublisher(Protocol):
    app: str
    type_name: str
    via: str

    def read(self) -> str | None:
        """The certificate the app holds now (None: none)."""
        ...

    def replace(self, pem: str) -> tuple[str | None, str | None]:
        """Put `pem` in place of the app's certificate: (the old one, the one read back)."""
        ...


class PublishMismatch(RotatorError):
    """The app reads back a certificate other than the one just published."""


def sha256_or_none(pem: str | None) -> str | None:
    if not pem:
        return None
    try:
        return cert_info_from_pem(pem).sha256
    except RotatorError:
        return None  # the app holds something that is not a certificate


def publish_to_app(publisher: CertificatePublisher, pem: str, sha256: str) -> dict[str, Any]:
    """Replace the app's certificate with `pem` and prove it by reading it back."""
    old, back = publisher.replace(pem)
    back_sha = sha256_or_none(back)
    if back_sha != sha256:
        raise PublishMismatch(
            f"{publisher.type_name} {publisher.app}: after the update the app holds "
            f"{(back_sha or 'no certificate')[:16]}, not {sha256[:16]}",
            hint="another writer may have changed the app at the same moment; the next run retries",
        )
    return {"app": publisher.app, "type": publisher.type_name, "via": publisher.via,
            "previous_sha256": sha256_or_none(old)}
