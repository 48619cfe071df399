"""One rotation: resolve credential -> load key -> mint -> exchange -> write -> audit.

A rotation resolves its credential once (`Engine.resolve`: config, provider, key slot, token
store) and passes that object through every step. The key lifecycle (rotator.keys.lifecycle)
is asked which signers to try and told what happened; it never calls back into the engine.

The engine never writes anything but a token the endpoint has just issued, and writes it
with compare-and-set against the version it read before starting. A failure anywhere leaves
the previous token in place. `on_step` lets tests (and the crash-consistency suite) stop
or pause the engine between steps.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from rotator.audit import pipeline as audit
from rotator.audit.fingerprint import token_fingerprint
from rotator.clock import Clock
from rotator.config import Config, CredentialConfig
from rotator.errors import (
    InternalError,
    RecordError,
    RotatorError,
    StoreConflict,
    TokenRejected,
    TokenVerificationFailed,
)
from rotator.keys import lifecycle
from rotator.keys.context import KeyContext, KeyMemo, LoadedKey
from rotator.keys.crypto import KeyCache
from rotator.keys.signer import Signer
from rotator.policy import token_due
from rotator.providers import Provider, build_provider
from rotator.providers.base import TokenResponse
from rotator.providers.verify import verify_token
from rotator.records import KeyPair, KeyRecord, TokenRecord
from rotator.stores import Record, SecretStore, StoreSet

__all__ = ["STEPS", "Credential", "Engine", "LoadedKey", "RotationResult"]

STEPS = ("start", "key-loaded", "minted", "exchanged", "written")


@dataclass(frozen=True)
class RotationResult:
    name: str
    ok: bool
    action: str  # rotated | reused | skipped | dry-run | superseded | failed
    error: RotatorError | None = None
    reason: str | None = None
    token_version: str | None = None
    key_sha256: str | None = None
    duration: float = 0.0
    rotation_id: str | None = None
    # the token record this rotation wrote (rotated / reused): the daemon schedules the next
    # run from it instead of reading back what was just written
    token: TokenRecord | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "action": self.action,
            "error": self.error.diagnostics() if self.error else None,
        }


@dataclass(frozen=True)
class Credential:
    """One credential resolved for one rotation: everything a step needs, looked up once."""

    name: str
    config: CredentialConfig
    provider: Provider
    keys: KeyContext  # the key slot: record, parsed keys, key store

    @property
    def token_store(self) -> SecretStore:
        # built on first use (StoreSet caches it): a store that cannot be built fails the
        # rotation at the step that needs it, as before
        return self.keys.stores[self.config.token.store]

    def mint(self, signer: Signer, now: float) -> str:
        return signer.sign(self.provider.claims(now))


class Engine:
    def __init__(
        self,
        config: Config,
        *,
        stores: StoreSet | None = None,
        clock: Clock = time.time,
        key_cache: KeyCache | None = None,
        on_step: Callable[[str, str], None] | None = None,
        on_publication: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.config = config
        self.stores = stores or StoreSet(config.stores)
        self.clock = clock
        self.keys = key_cache or KeyCache()
        self.on_step = on_step
        self.on_publication = on_publication  # (credential, ok) per Metadata API publication
        self._providers: dict[str, Provider] = {}
        self._key_memo = KeyMemo()
        self._publishers: dict[str, Any] = {}

    # -- resolving a credential

    def resolve(self, name: str) -> Credential:
        cred = self.config.credential(name)
        return Credential(name, cred, self.provider(name), self.key_context(name))

    def key_context(self, name: str) -> KeyContext:
        return KeyContext(name, self.config.credential(name), self.config.credentials, self.stores,
                          self.keys, self.clock, self._key_memo, metadata=self.metadata_publisher(name),
                          on_step=lambda step: self._step(name, step),
                          on_publication=lambda ok: self._publication(name, ok))

    def metadata_publisher(self, name: str) -> Any:
        """The Metadata API target of a credential with `publish` (None without), built once
        per engine: its session is the stored token of `publish.via`, minted anew only when
        missing or refused (rotator.providers.metadata)."""
        cred = self.config.credential(name)
        if cred.publish is None:
            return None
        publisher = self._publishers.get(name)
        if publisher is None:
            from rotator.providers.metadata import MetadataPublisher

            via = cred.publish.via or name
            publisher = self._publishers[name] = MetadataPublisher(
                name, cred.publish, session=lambda fresh: self._metadata_session(via, fresh),
                timeout=cred.timeout, max_per_hour=cred.max_requests_per_hour, via=via, clock=self.clock,
            )
        return publisher

    def _metadata_session(self, via: str, fresh: bool) -> tuple[str, str]:
        """(instance_url, access token) of credential `via`: the stored one unless `fresh`
        or there is none; else a token request signed with its current key, or its pending
        key if the app holds that one (the token is not stored: the stored token belongs to
        that credential's own schedule)."""
        cred = self.resolve(via)
        if not fresh:
            token, _ = _read_token(cred)
            if token is not None and token.instance_url:
                return token.instance_url, token.access_token
        keyrec, record = cred.keys.read_record()
        signer = cred.keys.load_pair(keyrec.current, "current", record.version).signer
        try:
            response = cred.provider.exchange(cred.mint(signer, self.clock()))
        except TokenRejected as exc:
            # the app may hold the pending certificate (published, not promoted yet)
            if keyrec.pending is None or not lifecycle.is_invalid_assertion(exc):
                raise
            pending = cred.keys.load_pair(keyrec.pending, "pending", record.version).signer
            response = cred.provider.exchange(cred.mint(pending, self.clock()))
        # `publish.via` names a Salesforce credential (config), and the Salesforce provider
        # refuses a token reply without instance_url (EndpointProtocolError): always set here
        assert response.instance_url
        return response.instance_url, response.access_token

    # -- building blocks (also used by the CLI and the scheduler)

    def provider(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            provider = self._providers[name] = build_provider(name, self.config.credential(name))
        return provider

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def read_key_record(self, name: str) -> tuple[KeyRecord, Record]:
        return self.key_context(name).read_record()

    def load_pair(self, name: str, pair: KeyPair, role: str, version: str) -> LoadedKey:
        """Parse (once per process) and check a key pair for this credential's algorithm."""
        return self.key_context(name).load_pair(pair, role, version)

    def mint(self, name: str, signer: Signer) -> str:
        return signer.sign(self.provider(name).claims(self.clock()))

    def read_token(self, name: str) -> tuple[TokenRecord | None, Record | None]:
        """The stored token and its raw record; an unreadable token counts as none."""
        return _read_token(self.resolve(name))

    # -- one rotation

    def rotate(
        self, name: str, *, force: bool = False, dry_run: bool = False, own: str | None = None
    ) -> RotationResult:
        """One rotation of `name`. `own`: the rotation id of the token the caller wrote last (the
        daemon's schedule): a stored token with that id is due now, whatever its age - the age
        check is there to notice another writer's fresher token, and a run that comes a little
        early against the previous one's finish (a queue that drained in another order) must
        not be skipped."""
        rotation_id = uuid.uuid4().hex
        started = time.monotonic()
        with audit.bound_contextvars(rotation_id=rotation_id, credential=name):
            try:
                result = self._rotate(name, rotation_id, force=force, dry_run=dry_run, own=own)
            except Exception as raw:  # one broken credential must not stop the others
                exc = raw if isinstance(raw, RotatorError) else InternalError(raw)
                result = RotationResult(name, False, "failed", error=exc, rotation_id=rotation_id)
                audit.emit(
                    "rotation.failed", level="error", outcome="failure",
                    error_class=exc.kind, diagnosis=exc.diagnostics(), retryable=exc.retryable,
                    duration_s=round(time.monotonic() - started, 4),
                )
            return _with_duration(result, time.monotonic() - started)

    def _rotate(
        self, name: str, rotation_id: str, *, force: bool, dry_run: bool, own: str | None
    ) -> RotationResult:
        cred = self.resolve(name)
        self._step(name, "start")
        audit.emit("rotation.started", force=force, dry_run=dry_run)
        keyrec, key_record = cred.keys.read_record()
        loaded = cred.keys.load_pair(keyrec.current, "current", key_record.version)
        self._step(name, "key-loaded")
        token, token_record = _read_token(cred)
        _refuse_key_material(cred.config, token_record)
        keys = lifecycle.prepare(cred.keys, keyrec, loaded, token, dry_run=dry_run)
        loaded = keys.current
        ours = own is not None and token is not None and token.rotation_id == own
        if not force and not dry_run and not ours:
            due = token_due(token, every=cred.config.every, jitter=cred.config.jitter, now=self.now(),
                            key_sha256=loaded.signer.cert_sha256)
            if not due.due:
                audit.emit("rotation.skipped", outcome="skipped", reason=due.reason)
                return RotationResult(name, True, "skipped", reason=due.reason,
                                      rotation_id=rotation_id)
        assertion = cred.mint(loaded.signer, self.clock())
        self._step(name, "minted")
        if dry_run:
            audit.emit("rotation.skipped", outcome="skipped", reason="dry run")
            return RotationResult(name, True, "dry-run", reason="dry run: minted, not exchanged",
                                  key_sha256=loaded.signer.cert_sha256, rotation_id=rotation_id)
        exchanged = lifecycle.exchange(  # pending key first
            cred.keys, keys, assertion,
            mint=lambda signer: cred.mint(signer, self.clock()), send=cred.provider.exchange,
        )
        response = exchanged.response
        self._step(name, "exchanged")
        if cred.config.verify is not None:
            _verify(cred, response)  # raises: a token failing its probe is not written
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
        result = self._write_token(cred, new, token_record, rotation_id,
                                   reused=_same_token(token, response.access_token))
        lifecycle.after_write(cred.keys, keys, exchanged)  # token first, then the key record
        return result

    def _write_token(
        self,
        cred: Credential,
        new: TokenRecord,
        old: Record | None,
        rotation_id: str,
        *,
        reused: bool,
    ) -> RotationResult:
        """Write `new` (compare-and-set). A `reused` token (the endpoint answered with the token
        already stored: Salesforce reuses a still-active session) is re-recorded with its new
        issued_at / expires_at / key_sha256 under `token.reused`, never `token.written`: it is no
        new token, but its record must follow the session the login just extended (or the
        stored token would look ever older while it is fresh: docs/salesforce.md)."""
        ref = cred.config.token
        data = new.to_data()
        try:
            written = cred.token_store.write(
                ref.path,
                data,
                expected_version=old.version if old else None,
                request_id=rotation_id,
                metadata={"credential": cred.name, "key_sha256": new.key_sha256,
                          "rotation_id": rotation_id, "written_by": "rotator"},
            )
        except StoreConflict as exc:
            return self._after_conflict(cred, exc, rotation_id)
        self._step(cred.name, "written")
        audit.emit(
            "token.reused" if reused else "token.written", store=ref.store, path=ref.path,
            version=written.version, previous_version=written.previous_version,
            key_sha256=new.key_sha256,
            token_fingerprint=audit_fingerprint(new.access_token),
            expires_at=new.expires_at.isoformat() if new.expires_at else None,
        )
        audit.emit("rotation.succeeded", outcome="success", key_sha256=new.key_sha256,
                   version=written.version, **({"reused": True} if reused else {}))
        return RotationResult(cred.name, True, "reused" if reused else "rotated",
                              token_version=written.version,
                              key_sha256=new.key_sha256, rotation_id=rotation_id,
                              # as a reader of the store sees it (to_data keeps whole seconds)
                              token=TokenRecord.from_data(data, where=str(ref)))

    def _after_conflict(self, cred: Credential, exc: StoreConflict, rotation_id: str) -> RotationResult:
        """Another writer stored a token first. If theirs is fresh, use it; never overwrite it."""
        theirs, _ = _read_token(cred)
        due = token_due(theirs, every=cred.config.every, jitter=cred.config.jitter, now=self.now())
        if theirs is not None and not due.due:
            audit.emit("rotation.superseded", outcome="skipped",
                       reason="another writer stored a fresh token first")
            return RotationResult(cred.name, True, "superseded", reason="another writer won the race",
                                  rotation_id=rotation_id)
        raise exc

    def _publication(self, name: str, ok: bool) -> None:
        if self.on_publication is not None:
            self.on_publication(name, ok)

    def _step(self, name: str, step: str) -> None:
        if self.on_step is not None:
            self.on_step(name, step)


def _read_token(cred: Credential) -> tuple[TokenRecord | None, Record | None]:
    """The stored token and its raw record; an unreadable token counts as none."""
    ref = cred.config.token
    try:
        record = cred.token_store.read(ref.path)
    except RecordError as exc:
        if exc.version is None:
            raise  # without its version we could not replace it safely
        _unreadable(cred.name, exc)
        return None, Record({}, exc.version)
    if record is None:
        return None, None
    try:
        return TokenRecord.from_data(record.data, where=str(ref)), record
    except RecordError as exc:
        _unreadable(cred.name, exc)
        return None, record


def _same_token(stored: TokenRecord | None, new: str) -> bool:
    """Whether the endpoint returned the stored token again (compared in constant time)."""
    if stored is None:
        return False
    return hmac.compare_digest(stored.access_token.encode(), new.encode())


def _verify(cred: Credential, response: TokenResponse) -> None:
    """Probe the new token at its instance (`verify`); audit the outcome; raise on failure."""
    probe = cred.config.verify
    assert probe is not None
    try:
        result = verify_token(probe, response.instance_url, response.access_token,
                              timeout=cred.config.timeout)
    except TokenVerificationFailed as exc:
        audit.emit("token.verification_failed", level="warning", outcome="failure",
                   error_class=exc.kind, diagnosis=exc.diagnostics(), probe=probe,
                   status=exc.status, error_code=exc.error_code)
        raise
    audit.emit("token.verified", probe=probe, status=result.status, duration_s=result.duration_s)


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
    """A keyed fingerprint of a token for the audit trail (see rotator.audit.fingerprint)."""
    return token_fingerprint(token)
