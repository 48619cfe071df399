"""One credential's key slot, resolved once per rotation (or `keys` command).

The engine builds a `KeyContext` from the config, its stores and its key cache, and hands it
to the lifecycle; everything the lifecycle needs (the credential's config, its key record's
store, the clock, the parsed-key cache) travels in it, so nothing is looked up by name again
and nothing calls back into the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rotator.audit import pipeline as audit
from rotator.clock import Clock
from rotator.config import CredentialConfig
from rotator.errors import KeyMaterialError, RecordError
from rotator.keys.crypto import KeyCache
from rotator.keys.metadata import CertificatePublisher
from rotator.keys.signer import PemSigner, Signer
from rotator.records import KeyPair, KeyRecord
from rotator.stores import Record, StoreSet


@dataclass(frozen=True)
class LoadedKey:
    """A key pair from the key record, parsed and checked; holds no PEM."""

    signer: Signer
    not_after: datetime
    record_version: str


@dataclass
class KeyMemo:
    """What one engine did, for when the key record cannot remember it (no write access)."""

    published: dict[str, float] = field(default_factory=dict)  # pending sha256 -> last attempt
    warned: dict[str, set[int]] = field(default_factory=dict)  # cert sha256 -> thresholds
    # pending sha256 -> consecutive failed publications (backoff of the Metadata API target)
    publish_failures: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyContext:
    name: str
    cred: CredentialConfig
    # every credential: a publish target must never be another credential's key or token
    credentials: Mapping[str, CredentialConfig]
    stores: StoreSet
    keys: KeyCache
    clock: Clock
    memo: KeyMemo
    # the Metadata API target (credentials with `publish`), supplied by the engine
    metadata: CertificatePublisher | None = None
    # the engine's step hook (crash tests stop a process at "staged" / "published")
    on_step: Callable[[str], None] | None = None
    # told the outcome of each Metadata API publication (the daemon counts them)
    on_publication: Callable[[bool], None] | None = None

    def step(self, step: str) -> None:
        if self.on_step is not None:
            self.on_step(step)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def read_record(self) -> tuple[KeyRecord, Record]:
        cred = self.cred
        record = self.stores[cred.key.store].read(cred.key.path)
        if record is None:
            raise RecordError(
                str(cred.key),
                "no key record",
                hint=f"create one with `rotator keys init {self.name}` or `rotator keys import {self.name}`",
            )
        return KeyRecord.from_data(record.data, where=str(cred.key)), record

    def load_pair(self, pair: KeyPair, role: str, version: str) -> LoadedKey:
        """Parse (once per process) and check a key pair for this credential's algorithm."""
        cred = self.cred
        where = f"{cred.key}" if role == "current" else f"{cred.key} ({role})"
        signer: Signer
        if cred.signer != "pem" or pair.remote:
            # keyless: the key stays in Vault Transit / AWS KMS (docs/keyless.md)
            from rotator.keys.remote import service

            if cred.signer == "pem":
                raise KeyMaterialError(
                    f"{where}: the key record holds a key reference ({pair.key_ref}), not a private_key",
                    hint=f"set signer and signer_key for credentials.{self.name} (docs/keyless.md)",
                )
            signer, info, fresh = service.load(self, pair, role, where=where)
        else:
            assert pair.private_key is not None
            key, info, fresh = self.keys.load_checked(
                f"{self.name}/{role}", pair.private_key, pair.passphrase, pair.certificate, cred.algorithm,
                where=where,
            )
            signer = PemSigner(key, cred.algorithm, info.sha256)
        if fresh:
            audit.emit(
                "key.loaded", credential=self.name, role=role, key_sha256=info.sha256,
                serial=info.serial, not_after=info.not_after.isoformat(), signer=cred.signer,
            )
        return LoadedKey(signer, info.not_after, version)
