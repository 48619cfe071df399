"""The two record shapes of CONTRACT.md: the key record and the token record.

Both are one JSON object wherever they live. Secret fields are excluded from repr so that a
record in a traceback or a debug line never shows key material or a token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rotator.clock import parse_rfc3339, rfc3339
from rotator.errors import RecordError

MAX_PEM_CHARS = 64 * 1024
# Token timestamps rotator can compute deadlines from (datetime arithmetic overflows near 1 and 9999).
MIN_YEAR, MAX_YEAR = 1970, 9000


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its key: the key's PEM, or for a keyless signer (docs/keyless.md) a
    reference to a key that never leaves Vault Transit / AWS KMS (`private_key` is None)."""

    private_key: str | None = field(repr=False)
    certificate: str = field(repr=False)
    passphrase: str | None = field(default=None, repr=False)
    # keyless: the Transit key name (+ key_version) or the KMS key ARN; not secret
    key_ref: str | None = None
    key_version: int | None = None

    @property
    def remote(self) -> bool:
        return self.key_ref is not None


# Fields of the key record, by role. The first three are what an operator writes by hand; a
# keyless pair has the certificate, key_ref and (Transit) key_version instead of a private key.
_SLOTS = {
    "current": ("private_key", "certificate", "passphrase", "key_ref", "key_version"),
    "pending": ("pending_private_key", "pending_certificate", "pending_passphrase",
                "pending_key_ref", "pending_key_version"),
    "previous": ("previous_private_key", "previous_certificate", "previous_passphrase",
                 "previous_key_ref", "previous_key_version"),
}
MAX_KEY_REF_CHARS = 2048
MAX_KEY_VERSION = 10**6
_KEY_REF = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces


@dataclass(frozen=True)
class KeyRecord:
    current: KeyPair
    pending: KeyPair | None = None
    previous: KeyPair | None = None
    # anything else in the record (operator notes, timestamps); kept on rewrite
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    # what was wrong with a pending/previous slot that had to be ignored (never the values)
    damaged: tuple[str, ...] = ()

    @classmethod
    def from_data(cls, data: Any, *, where: str) -> KeyRecord:
        if not isinstance(data, dict):
            raise RecordError(where, "key record is not a JSON object")
        pairs: dict[str, KeyPair | None] = {}
        damaged: list[str] = []
        for role, names in _SLOTS.items():
            try:
                pairs[role] = _pair(data, names, where, required=(role == "current"))
            except RecordError as exc:
                if role == "current":
                    raise
                # A half-written pending/previous slot must not stop the current key signing.
                pairs[role] = None
                damaged.append(exc.diagnostics())
        extra = {
            k: v for k, v in data.items() if not any(k in names for names in _SLOTS.values())
        }
        current = pairs["current"]
        assert current is not None
        if damaged:
            # keep the damaged fields as they are, so a rewrite does not silently drop them
            names = [n for role in ("pending", "previous") if pairs[role] is None for n in _SLOTS[role]]
            extra.update({n: data[n] for n in names if n in data})
        return cls(current, pairs["pending"], pairs["previous"], extra, tuple(damaged))

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        for role, names in _SLOTS.items():
            pair: KeyPair | None = getattr(self, role)
            if pair is None:
                continue
            data[names[1]] = pair.certificate
            if pair.key_ref is not None:  # keyless: never a private_key field
                data[names[3]] = pair.key_ref
                if pair.key_version is not None:
                    data[names[4]] = pair.key_version
                continue
            data[names[0]] = pair.private_key
            if pair.passphrase:
                data[names[2]] = pair.passphrase
        return data


def _pair(data: dict[str, Any], names: tuple[str, ...], where: str, *, required: bool):
    key_name, cert_name, pass_name, ref_name, version_name = names
    if key_name not in data and cert_name not in data and ref_name not in data:
        if required:
            raise RecordError(
                where,
                "key record has no private_key/certificate (nor key_ref/certificate)",
                hint="write it with `rotator keys init` or `keys import`",
            )
        return None
    remote = ref_name in data
    if remote and (key_name in data or pass_name in data):
        raise RecordError(where, f"{ref_name} and {key_name}/{pass_name} exclude each other",
                          hint="a keyless record holds the certificate and the key reference only")
    for name in (ref_name if remote else key_name, cert_name):
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise RecordError(where, f"{name} is missing or not a string")
        if len(value) > MAX_PEM_CHARS:
            raise RecordError(where, f"{name} is larger than {MAX_PEM_CHARS} characters")
    if remote:
        ref = data[ref_name]
        if len(ref) > MAX_KEY_REF_CHARS or not _KEY_REF.fullmatch(ref):
            raise RecordError(where, f"{ref_name} is not a key reference (printable, no spaces, "
                              f"at most {MAX_KEY_REF_CHARS} characters)")
        version = data.get(version_name)
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                    or not 1 <= version <= MAX_KEY_VERSION):
            raise RecordError(where, f"{version_name} must be a key version number")
        return KeyPair(None, data[cert_name], None, ref, version)
    if version_name in data:
        raise RecordError(where, f"{version_name} without {ref_name}")
    passphrase = data.get(pass_name)
    if passphrase is not None and not isinstance(passphrase, str):
        raise RecordError(where, f"{pass_name} must be a string")
    return KeyPair(data[key_name], data[cert_name], passphrase or None)


@dataclass(frozen=True)
class TokenRecord:
    access_token: str = field(repr=False)
    instance_url: str | None
    token_type: str
    scope: str | None
    id: str | None
    issued_at: datetime
    # the endpoint's expires_in; for Salesforce a JWT access token's exp, else the estimate
    # issued_at + session_timeout (Salesforce counts from last use: docs/salesforce.md); else None
    expires_at: datetime | None
    credential: str
    key_sha256: str
    rotation_id: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "instance_url": self.instance_url,
            "token_type": self.token_type,
            "scope": self.scope,
            "id": self.id,
            "issued_at": rfc3339(self.issued_at),
            "expires_at": rfc3339(self.expires_at) if self.expires_at else None,
            "credential": self.credential,
            "key_sha256": self.key_sha256,
            "rotation_id": self.rotation_id,
        }

    @classmethod
    def from_data(cls, data: Any, *, where: str) -> TokenRecord:
        if not isinstance(data, dict):
            raise RecordError(where, "token record is not a JSON object")
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise RecordError(where, "access_token is missing or not a string")
        try:
            issued = parse_rfc3339(data["issued_at"])
            expires_raw = data.get("expires_at")
            expires = parse_rfc3339(expires_raw) if expires_raw else None
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            raise RecordError(where, "issued_at/expires_at are not RFC 3339 timestamps") from None
        if not all(MIN_YEAR <= t.year <= MAX_YEAR for t in (issued, expires) if t is not None):
            raise RecordError(where, f"issued_at/expires_at are outside the years {MIN_YEAR}-{MAX_YEAR}")
        for name in ("instance_url", "scope", "id", "rotation_id"):
            if data.get(name) is not None and not isinstance(data[name], str):
                raise RecordError(where, f"{name} must be a string or null")
        return cls(
            access_token=token,
            instance_url=data.get("instance_url"),
            token_type=str(data.get("token_type") or "Bearer"),
            scope=data.get("scope"),
            id=data.get("id"),
            issued_at=issued,
            expires_at=expires,
            credential=str(data.get("credential") or ""),
            key_sha256=str(data.get("key_sha256") or ""),
            rotation_id=data.get("rotation_id"),
        )

    def age(self, now: datetime) -> float:
        return (now - self.issued_at).total_seconds()
