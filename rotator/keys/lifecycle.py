"""Key and certificate lifecycle: expiry warnings, renewal and zero-downtime key rollover.

A connected app holds one certificate, and Salesforce neither refuses an expired one nor warns
about it. So rotator rolls keys the way AWS Secrets Manager rotates a secret: stage a pending
key, publish its certificate for upload, keep signing with the current key until the endpoint
accepts the pending one, then promote it and keep the old key as previous
(docs/key-rotation.md). `rotator.policy` decides when; this module does it.

Every change goes to the key record with compare-and-set; a lost race re-reads the record and
decides again, so a pending key is never lost. The token is always written before the key
record, and a token minted by the pending key is proof enough to finish an interrupted
promotion on the next run.

The engine consults this module at three points of a rotation, handing it the credential's
`KeyContext` (never the engine): `prepare` (housekeeping before the exchange), `exchange`
(which signers to try, in which order; the engine supplies how to mint and send) and
`after_write` (what a success by the pending key means for the key record). Publication
targets live in rotator.keys.publish; the `keys` sub-commands in rotator.cli.keys.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rotator import policy
from rotator.audit import pipeline as audit
from rotator.clock import rfc3339
from rotator.errors import (
    InputError,
    RecordError,
    RotatorError,
    StoreConflict,
    StoreError,
    TokenRejected,
)
from rotator.keys.context import KeyContext, LoadedKey
from rotator.keys.crypto import (
    ALLOWED_RSA_BITS,
    CertInfo,
    PrivateKey,
    cert_info_from_pem,
    cert_to_pem,
    generate_ec_key,
    generate_rsa_key,
    key_to_pem,
    load_certificate,
    self_signed_certificate,
)
from rotator.keys.metadata import sha256_or_none
from rotator.keys.publish import audit_failure as _failed
from rotator.keys.publish import publish, withdraw
from rotator.keys.signer import Signer
from rotator.records import KeyPair, KeyRecord, TokenRecord

# Steps the lifecycle reports through KeyContext.on_step (after the engine's STEPS): the
# pending key is durably stored; its certificate went to every target (crash tests stop here).
KEY_STEPS = ("staged", "published")
# A failed publication is retried on later runs, at most this often per process.
PUBLISH_RETRY = 3600.0
MAX_CAS_ATTEMPTS = 3
DEFAULT_DAYS = 365

# Key record fields this module adds (CONTRACT.md: "the daemon may add fields").
STAGED_AT = "pending_staged_at"
PUBLISHED_AT = "pending_published_at"
PROMOTED_AT = "promoted_at"
WARNED = "expiry_warned"
PENDING_FIELDS = (STAGED_AT, PUBLISHED_AT)

Response = TypeVar("Response")


@dataclass(frozen=True)
class KeyState:
    """The key record as one run sees it, with the current key loaded."""

    record: KeyRecord
    current: LoadedKey
    # staged during this run: the endpoint cannot know it yet, so it is not tried first
    staged_now: bool = False

    @property
    def known(self) -> tuple[KeyRecord, str]:
        return self.record, self.current.record_version


@dataclass(frozen=True)
class Exchanged(Generic[Response]):
    response: Response
    signer: Signer
    role: str  # "current" | "pending"


# ---------------------------------------------------------------------------- engine hooks


def prepare(
    ctx: KeyContext,
    record: KeyRecord,
    current: LoadedKey,
    token: TokenRecord | None,
    *,
    dry_run: bool = False,
) -> KeyState:
    """Housekeeping before the token exchange: finish an interrupted promotion, warn about
    expiry, stage the next key when renewal is due, retry a failed publication.

    A failure here is audited and never stops the token: the current key keeps signing.
    """
    state = KeyState(record, current)
    if dry_run:
        return state
    steps: tuple[tuple[str, Callable[..., KeyState]], ...] = (
        ("recover-promotion", _recover_promotion),
        ("expiry-warning", _warn_expiry),
        ("stage", _renew),
        ("publish", _republish),
    )
    for step, action in steps:
        try:
            state = action(ctx, state, token)
        except RotatorError as exc:
            _failed(ctx.name, step, exc)
    return state


def exchange(
    ctx: KeyContext,
    state: KeyState,
    current_assertion: str,
    *,
    mint: Callable[[Signer], str],
    send: Callable[[str], Response],
) -> Exchanged[Response]:
    """Get a token: the pending key first (if any), else or then the current key.

    The engine says how to mint an assertion and how to send one to the token endpoint; this
    decides which signers to try, in which order. At most two token requests. Only
    `invalid assertion` on the pending key means "not uploaded yet"; any error with it is
    audited and the current key still produces the token.
    """
    current = state.current.signer
    pending = _pending_signer(ctx, state)
    pending_assertion = mint(pending) if pending is not None else ""
    pending_error: RotatorError | None = None
    if pending is not None and not state.staged_now:
        try:
            return Exchanged(send(pending_assertion), pending, "pending")
        except RotatorError as exc:
            pending_error = exc
            _audit_pending_failure(ctx, state, pending, exc)
    try:
        return Exchanged(send(current_assertion), current, "current")
    except TokenRejected as exc:
        if pending is None or not is_invalid_assertion(exc):
            raise
        if pending_error is None:
            # Staged this very run and the current key is already refused: the upload hook
            # may have installed the new certificate. Switch now.
            audit.emit("key.current_rejected", level="warning", credential=ctx.name,
                       key_sha256=current.cert_sha256, pending_sha256=pending.cert_sha256)
            return Exchanged(send(pending_assertion), pending, "pending")
        if is_invalid_assertion(pending_error):
            raise  # neither key is the uploaded one
        # The current key is refused, so the pending certificate is the uploaded one: its
        # (often retryable) error is the one that matters.
        raise pending_error from None


def after_write(ctx: KeyContext, state: KeyState, exchanged: Exchanged) -> None:
    """The token is written; if the pending key made it, promote that key (second CAS write)."""
    if exchanged.role != "pending":
        return
    try:
        promote(ctx, sha256=exchanged.signer.cert_sha256,
                reason="the token endpoint accepted the pending key", known=state.known)
    except RotatorError as exc:
        # The stored token names the pending key: the next run finishes the promotion.
        _failed(ctx.name, "promote", exc)


def is_invalid_assertion(exc: RotatorError) -> bool:
    return (
        isinstance(exc, TokenRejected)
        and exc.error == "invalid_grant"
        and exc.description.strip().lower() == "invalid assertion"
    )


# ---------------------------------------------------------------------------- transitions


@dataclass(frozen=True)
class Staged:
    record: KeyRecord
    version: str
    pair: KeyPair = field(repr=False)


def stage(
    ctx: KeyContext,
    *,
    reason: str,
    via: str,
    bits: int | None = None,
    days: int | None = None,
    known: tuple[KeyRecord, str] | None = None,
) -> Staged | None:
    """Make the next key and certificate, store them as pending, publish the certificate.

    None if the record gained a pending key (or a new current key) meanwhile. The key is
    stored before its certificate is published: an uploaded certificate whose key was lost
    would break the integration.
    """
    record, version = known or _read(ctx)
    if record.pending is not None:
        return None
    cred = ctx.cred
    current_info = _info(record.current)
    now = ctx.now()
    if cred.signer != "pem":
        # keyless: Transit `rotate` (a new version) or a new KMS key; the certificate is
        # signed by the key service (rotator.keys.remote)
        pair = _next_remote_pair(ctx, record.current, current_info, bits=bits, days=days, now=now)
    else:
        assert record.current.private_key is not None
        current_key = ctx.keys.load(f"{ctx.name}/current", record.current.private_key,
                                    record.current.passphrase, where=str(cred.key))
        pair = _next_pair(current_key, record.current, current_info, bits=bits, days=days,
                          now=now, default_cn=ctx.name)

    def change(rec: KeyRecord) -> KeyRecord | None:
        if rec.pending is not None or sha256_of(rec.current) != current_info.sha256:
            return None
        return KeyRecord(rec.current, pair, rec.previous, {**rec.extra, STAGED_AT: rfc3339(now)})

    result = _update(ctx, change, known=(record, version))
    if result is None:
        return None
    new_record, new_version = result
    info = _info(pair)
    audit.emit(
        "key.staged", credential=ctx.name, key_sha256=info.sha256,
        current_sha256=current_info.sha256, not_after=info.not_after.isoformat(),
        days=round(info.lifetime_seconds / 86400), reason=reason, via=via, version=new_version,
    )
    ctx.step("staged")  # durably stored: only now may its certificate go anywhere
    published = publish(ctx, pair)
    if published:
        marked = _mark_published(ctx, info.sha256, known=(new_record, new_version))
        if marked is not None:
            new_record, new_version = marked
    return Staged(new_record, new_version, pair)


def promote(
    ctx: KeyContext,
    *,
    sha256: str | None,
    reason: str,
    forced: bool = False,
    via: str = "daemon",
    known: tuple[KeyRecord, str] | None = None,
) -> tuple[KeyRecord, str] | None:
    """pending -> current, current -> previous (the old previous is dropped).

    Only the pending key whose fingerprint is `sha256` is promoted; None if it is gone.
    """
    now = ctx.now()
    old: list[str] = []

    def change(rec: KeyRecord) -> KeyRecord | None:
        if rec.pending is None or (sha256 is not None and sha256_of(rec.pending) != sha256):
            return None
        old[:] = [sha256_of(rec.current)]
        extra = {k: v for k, v in rec.extra.items() if k not in PENDING_FIELDS}
        extra[PROMOTED_AT] = rfc3339(now)
        return _prune_warned(KeyRecord(rec.pending, None, rec.current, extra))

    result = _update(ctx, change, known=known)
    if result is None:
        audit.emit("key.promote_skipped", level="warning", credential=ctx.name, key_sha256=sha256,
                   reason="the pending key changed or was already promoted by another writer")
        return None
    record, version = result
    info = _info(record.current)
    audit.emit(
        "key.promoted", credential=ctx.name, key_sha256=info.sha256, previous_sha256=old[0],
        not_after=info.not_after.isoformat(), reason=reason, forced=forced, via=via,
        version=version,
    )
    return result


def discard(ctx: KeyContext, *, sha256: str, via: str) -> tuple[KeyRecord, str] | None:
    """Drop the pending key `sha256` and withdraw its published certificate.

    Refused while the app (Metadata API target) holds the pending certificate: its key would
    be the only one Salesforce accepts.
    """
    if ctx.metadata is not None and sha256_or_none(ctx.metadata.read()) == sha256:
        raise InputError(
            f"{ctx.name}: {ctx.metadata.type_name} {ctx.metadata.app} holds the pending "
            "certificate; discarding its key would lock the integration out",
            hint=f"put the current certificate back first: `rotator keys publish {ctx.name} --current`",
        )

    def change(rec: KeyRecord) -> KeyRecord | None:
        if rec.pending is None or sha256_of(rec.pending) != sha256:
            return None
        extra = {k: v for k, v in rec.extra.items() if k not in PENDING_FIELDS}
        return _prune_warned(KeyRecord(rec.current, None, rec.previous, extra))

    result = _update(ctx, change)
    if result is None:
        return None
    # The record written before this one held the discarded key: the file store keeps it as
    # `.prev`; drop it. (Vault and AWS keep their own version history: docs/key-rotation.md.)
    ref = ctx.cred.key
    drop_previous = getattr(ctx.stores[ref.store], "drop_previous", None)
    if drop_previous is not None:
        drop_previous(ref.path)
    withdrawn = withdraw(ctx, sha256)
    audit.emit("key.discarded", credential=ctx.name, key_sha256=sha256, via=via,
               version=result[1], withdrawn=withdrawn)
    return result


# ---------------------------------------------------------------------------- prepare steps


def _recover_promotion(ctx: KeyContext, state: KeyState, token: TokenRecord | None) -> KeyState:
    """The stored token was minted with the pending key, so the endpoint accepted it: a crash
    (or lost write) came between the token write and the key record write. Finish it."""
    pending = state.record.pending
    if pending is None or token is None or not token.key_sha256:
        return state
    if sha256_of(pending) != token.key_sha256:
        return state
    result = promote(ctx, sha256=token.key_sha256, known=state.known,
                     reason="the stored token was minted with the pending key")
    return _refreshed(ctx, state, result)


def _warn_expiry(ctx: KeyContext, state: KeyState, _token: Any) -> KeyState:
    """certificate.expiry_warning once per threshold, remembered in the key record."""
    cred = ctx.cred
    if not cred.expiry_warnings:
        return state
    info = _info(state.record.current)
    memo = ctx.memo.warned.setdefault(info.sha256, set())
    now = ctx.now()

    def crossed(rec: KeyRecord) -> tuple[int, ...]:
        already = frozenset(_warned(rec, info.sha256) | memo)
        return policy.expiry_warnings_due(
            not_before=info.not_before, not_after=info.not_after, now=now,
            thresholds=cred.expiry_warnings, already=already,
        )

    if not crossed(state.record):
        return state
    fresh: list[int] = []

    def change(rec: KeyRecord) -> KeyRecord | None:
        if sha256_of(rec.current) != info.sha256:
            return None
        fresh[:] = crossed(rec)
        if not fresh:
            return None  # another writer warned already
        warned = sorted(_warned(rec, info.sha256) | memo | set(fresh), reverse=True)
        return replace(rec, extra={**rec.extra, WARNED: {info.sha256: warned}})

    try:
        result = _update(ctx, change, known=state.known)
    except (StoreError, RecordError) as exc:
        # Cannot remember it in the record (read-only key path?): warn anyway, once per process.
        fresh[:] = crossed(state.record)
        _emit_warnings(ctx.name, info, now, fresh, memo)
        _failed(ctx.name, "expiry-warning", exc)
        return state
    _emit_warnings(ctx.name, info, now, fresh if result is not None else [], memo)
    return _refreshed(ctx, state, result)


def _emit_warnings(name: str, info: CertInfo, now: Any, thresholds: list[int], memo: set[int]) -> None:
    for threshold in thresholds:
        audit.emit(
            "certificate.expiry_warning", level="warning", credential=name,
            key_sha256=info.sha256, days_left=round(info.days_left(now), 1),
            threshold=threshold, not_after=info.not_after.isoformat(),
        )
        memo.add(threshold)


def _renew(ctx: KeyContext, state: KeyState, _token: Any) -> KeyState:
    if state.record.pending is not None:
        return state
    cred = ctx.cred
    info = _info(state.record.current)
    decision = policy.renewal_due(
        not_before=info.not_before, not_after=info.not_after, now=ctx.now(),
        renew_before=cred.renew_before, max_key_age=cred.max_key_age,
    )
    if not decision.due:
        return state
    staged = stage(ctx, reason=decision.reason, via="schedule", known=state.known)
    if staged is None:
        return state
    return KeyState(staged.record, replace(state.current, record_version=staged.version),
                    staged_now=True)


def _republish(ctx: KeyContext, state: KeyState, _token: Any) -> KeyState:
    """A pending certificate whose publication failed is offered again, hourly."""
    pending = state.record.pending
    cred = ctx.cred
    targets = cred.publish_certificate or cred.publish_file or cred.upload_hook or ctx.metadata
    if pending is None or not targets or PUBLISHED_AT in state.record.extra:
        return state
    sha = sha256_of(pending)
    last = ctx.memo.published.get(sha)
    if last is not None and ctx.clock() - last < _retry_delay(ctx, sha):
        return state
    if not publish(ctx, pending):
        return state
    return _refreshed(ctx, state, _mark_published(ctx, sha, known=state.known))


def _retry_delay(ctx: KeyContext, sha256: str) -> float:
    """Hourly for a file, record or hook; the Metadata API target backs off like token
    requests do (retry_min doubling up to retry_max, full jitter), since nothing else will
    publish the certificate."""
    if ctx.metadata is None:
        return PUBLISH_RETRY
    attempt = max(1, ctx.memo.publish_failures.get(sha256, 1))
    cred = ctx.cred
    return policy.backoff_delay(attempt, retry_min=cred.retry_min, retry_max=cred.retry_max,
                                rand=random.random())


def mark_published(ctx: KeyContext, sha256: str) -> None:
    """Record that the pending key `sha256` is published (after `rotator keys publish`)."""
    _mark_published(ctx, sha256, known=_read(ctx))


def _mark_published(ctx: KeyContext, sha256: str,
                    known: tuple[KeyRecord, str]) -> tuple[KeyRecord, str] | None:
    stamp = rfc3339(ctx.now())

    def change(rec: KeyRecord) -> KeyRecord | None:
        if rec.pending is None or sha256_of(rec.pending) != sha256 or PUBLISHED_AT in rec.extra:
            return None
        return replace(rec, extra={**rec.extra, PUBLISHED_AT: stamp})

    return _update(ctx, change, known=known)


# ---------------------------------------------------------------------------- helpers


def _update(
    ctx: KeyContext,
    change: Callable[[KeyRecord], KeyRecord | None],
    *,
    known: tuple[KeyRecord, str] | None = None,
) -> tuple[KeyRecord, str] | None:
    """Apply `change` to the key record with compare-and-set; on a lost race re-read and
    apply it again. `change` returns None when there is nothing (left) to do."""
    cred = ctx.cred
    store = ctx.stores[cred.key.store]
    for _ in range(MAX_CAS_ATTEMPTS):
        record, version = known or _read(ctx)
        known = None
        new = change(record)
        if new is None:
            return None
        try:
            written = store.write(
                cred.key.path, new.to_data(), expected_version=version,
                metadata={"credential": ctx.name, "key_sha256": sha256_of(new.current),
                          "written_by": "rotator"},
            )
        except StoreConflict:
            continue
        return new, written.version
    raise StoreConflict(cred.key.store, cred.key.path,
                        f"the key record changed under every one of {MAX_CAS_ATTEMPTS} attempts",
                        hint="another writer keeps changing it; the next run tries again")


def _read(ctx: KeyContext) -> tuple[KeyRecord, str]:
    record, raw = ctx.read_record()
    return record, raw.version


def _refreshed(ctx: KeyContext, state: KeyState,
               result: tuple[KeyRecord, str] | None) -> KeyState:
    if result is None:
        return state
    record, version = result
    if sha256_of(record.current) == state.current.signer.cert_sha256:
        return KeyState(record, replace(state.current, record_version=version), state.staged_now)
    return KeyState(record, ctx.load_pair(record.current, "current", version))


def _pending_signer(ctx: KeyContext, state: KeyState) -> Signer | None:
    if state.record.pending is None:
        return None
    try:
        return ctx.load_pair(state.record.pending, "pending",
                                state.current.record_version).signer
    except RotatorError as exc:
        _failed(ctx.name, "load-pending", exc)  # a broken pending key never stops the current one
        return None


def _audit_pending_failure(ctx: KeyContext, state: KeyState, pending: Signer, exc: RotatorError) -> None:
    name = ctx.name
    if is_invalid_assertion(exc):
        published = state.record.extra.get(PUBLISHED_AT)
        if ctx.metadata is not None and isinstance(published, str):
            reason = (f"the pending certificate was published to {ctx.metadata.type_name} "
                      f"{ctx.metadata.app} at {published}, yet the token endpoint refuses its key: "
                      "Salesforce can take minutes to apply a change; if this persists, someone "
                      "replaced the app's certificate since — `rotator keys publish "
                      f"{name} --pending` puts it back")
        else:
            reason = "the connected app does not hold the pending certificate yet"
        audit.emit("key.pending_rejected", credential=name, key_sha256=pending.cert_sha256,
                   reason=reason)
    else:
        audit.emit("key.pending_failed", level="warning", outcome="failure", credential=name,
                   key_sha256=pending.cert_sha256, error_class=exc.kind,
                   diagnosis=exc.diagnostics(), retryable=exc.retryable)


def _info(pair: KeyPair) -> CertInfo:
    return _info_of_pem(pair.certificate)


def _info_of_pem(pem: str) -> CertInfo:
    return cert_info_from_pem(pem)


def sha256_of(pair: KeyPair) -> str:
    return _info(pair).sha256


def _warned(record: KeyRecord, sha256: str) -> set[int]:
    table = record.extra.get(WARNED)
    values = table.get(sha256) if isinstance(table, dict) else None
    if not isinstance(values, list):
        return set()
    return {v for v in values if isinstance(v, int) and not isinstance(v, bool)}


def _prune_warned(record: KeyRecord) -> KeyRecord:
    """Keep expiry_warned for the certificates still in the record's current/pending slots."""
    table = record.extra.get(WARNED)
    if not isinstance(table, dict):
        return record
    keep = {sha256_of(p) for p in (record.current, record.pending) if p is not None}
    pruned = {k: v for k, v in table.items() if k in keep}
    extra = {k: v for k, v in record.extra.items() if k != WARNED}
    if pruned:
        extra[WARNED] = pruned
    return replace(record, extra=extra)


def _next_pair(current_key: PrivateKey, current: KeyPair, info: CertInfo, *, bits: int | None,
               days: int | None, now: Any, default_cn: str) -> KeyPair:
    """Same key type and size as the current key; same lifetime (or 365 days) and CN."""
    if isinstance(current_key, ec.EllipticCurvePrivateKey):
        key: PrivateKey = generate_ec_key()
    else:
        size = bits or next((b for b in ALLOWED_RSA_BITS if b >= current_key.key_size), 4096)
        key = generate_rsa_key(size)
    days, common_name = _successor_terms(current, info, days=days, default_cn=default_cn)
    new_cert = self_signed_certificate(key, common_name=common_name, days=days, now=now)
    return KeyPair(key_to_pem(key), cert_to_pem(new_cert))


def _next_remote_pair(ctx: KeyContext, current: KeyPair, info: CertInfo, *, bits: int | None,
                      days: int | None, now: Any) -> KeyPair:
    """The keyless twin of _next_pair: the key service makes the key and signs the certificate."""
    from rotator.keys.remote import remote_self_signed_certificate, service

    if not current.remote:
        # signer switched from pem to keyless: the first keyless key comes from `keys init`
        raise RecordError(str(ctx.cred.key), f"signer = \"{ctx.cred.signer}\" but the current key is a PEM",
                          hint=f"run `rotator keys init {ctx.name} --force` for a keyless record")
    days, common_name = _successor_terms(current, info, days=days, default_cn=ctx.name)
    key = service.successor_key(ctx, current, bits=bits)
    cert = remote_self_signed_certificate(key, common_name=common_name, days=days, now=now)
    return service.pair_of(key, cert)


def _successor_terms(current: KeyPair, info: CertInfo, *, days: int | None,
                     default_cn: str) -> tuple[int, str]:
    """The next certificate's lifetime (the current one's, or 365 days) and CN (the current one's)."""
    if days is None:
        days = round(info.lifetime_seconds / 86400)
        days = days if 1 <= days <= 3650 else DEFAULT_DAYS
    cert = load_certificate(current.certificate)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return days, str(names[0].value) if names else default_cn
