"""RS256 signing with a Vault (or OpenBao) Transit key, over hvac.

The private key never leaves Vault: rotator asks ``POST <mount>/sign/<name>`` for each signature
and reads public keys from ``GET <mount>/keys/<name>``. Only RSA keys sign RS256, so only the
Transit types ``rsa-2048``, ``rsa-3072`` and ``rsa-4096`` are accepted; a key that is exportable or
allows a plaintext backup is refused too (its private key *can* leave Vault).

* Every signature is made by one pinned key version (``key_version=N``): the current and the
  pending certificate of a staged rollover belong to two versions of the same Transit key, and
  Vault's "latest" moving underneath (someone runs ``rotate``) must not change which key signs.
* The input is the SHA-256 digest, sent with ``prehashed=true``, ``hash_algorithm=sha2-256``,
  ``signature_algorithm=pkcs1v15``: Vault wraps it in the DigestInfo exactly as for RS256. Why
  the digest and not the message: each request is 32 bytes whatever the assertion or
  certificate size, and the same code path serves KMS-style digest signing.
* One hvac client (one requests session: connections are kept alive and reused). Configured
  through rotator it is the Vault store's own authenticated client, with the store's
  :class:`~rotator.stores.vault_auth.VaultAuth`: login, renewal and one retry after a re-login
  when Vault rejects a dead token work as for KV requests. Replies from the Transit mount are
  bounded in size and in reading time (:mod:`rotator.keys.remote._bounded`); every field read
  from a reply is checked before use.
* hvac/requests exceptions are converted here into rotator errors with a diagnosis: 403 names
  the capability and the path the policy lacks, a missing key or mount says how to create it,
  network failures name the address. Nothing from hvac leaves this module.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import hvac
import hvac.exceptions as hvac_errors
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator.errors import (
    KeyMaterialError,
    RecordNotFound,
    StoreAccessDenied,
    StoreAuthError,
    StoreError,
    StoreUnavailable,
)
from rotator.keys.remote._bounded import ReplyTooLarge, ReplyTooSlow, bound_replies
from rotator.keys.remote.base import sha256
from rotator.stores.vault_auth import CONVERTED, convert_error, vault_message

RSA_TYPES = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}
SIGNER_POLICY = "deploy/vault/transit-signer-policy.hcl"
ROLLOVER_POLICY = "deploy/vault/transit-rollover-policy.hcl"
# A key read lists every version's public key (a 4096-bit PEM is ~800 bytes): 1 MiB is ample.
MAX_REPLY_BYTES = 1 << 20
MAX_REPLY_SECONDS = 30.0
MAX_VERSION = 10**6
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SIGNATURE = re.compile(r"vault:v([0-9]{1,7}):([A-Za-z0-9+/]{1,1400}={0,2})")
T = TypeVar("T")


@dataclass(frozen=True)
class TransitKeyInfo:
    """What ``GET <mount>/keys/<name>`` says about a key (public facts only)."""

    name: str
    type: str
    latest_version: int
    min_encryption_version: int
    exportable: bool
    allow_plaintext_backup: bool
    public_keys: dict[int, str]  # version -> PEM public key


class TransitService:
    """One Transit mount on one Vault, through one authenticated hvac client."""

    def __init__(
        self,
        client: hvac.Client,
        *,
        mount: str = "transit",
        store: str = "vault",
        auth: Any = None,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        max_reply_seconds: float = MAX_REPLY_SECONDS,
    ) -> None:
        self.client = client
        self.mount = mount.strip("/")
        self.store = store
        # the store's VaultAuth (ensure / handle_rejection), or None: the client's token as is
        self.auth = auth
        self.address = str(client.adapter.base_uri).rstrip("/")
        bound_replies(client.adapter.session, max_bytes=max_reply_bytes, max_seconds=max_reply_seconds,
                      path_prefix=f"/v1/{self.mount}/")

    @classmethod
    def connect(
        cls,
        url: str,
        token: str,
        *,
        mount: str = "transit",
        store: str = "vault",
        timeout: float = 10.0,
        verify: bool | str = True,
        namespace: str | None = None,
    ) -> TransitService:
        """A service on its own hvac client (TLS verified; `verify` may name a CA bundle)."""
        client = hvac.Client(url=url, token=token, timeout=timeout, verify=verify, namespace=namespace)
        return cls(client, mount=mount, store=store)

    def __repr__(self) -> str:
        return f"<TransitService {self.address}/v1/{self.mount}>"

    # ------------------------------------------------------------------ keys

    def describe(self, name: str) -> TransitKeyInfo:
        path = self._path("keys", name)
        reply = self._call(
            lambda: self.client.secrets.transit.read_key(name, mount_point=self.mount),
            name=name, path=path, action="read the Transit key", capability="read",
        )
        return self._parse_key(name, path, reply)

    def key(self, name: str, version: int | None = None) -> TransitKey:
        """The key `name` at `version` (None: the latest), checked to be able to sign RS256."""
        info = self.describe(name)
        where = f"Transit key {name!r} on mount {self.mount!r}"
        if info.type not in RSA_TYPES:
            raise KeyMaterialError(
                f"{where} is of type {info.type!r}; RS256 needs rsa-2048, rsa-3072 or rsa-4096",
                hint=f"create an RSA key: bao write -f {self.mount}/keys/NAME type=rsa-2048",
            )
        if info.exportable or info.allow_plaintext_backup:
            raise KeyMaterialError(
                f"{where} is exportable or allows a plaintext backup: its private key can leave Vault",
                hint="use a key created without exportable/allow_plaintext_backup",
            )
        chosen = info.latest_version if version is None else version
        if chosen not in info.public_keys:
            raise RecordNotFound(self.store, self._path("keys", name),
                                 f"{where} has no version {chosen} (latest is {info.latest_version})")
        if chosen < info.min_encryption_version:
            raise StoreError(
                self.store, self._path("keys", name),
                f"{where}: version {chosen} is below min_encryption_version "
                f"{info.min_encryption_version} and cannot sign",
                hint="use a newer key version (keys rollover) or lower min_encryption_version",
            )
        public = _load_public_key(info.public_keys[chosen], where=f"{where} version {chosen}")
        if public.key_size != RSA_TYPES[info.type]:
            raise KeyMaterialError(f"{where} version {chosen}: public key is {public.key_size} bits, "
                                   f"type says {info.type}")
        return TransitKey(self, name, chosen, public)

    def create_key(self, name: str, key_type: str = "rsa-2048") -> None:
        """Create a non-exportable RSA key (an operator step; needs update on <mount>/keys/<name>)."""
        if key_type not in RSA_TYPES:
            raise KeyMaterialError(f"Transit key type {key_type!r}: use rsa-2048, rsa-3072 or rsa-4096")
        self._call(
            lambda: self.client.secrets.transit.create_key(
                name, key_type=key_type, exportable=False, allow_plaintext_backup=False,
                mount_point=self.mount),
            name=name, path=self._path("keys", name), action="create the Transit key",
            capability="update", policy=ROLLOVER_POLICY,
        )

    def rotate(self, name: str) -> int:
        """Make a new version of `name` (rollover); returns its number. Older versions stay usable."""
        before = self.describe(name).latest_version
        self._call(
            lambda: self.client.secrets.transit.rotate_key(name, mount_point=self.mount),
            name=name, path=self._path("keys", name, "rotate"), action="rotate the Transit key",
            capability="update", policy=ROLLOVER_POLICY,
        )
        after = self.describe(name).latest_version
        if after <= before:
            raise StoreError(self.store, self._path("keys", name, "rotate"),
                             f"rotate did not make a new version (latest still {after})")
        return after

    # ------------------------------------------------------------------ signing

    def sign_digest(self, name: str, version: int, digest: bytes, *, key_size: int) -> bytes:
        """PKCS#1 v1.5 signature of a SHA-256 `digest` by version `version` of key `name`."""
        if len(digest) != 32:
            raise ValueError("a SHA-256 digest is 32 bytes")
        if not _int(version) or version < 1:
            # key_version=0 would mean "latest" to Vault: never sign unpinned
            raise KeyMaterialError(f"Transit key {name!r}: key version {version!r} is not a version number")
        path = self._path("sign", name)
        reply = self._call(
            lambda: self.client.secrets.transit.sign_data(
                name,
                hash_input=base64.b64encode(digest).decode("ascii"),
                key_version=version,
                hash_algorithm="sha2-256",
                prehashed=True,
                signature_algorithm="pkcs1v15",
                marshaling_algorithm="asn1",
                mount_point=self.mount,
            ),
            name=name, path=path, action="sign with the Transit key", capability="update",
        )
        data = reply.get("data") if isinstance(reply, dict) else None
        text = data.get("signature") if isinstance(data, dict) else None
        match = _SIGNATURE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise self._unexpected(path, "signature reply")
        if int(match.group(1)) != version:
            raise StoreError(self.store, path, f"Vault signed with version {match.group(1)}, "
                             f"not the pinned version {version}")
        try:
            signature = base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            raise self._unexpected(path, "signature reply") from None
        if len(signature) != key_size // 8:
            raise self._unexpected(path, "signature length")
        return signature

    # ------------------------------------------------------------------ plumbing

    def _path(self, *parts: str) -> str:
        return "/".join((self.mount, *parts))

    def _call(
        self, fn: Callable[[], T], *, name: str, path: str, action: str, capability: str,
        policy: str = SIGNER_POLICY,
    ) -> T:
        if not _NAME.fullmatch(name):
            raise KeyMaterialError(f"Transit key name {name[:40]!r}: use letters, digits, '_', '.', '-'")
        failure: BaseException | None = None
        for attempt in (1, 2):
            # with the store's auth: log in / renew as due, and after a 403 on a dead token
            # log in again and retry once (as the store does for KV requests)
            generation = self.auth.ensure() if self.auth is not None else 0
            try:
                return fn()
            except CONVERTED as exc:
                failure = exc
            # Handled outside the except block: nothing we raise chains an hvac exception.
            rejected = isinstance(failure, hvac_errors.Forbidden | hvac_errors.Unauthorized)
            if not (rejected and attempt == 1 and self.auth is not None
                    and self.auth.handle_rejection(generation, failure)):
                break
        assert failure is not None
        # (with the store's auth, handle_rejection has told a dead token from a refusal already)
        if self.auth is None and isinstance(failure, hvac_errors.Forbidden) and not self._token_alive():
            raise StoreAuthError(self.store, path, f"cannot {action}: the Vault token is invalid, "
                                 "expired or revoked", hint="give rotator a valid token")
        raise self._convert(failure, name=name, path=path, action=action, capability=capability,
                            policy=policy)

    def _convert(
        self, exc: BaseException, *, name: str, path: str, action: str, capability: str, policy: str
    ) -> StoreError:
        message = vault_message(exc)
        if isinstance(exc, hvac_errors.Forbidden):
            return StoreAccessDenied(
                self.store, path,
                f"cannot {action}: permission denied: the Vault policy lacks {capability!r} on {path}",
                hint=f"grant it to the token's policy; see {policy}",
            )
        missing = RecordNotFound(
            self.store, path, f"cannot {action}: Transit key {name!r} not found on mount {self.mount!r}",
            hint=f"create it (bao write -f {self.mount}/keys/{name} type=rsa-2048) or fix signer_key",
        )
        if isinstance(exc, hvac_errors.InvalidPath):
            if "no handler for route" in message:
                return StoreError(
                    self.store, path,
                    f"cannot {action}: no Transit engine at {self.mount}/ on {self.address}",
                    hint=f"enable it (bao secrets enable -path={self.mount} transit) or set transit_mount",
                )
            return missing
        if isinstance(exc, hvac_errors.VaultError) and "key not found" in message:
            return missing  # sign on a missing key is a 400 "signing key not found"
        if isinstance(exc, hvac_errors.VaultError) and "requested version" in message:
            return StoreError(self.store, path, f"cannot {action}: {message}",
                              hint="the pinned key version does not exist (any more)")
        if isinstance(exc, hvac_errors.InvalidRequest):
            return StoreError(self.store, path, f"cannot {action}: Vault said: {message or 'bad request'}")
        if isinstance(exc, ReplyTooLarge | ReplyTooSlow):
            how = "too large" if isinstance(exc, ReplyTooLarge) else "too slow"
            return StoreUnavailable(self.store, path,
                                    f"cannot {action}: the reply from Vault at {self.address} was {how}")
        if isinstance(exc, ValueError) and not isinstance(exc, requests.exceptions.RequestException):
            return self._unexpected(path, action)
        return convert_error(exc, store=self.store, path=path, address=self.address, action=action)

    def _token_alive(self) -> bool:
        """Vault answers 403 both for a dead token and for a policy that says no: tell them
        apart (only after a refusal) by asking about the token itself."""
        try:
            self.client.auth.token.lookup_self()
        except CONVERTED:
            return False
        return True

    def _unexpected(self, path: str, what: str) -> StoreError:
        return StoreError(self.store, path, f"unexpected {what} from Vault at {self.address}",
                          hint=f"is {self.mount!r} a Transit mount?")

    def _parse_key(self, name: str, path: str, reply: Any) -> TransitKeyInfo:
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, dict):
            raise self._unexpected(path, "key reply")
        key_type = data.get("type")
        latest = data.get("latest_version")
        minimum = data.get("min_encryption_version", 0)
        keys = data.get("keys")
        if not (isinstance(key_type, str) and len(key_type) <= 40 and _int(latest) and _int(minimum)
                and isinstance(keys, dict)):
            raise self._unexpected(path, "key reply")
        public_keys: dict[int, str] = {}
        for version, entry in keys.items():
            if not (isinstance(version, str) and version.isdigit() and len(version) <= 7):
                raise self._unexpected(path, "key version")
            pem = entry.get("public_key") if isinstance(entry, dict) else None
            if isinstance(pem, str) and pem and len(pem) <= 4096:
                public_keys[int(version)] = pem
        return TransitKeyInfo(
            name=name, type=key_type, latest_version=latest, min_encryption_version=minimum,
            exportable=data.get("exportable") is True,
            allow_plaintext_backup=data.get("allow_plaintext_backup") is True,
            public_keys=public_keys,
        )


class TransitKey:
    """One version of a Transit key: a :class:`rotator.keys.remote.base.RemoteKey`."""

    def __init__(self, service: TransitService, name: str, version: int, public: rsa.RSAPublicKey) -> None:
        self.service = service
        self.name = name
        self.version = version
        self._public = public

    def __repr__(self) -> str:
        return f"<TransitKey {self.reference}>"

    @property
    def reference(self) -> str:
        return f"{self.service.mount}/keys/{self.name} v{self.version}"

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self.service.sign_digest(self.name, self.version, sha256(message), key_size=self.key_size)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_VERSION


def _load_public_key(pem: str, *, where: str) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise KeyMaterialError(f"{where}: Vault sent a malformed public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyMaterialError(f"{where}: not an RSA public key")
    return key
