"""One rotation: load key -> mint -> exchange -> write -> audit.

The engine never writes anything but a token the endpoint has just issued, and writes it
with compare-and-set against the version it read before starting. A failure anywhere leaves
the previous token in place. `on_step` lets tests (and the crash-consistency suite) stop
or pause the engine between steps.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from rotator import audit, lifecycle
from rotator.audit_hash import token_fingerprint
from rotator.clock import Clock
from rotator.config import Config, CredentialConfig
from rotator.crypto import (
    KeyCache,
    Signer,
)
from rotator.errors import InternalError, RecordError, RotatorError, StoreConflict
from rotator.policy import token_due
from rotator.providers import Provider, build_provider
from rotator.records import KeyPair, KeyRecord, TokenRecord
from rotator.stores import Record, StoreSet

STEPS = ("start", "key-loaded", "minted", "exchanged", "written")


@dataclass(frozen=True)
class RotationResult:
    name: str
    ok: bool
    action: str  # rotated | skipped | dry-run | superseded | failed
    error: RotatorError | None = None
    reason: str | None = None
    token_version: str | None = None
    key_sha256: str | None = None
    duration: float = 0.0
    rotation_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "action": self.action,
            "error": self.error.diagnostics() if self.error else None,
        }


@dataclass(frozen=True)
class LoadedKey:
    """A key pair from the key record, parsed and checked; holds no PEM."""

    signer: Signer
    not_after: datetime
    record_version: str


class Engine:
    def __init__(
        self,
        config: Config,
        *,
        stores: StoreSet | None = None,
        clock: Clock = time.time,
        key_cache: KeyCache | None = None,
        on_step: Callable[[str, str], None] | None = None,
    ) -> None:
        self.config = config
        self.stores = stores or StoreSet(config.stores)
        self.clock = clock
        self.keys = key_cache or KeyCache()
        self.on_step = on_step
        self._providers: dict[str, Provider] = {}

    # -- building blocks (also used by the CLI)

    def provider(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            provider = self._providers[name] = build_provider(name, self.config.credential(name))
        return provider

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def read_key_record(self, name: str) -> tuple[KeyRecord, Record]:
        cred = self.config.credential(name)
        store = self.stores[cred.key.store]
        record = store.read(cred.key.path)
        if record is None:
            raise RecordError(
                str(cred.key),
                "no key record",
                hint=f"create one with `rotator keys init {name}` or `rotator keys import {name}`",
            )
        return KeyRecord.from_data(record.data, where=str(cred.key)), record

    def load_pair(self, name: str, pair: KeyPair, role: str, version: str) -> LoadedKey:
        """Parse (once per process) and check a key pair for this credential's algorithm."""
        cred = self.config.credential(name)
        where = f"{cred.key}" if role == "current" else f"{cred.key} ({role})"
        key, info, fresh = self.keys.load_checked(
            f"{name}/{role}", pair.private_key, pair.passphrase, pair.certificate, cred.algorithm,
            where=where,
        )
        if fresh:
            audit.emit(
                "key.loaded", credential=name, role=role, key_sha256=info.sha256,
                serial=info.serial, not_after=info.not_after.isoformat(),
            )
        return LoadedKey(Signer(key, cred.algorithm, info.sha256), info.not_after, version)

    def mint(self, name: str, signer: Signer) -> str:
        return signer.sign(self.provider(name).claims(self.clock()))

    def read_token(self, name: str) -> tuple[TokenRecord | None, Record | None]:
        """The stored token and its raw record; an unreadable token counts as none."""
        cred = self.config.credential(name)
        try:
            record = self.stores[cred.token.store].read(cred.token.path)
        except RecordError as exc:
            if exc.version is None:
                raise  # without its version we could not replace it safely
            _unreadable(name, exc)
            return None, Record({}, exc.version)
        if record is None:
            return None, None
        try:
            return TokenRecord.from_data(record.data, where=str(cred.token)), record
        except RecordError as exc:
            _unreadable(name, exc)
            return None, record

    # -- one rotation

    def rotate(self, name: str, *, force: bool = False, dry_run: bool = False) -> RotationResult:
        rotation_id = uuid.uuid4().hex
        started = time.monotonic()
        with audit.bound_contextvars(rotation_id=rotation_id, credential=name):
            try:
                result = self._rotate(name, rotation_id, force=force, dry_run=dry_run)
            except Exception as raw:  # one broken credential must not stop the others
                exc = raw if isinstance(raw, RotatorError) else InternalError(raw)
                result = RotationResult(name, False, "failed", error=exc, rotation_id=rotation_id)
                audit.emit(
                    "rotation.failed", level="error", outcome="failure",
                    error_class=exc.kind, diagnosis=exc.diagnostics(), retryable=exc.retryable,
                    duration_s=round(time.monotonic() - started, 4),
                )
            return _with_duration(result, time.monotonic() - started)

    def _rotate(self, name: str, rotation_id: str, *, force: bool, dry_run: bool) -> RotationResult:
        cred = self.config.credential(name)
        self._step(name, "start")
        audit.emit("rotation.started", force=force, dry_run=dry_run)
        keyrec, key_record = self.read_key_record(name)
        loaded = self.load_pair(name, keyrec.current, "current", key_record.version)
        self._step(name, "key-loaded")
        token, token_record = self.read_token(name)
        _refuse_key_material(cred, token_record)
        keys = lifecycle.prepare(self, name, keyrec, loaded, token, dry_run=dry_run)
        loaded = keys.current
        if not force and not dry_run:
            due = token_due(token, every=cred.every, jitter=cred.jitter, now=self.now(),
                            key_sha256=loaded.signer.cert_sha256)
            if not due.due:
                audit.emit("rotation.skipped", outcome="skipped", reason=due.reason)
                return RotationResult(name, True, "skipped", reason=due.reason,
                                      rotation_id=rotation_id)
        assertion = self.mint(name, loaded.signer)
        self._step(name, "minted")
        if dry_run:
            audit.emit("rotation.skipped", outcome="skipped", reason="dry run")
            return RotationResult(name, True, "dry-run", reason="dry run: minted, not exchanged",
                                  key_sha256=loaded.signer.cert_sha256, rotation_id=rotation_id)
        exchanged = lifecycle.exchange(self, name, keys, assertion)  # pending key first
        response = exchanged.response
        self._step(name, "exchanged")
        new = TokenRecord(
            access_token=response.access_token,
            instance_url=response.instance_url,
            token_type=response.token_type,
            scope=response.scope,
            id=response.id,
            issued_at=response.issued_at,
            expires_at=response.expires_at,
            credential=name,
            key_sha256=exchanged.signer.cert_sha256,
            rotation_id=rotation_id,
        )
        result = self._write_token(name, cred, new, token_record, rotation_id)
        lifecycle.after_write(self, name, keys, exchanged)  # token first, then the key record
        return result

    def _write_token(
        self,
        name: str,
        cred: CredentialConfig,
        new: TokenRecord,
        old: Record | None,
        rotation_id: str,
    ) -> RotationResult:
        store = self.stores[cred.token.store]
        try:
            written = store.write(
                cred.token.path,
                new.to_data(),
                expected_version=old.version if old else None,
                request_id=rotation_id,
                metadata={"credential": name, "key_sha256": new.key_sha256,
                          "rotation_id": rotation_id, "written_by": "rotator"},
            )
        except StoreConflict as exc:
            return self._after_conflict(name, cred, exc, rotation_id)
        self._step(name, "written")
        audit.emit(
            "token.written", store=cred.token.store, path=cred.token.path,
            version=written.version, previous_version=written.previous_version,
            key_sha256=new.key_sha256,
            token_fingerprint=audit_fingerprint(new.access_token),
            expires_at=new.expires_at.isoformat() if new.expires_at else None,
        )
        audit.emit("rotation.succeeded", outcome="success", key_sha256=new.key_sha256,
                   version=written.version)
        return RotationResult(name, True, "rotated", token_version=written.version,
                              key_sha256=new.key_sha256, rotation_id=rotation_id)

    def _after_conflict(
        self, name: str, cred: CredentialConfig, exc: StoreConflict, rotation_id: str
    ) -> RotationResult:
        """Another writer stored a token first. If theirs is fresh, use it; never overwrite it."""
        theirs, _ = self.read_token(name)
        due = token_due(theirs, every=cred.every, jitter=cred.jitter, now=self.now())
        if theirs is not None and not due.due:
            audit.emit("rotation.superseded", outcome="skipped",
                       reason="another writer stored a fresh token first")
            return RotationResult(name, True, "superseded", reason="another writer won the race",
                                  rotation_id=rotation_id)
        raise exc

    def _step(self, name: str, step: str) -> None:
        if self.on_step is not None:
            self.on_step(name, step)


def _unreadable(name: str, exc: RecordError) -> None:
    audit.emit("token.unreadable", credential=name, level="warning", diagnosis=exc.diagnostics())


def _refuse_key_material(cred: CredentialConfig, record: Record | None) -> None:
    """Never overwrite a key or certificate with a token (a token ref shared with a key)."""
    if record is not None and ({"private_key", "certificate"} & set(record.data)):
        raise RecordError(str(cred.token), "holds key material (private_key/certificate), not a "
                          "token; refusing to overwrite it: give the token a ref of its own")


def _with_duration(result: RotationResult, seconds: float) -> RotationResult:
    return replace(result, duration=seconds)


def audit_fingerprint(token: str) -> str:
    """A keyed fingerprint of a token for the audit trail (see rotator.audit_hash)."""
    return token_fingerprint(token)
