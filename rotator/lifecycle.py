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
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rotator import audit, policy
from rotator.clock import rfc3339
from rotator.crypto import (
    ALLOWED_RSA_BITS,
    CertInfo,
    PrivateKey,
    Signer,
    cert_info_from_pem,
    cert_to_pem,
    generate_ec_key,
    generate_rsa_key,
    key_to_pem,
    load_certificate,
    self_signed_certificate,
)
from rotator.errors import (
    InputError,
    RecordError,
    RotatorError,
    StoreConflict,
    StoreError,
    TokenRejected,
)
from rotator.fsutil import make_dirs
from rotator.records import KeyPair, KeyRecord, TokenRecord

if TYPE_CHECKING:
    from rotator.engine import Engine, LoadedKey
    from rotator.providers.base import TokenResponse

# The upload hook may deploy metadata to Salesforce, which takes a while; it still must not
# hold a rotation worker forever.
HOOK_TIMEOUT = 300.0
# Variables the hook inherits; everything else (VAULT_TOKEN, AWS_*, SF_*...) stays behind.
HOOK_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
STDERR_TAIL = 300
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


class PublishError(RotatorError):
    """The pending certificate could not be handed to a publication target."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message, hint=hint)
        self.hook_exit_code = exit_code


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
class Exchanged:
    response: TokenResponse
    signer: Signer
    role: str  # "current" | "pending"


@dataclass
class _Memo:
    """What one process did, for when the key record cannot remember it (no write access)."""

    published: dict[str, float] = field(default_factory=dict)  # pending sha256 -> last attempt
    warned: dict[str, set[int]] = field(default_factory=dict)  # cert sha256 -> thresholds


_memos: weakref.WeakKeyDictionary[Engine, _Memo] = weakref.WeakKeyDictionary()
_memos_lock = threading.Lock()


def _memo(engine: Engine) -> _Memo:
    with _memos_lock:
        memo = _memos.get(engine)
        if memo is None:
            memo = _memos[engine] = _Memo()
        return memo


# ---------------------------------------------------------------------------- engine hooks


def prepare(
    engine: Engine,
    name: str,
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
            state = action(engine, name, state, token)
        except RotatorError as exc:
            _failed(name, step, exc)
    return state


def exchange(engine: Engine, name: str, state: KeyState, current_assertion: str) -> Exchanged:
    """Get a token: the pending key first (if any), else or then the current key.

    At most two token requests. Only `invalid assertion` on the pending key means "not
    uploaded yet"; any error with it is audited and the current key still produces the token.
    """
    provider = engine.provider(name)
    current = state.current.signer
    pending = _pending_signer(engine, name, state)
    pending_assertion = engine.mint(name, pending) if pending is not None else ""
    pending_error: RotatorError | None = None
    if pending is not None and not state.staged_now:
        try:
            return Exchanged(provider.exchange(pending_assertion), pending, "pending")
        except RotatorError as exc:
            pending_error = exc
            _audit_pending_failure(name, pending, exc)
    try:
        return Exchanged(provider.exchange(current_assertion), current, "current")
    except TokenRejected as exc:
        if pending is None or not is_invalid_assertion(exc):
            raise
        if pending_error is None:
            # Staged this very run and the current key is already refused: the upload hook
            # may have installed the new certificate. Switch now.
            audit.emit("key.current_rejected", level="warning", credential=name,
                       key_sha256=current.cert_sha256, pending_sha256=pending.cert_sha256)
            return Exchanged(provider.exchange(pending_assertion), pending, "pending")
        if is_invalid_assertion(pending_error):
            raise  # neither key is the uploaded one
        # The current key is refused, so the pending certificate is the uploaded one: its
        # (often retryable) error is the one that matters.
        raise pending_error from None


def after_write(engine: Engine, name: str, state: KeyState, exchanged: Exchanged) -> None:
    """The token is written; if the pending key made it, promote that key (second CAS write)."""
    if exchanged.role != "pending":
        return
    try:
        promote(engine, name, sha256=exchanged.signer.cert_sha256,
                reason="the token endpoint accepted the pending key", known=state.known)
    except RotatorError as exc:
        # The stored token names the pending key: the next run finishes the promotion.
        _failed(name, "promote", exc)


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
    engine: Engine,
    name: str,
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
    record, version = known or _read(engine, name)
    if record.pending is not None:
        return None
    cred = engine.config.credential(name)
    current_info = _info(record.current)
    current_key = engine.keys.load(f"{name}/current", record.current.private_key,
                                   record.current.passphrase, where=str(cred.key))
    now = engine.now()
    pair = _next_pair(current_key, record.current, current_info, bits=bits, days=days,
                      now=now, default_cn=name)

    def change(rec: KeyRecord) -> KeyRecord | None:
        if rec.pending is not None or _sha256(rec.current) != current_info.sha256:
            return None
        return KeyRecord(rec.current, pair, rec.previous, {**rec.extra, STAGED_AT: rfc3339(now)})

    result = _update(engine, name, change, known=(record, version))
    if result is None:
        return None
    new_record, new_version = result
    info = _info(pair)
    audit.emit(
        "key.staged", credential=name, key_sha256=info.sha256,
        current_sha256=current_info.sha256, not_after=info.not_after.isoformat(),
        days=round(info.lifetime_seconds / 86400), reason=reason, via=via, version=new_version,
    )
    published = publish(engine, name, pair)
    if published:
        marked = _mark_published(engine, name, info.sha256, known=(new_record, new_version))
        if marked is not None:
            new_record, new_version = marked
    return Staged(new_record, new_version, pair)


def promote(
    engine: Engine,
    name: str,
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
    now = engine.now()
    old: list[str] = []

    def change(rec: KeyRecord) -> KeyRecord | None:
        if rec.pending is None or (sha256 is not None and _sha256(rec.pending) != sha256):
            return None
        old[:] = [_sha256(rec.current)]
        extra = {k: v for k, v in rec.extra.items() if k not in PENDING_FIELDS}
        extra[PROMOTED_AT] = rfc3339(now)
        return _prune_warned(KeyRecord(rec.pending, None, rec.current, extra))

    result = _update(engine, name, change, known=known)
    if result is None:
        audit.emit("key.promote_skipped", level="warning", credential=name, key_sha256=sha256,
                   reason="the pending key changed or was already promoted by another writer")
        return None
    record, version = result
    info = _info(record.current)
    audit.emit(
        "key.promoted", credential=name, key_sha256=info.sha256, previous_sha256=old[0],
        not_after=info.not_after.isoformat(), reason=reason, forced=forced, via=via,
        version=version,
    )
    return result


def discard(engine: Engine, name: str, *, sha256: str, via: str) -> tuple[KeyRecord, str] | None:
    """Drop the pending key `sha256` and withdraw its published certificate."""

    def change(rec: KeyRecord) -> KeyRecord | None:
        if rec.pending is None or _sha256(rec.pending) != sha256:
            return None
        extra = {k: v for k, v in rec.extra.items() if k not in PENDING_FIELDS}
        return _prune_warned(KeyRecord(rec.current, None, rec.previous, extra))

    result = _update(engine, name, change)
    if result is None:
        return None
    # The record written before this one held the discarded key: the file store keeps it as
    # `.prev`; drop it. (Vault and AWS keep their own version history: docs/key-rotation.md.)
    ref = engine.config.credential(name).key
    drop_previous = getattr(engine.stores[ref.store], "drop_previous", None)
    if drop_previous is not None:
        drop_previous(ref.path)
    withdrawn = _withdraw(engine, name, sha256)
    audit.emit("key.discarded", credential=name, key_sha256=sha256, via=via,
               version=result[1], withdrawn=withdrawn)
    return result


# ---------------------------------------------------------------------------- publication


def publish(engine: Engine, name: str, pair: KeyPair) -> bool:
    """Hand the pending certificate to every configured target; True if all took it.

    Targets: a `certificate` field at publish_certificate (STORE:PATH), the publish_file
    path (0644), and upload_hook run with the PEM on stdin. Each outcome is audited.
    """
    cred = engine.config.credential(name)
    info = _info(pair)
    _memo(engine).published[info.sha256] = engine.clock()
    targets: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if cred.publish_certificate is not None:
        targets.append(("store", lambda: _publish_store(engine, name, pair.certificate, info)))
    if cred.publish_file is not None:
        path = cred.publish_file
        targets.append(("file", lambda: _publish_file(path, pair.certificate)))
    if cred.upload_hook:
        hook = cred.upload_hook
        targets.append(("hook", lambda: _run_hook(hook, pair.certificate, name, info, cred.client_id)))
    ok = True
    for target, action in targets:
        try:
            detail = action()
        except RotatorError as exc:
            ok = False
            extra = {"exit_code": exc.hook_exit_code} if isinstance(exc, PublishError) else {}
            audit.emit("key.published", level="error", outcome="failure", credential=name,
                       target=target, key_sha256=info.sha256, ok=False, error_class=exc.kind,
                       diagnosis=exc.diagnostics(), **extra)
            continue
        audit.emit("key.published", credential=name, target=target, key_sha256=info.sha256,
                   ok=True, **detail)
    return ok and bool(targets)


def _publish_store(engine: Engine, name: str, pem: str, info: CertInfo) -> dict[str, Any]:
    ref = _publish_ref(engine, name)
    data = {
        "certificate": pem, "sha256": info.sha256, "not_after": info.not_after.isoformat(),
        "credential": name, "status": "pending", "published_at": rfc3339(engine.now()),
    }
    written = _put(engine, ref.store, ref.path, data, name, info.sha256)
    return {"where": str(ref), "version": written}


def _publish_ref(engine: Engine, name: str) -> Any:
    cred = engine.config.credential(name)
    ref = cred.publish_certificate
    for other in engine.config.credentials.values():
        if ref in (other.key, other.token):
            raise InputError(
                f"credentials.{name}.publish_certificate: {ref} is a key or token record",
                hint="publish the certificate to a path of its own",
            )
    return ref


def _put(engine: Engine, store_name: str, path: str, data: dict[str, Any], name: str,
         sha256: str) -> str:
    store = engine.stores[store_name]
    for _ in range(MAX_CAS_ATTEMPTS):
        existing = store.read(path)
        try:
            written = store.write(
                path, data, expected_version=existing.version if existing else None,
                metadata={"credential": name, "key_sha256": sha256, "written_by": "rotator"},
            )
        except StoreConflict:
            continue
        return written.version
    raise StoreConflict(store_name, path, "the record kept changing while publishing")


def _publish_file(path: Path, pem: str) -> dict[str, Any]:
    """Atomic replace; 0644, since a certificate is public and pipelines read it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        make_dirs(path.parent, 0o755)  # never the umask's 0777: others could swap the file
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # whatever the umask
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PublishError(f"publish_file {path}: cannot write ({exc.strerror})") from None
    return {"where": str(path)}


def _run_hook(argv: tuple[str, ...], pem: str, name: str, info: CertInfo,
              client_id: str) -> dict[str, Any]:
    """Run upload_hook with the PEM on stdin: no secret in argv or in the environment."""
    env = {k: os.environ[k] for k in HOOK_ENV if k in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update({
        "ROTATOR_CREDENTIAL": name, "ROTATOR_CLIENT_ID": client_id,
        "ROTATOR_CERT_SHA256": info.sha256, "ROTATOR_CERT_NOT_AFTER": info.not_after.isoformat(),
    })
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env, text=True, start_new_session=True,
        )
    except OSError as exc:
        raise PublishError(f"upload_hook {argv[0]}: cannot start ({exc.strerror})",
                           hint="upload_hook is an argv list: [\"/path/to/script\", \"arg\"]") from None
    try:
        _, stderr = proc.communicate(pem, timeout=HOOK_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: a deploy spawns children
        proc.communicate()
        raise PublishError(f"upload_hook {argv[0]}: no exit within {HOOK_TIMEOUT:g}s; killed",
                           exit_code=proc.returncode) from None
    if proc.returncode != 0:
        tail = " ".join((stderr or "").split())[-STDERR_TAIL:]
        raise PublishError(f"upload_hook {argv[0]}: exit status {proc.returncode}"
                           + (f": {tail}" if tail else ""), exit_code=proc.returncode)
    return {"command": argv[0], "exit_code": 0,
            "duration_s": round(time.monotonic() - started, 3)}


def _withdraw(engine: Engine, name: str, sha256: str) -> list[str]:
    """After a discard: take the certificate back where rotator put it, so no pipeline
    uploads a certificate whose key is gone. A hook's upload cannot be undone."""
    cred = engine.config.credential(name)
    withdrawn = []
    try:
        if cred.publish_certificate is not None:
            ref = _publish_ref(engine, name)
            existing = engine.stores[ref.store].read(ref.path)
            if existing is not None and existing.data.get("sha256") == sha256:
                data = {**existing.data, "certificate": None, "status": "discarded",
                        "discarded_at": rfc3339(engine.now())}
                _put(engine, ref.store, ref.path, data, name, sha256)
                withdrawn.append("store")
        path = cred.publish_file
        if path is not None and path.exists():
            try:
                same = _info_of_pem(path.read_text(encoding="ascii")).sha256 == sha256
            except (RotatorError, UnicodeDecodeError):
                same = False
            if same:
                path.unlink()
                withdrawn.append("file")
    except (RotatorError, OSError) as exc:
        error = exc if isinstance(exc, RotatorError) else PublishError(f"{exc.strerror}")
        _failed(name, "withdraw", error)
    return withdrawn


# ---------------------------------------------------------------------------- prepare steps


def _recover_promotion(engine: Engine, name: str, state: KeyState, token: TokenRecord | None) -> KeyState:
    """The stored token was minted with the pending key, so the endpoint accepted it: a crash
    (or lost write) came between the token write and the key record write. Finish it."""
    pending = state.record.pending
    if pending is None or token is None or not token.key_sha256:
        return state
    if _sha256(pending) != token.key_sha256:
        return state
    result = promote(engine, name, sha256=token.key_sha256, known=state.known,
                     reason="the stored token was minted with the pending key")
    return _refreshed(engine, name, state, result)


def _warn_expiry(engine: Engine, name: str, state: KeyState, _token: Any) -> KeyState:
    """certificate.expiry_warning once per threshold, remembered in the key record."""
    cred = engine.config.credential(name)
    if not cred.expiry_warnings:
        return state
    info = _info(state.record.current)
    memo = _memo(engine).warned.setdefault(info.sha256, set())
    now = engine.now()

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
        if _sha256(rec.current) != info.sha256:
            return None
        fresh[:] = crossed(rec)
        if not fresh:
            return None  # another writer warned already
        warned = sorted(_warned(rec, info.sha256) | memo | set(fresh), reverse=True)
        return replace(rec, extra={**rec.extra, WARNED: {info.sha256: warned}})

    try:
        result = _update(engine, name, change, known=state.known)
    except (StoreError, RecordError) as exc:
        # Cannot remember it in the record (read-only key path?): warn anyway, once per process.
        fresh[:] = crossed(state.record)
        _emit_warnings(name, info, now, fresh, memo)
        _failed(name, "expiry-warning", exc)
        return state
    _emit_warnings(name, info, now, fresh if result is not None else [], memo)
    return _refreshed(engine, name, state, result)


def _emit_warnings(name: str, info: CertInfo, now: Any, thresholds: list[int], memo: set[int]) -> None:
    for threshold in thresholds:
        audit.emit(
            "certificate.expiry_warning", level="warning", credential=name,
            key_sha256=info.sha256, days_left=round(info.days_left(now), 1),
            threshold=threshold, not_after=info.not_after.isoformat(),
        )
        memo.add(threshold)


def _renew(engine: Engine, name: str, state: KeyState, _token: Any) -> KeyState:
    if state.record.pending is not None:
        return state
    cred = engine.config.credential(name)
    info = _info(state.record.current)
    decision = policy.renewal_due(
        not_before=info.not_before, not_after=info.not_after, now=engine.now(),
        renew_before=cred.renew_before, max_key_age=cred.max_key_age,
    )
    if not decision.due:
        return state
    staged = stage(engine, name, reason=decision.reason, via="schedule", known=state.known)
    if staged is None:
        return state
    return KeyState(staged.record, replace(state.current, record_version=staged.version),
                    staged_now=True)


def _republish(engine: Engine, name: str, state: KeyState, _token: Any) -> KeyState:
    """A pending certificate whose publication failed is offered again, hourly."""
    pending = state.record.pending
    cred = engine.config.credential(name)
    targets = cred.publish_certificate or cred.publish_file or cred.upload_hook
    if pending is None or not targets or PUBLISHED_AT in state.record.extra:
        return state
    sha = _sha256(pending)
    last = _memo(engine).published.get(sha)
    if last is not None and engine.clock() - last < PUBLISH_RETRY:
        return state
    if not publish(engine, name, pending):
        return state
    return _refreshed(engine, name, state, _mark_published(engine, name, sha, known=state.known))


def _mark_published(engine: Engine, name: str, sha256: str,
                    known: tuple[KeyRecord, str]) -> tuple[KeyRecord, str] | None:
    stamp = rfc3339(engine.now())

    def change(rec: KeyRecord) -> KeyRecord | None:
        if rec.pending is None or _sha256(rec.pending) != sha256 or PUBLISHED_AT in rec.extra:
            return None
        return replace(rec, extra={**rec.extra, PUBLISHED_AT: stamp})

    return _update(engine, name, change, known=known)


# ---------------------------------------------------------------------------- helpers


def _update(
    engine: Engine,
    name: str,
    change: Callable[[KeyRecord], KeyRecord | None],
    *,
    known: tuple[KeyRecord, str] | None = None,
) -> tuple[KeyRecord, str] | None:
    """Apply `change` to the key record with compare-and-set; on a lost race re-read and
    apply it again. `change` returns None when there is nothing (left) to do."""
    cred = engine.config.credential(name)
    store = engine.stores[cred.key.store]
    for _ in range(MAX_CAS_ATTEMPTS):
        record, version = known or _read(engine, name)
        known = None
        new = change(record)
        if new is None:
            return None
        try:
            written = store.write(
                cred.key.path, new.to_data(), expected_version=version,
                metadata={"credential": name, "key_sha256": _sha256(new.current),
                          "written_by": "rotator"},
            )
        except StoreConflict:
            continue
        return new, written.version
    raise StoreConflict(cred.key.store, cred.key.path,
                        f"the key record changed under every one of {MAX_CAS_ATTEMPTS} attempts",
                        hint="another writer keeps changing it; the next run tries again")


def _read(engine: Engine, name: str) -> tuple[KeyRecord, str]:
    record, raw = engine.read_key_record(name)
    return record, raw.version


def _refreshed(engine: Engine, name: str, state: KeyState,
               result: tuple[KeyRecord, str] | None) -> KeyState:
    if result is None:
        return state
    record, version = result
    if _sha256(record.current) == state.current.signer.cert_sha256:
        return KeyState(record, replace(state.current, record_version=version), state.staged_now)
    return KeyState(record, engine.load_pair(name, record.current, "current", version))


def _pending_signer(engine: Engine, name: str, state: KeyState) -> Signer | None:
    if state.record.pending is None:
        return None
    try:
        return engine.load_pair(name, state.record.pending, "pending",
                                state.current.record_version).signer
    except RotatorError as exc:
        _failed(name, "load-pending", exc)  # a broken pending key never stops the current one
        return None


def _audit_pending_failure(name: str, pending: Signer, exc: RotatorError) -> None:
    if is_invalid_assertion(exc):
        audit.emit("key.pending_rejected", credential=name, key_sha256=pending.cert_sha256,
                   reason="the connected app does not hold the pending certificate yet")
    else:
        audit.emit("key.pending_failed", level="warning", outcome="failure", credential=name,
                   key_sha256=pending.cert_sha256, error_class=exc.kind,
                   diagnosis=exc.diagnostics(), retryable=exc.retryable)


def _failed(name: str, step: str, exc: RotatorError) -> None:
    audit.emit("lifecycle.failed", level="error", outcome="failure", credential=name, step=step,
               error_class=exc.kind, diagnosis=exc.diagnostics(), retryable=exc.retryable)


def _info(pair: KeyPair) -> CertInfo:
    return _info_of_pem(pair.certificate)


def _info_of_pem(pem: str) -> CertInfo:
    return cert_info_from_pem(pem)


def _sha256(pair: KeyPair) -> str:
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
    keep = {_sha256(p) for p in (record.current, record.pending) if p is not None}
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
    if days is None:
        days = round(info.lifetime_seconds / 86400)
        days = days if 1 <= days <= 3650 else DEFAULT_DAYS
    cert = load_certificate(current.certificate)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else default_cn
    new_cert = self_signed_certificate(key, common_name=common_name, days=days, now=now)
    return KeyPair(key_to_pem(key), cert_to_pem(new_cert))


# ---------------------------------------------------------------------------- CLI


def keys_command(engine: Engine, name: str, args: argparse.Namespace) -> int:
    """`keys rotate | promote | discard NAME`; refusals are InputError (exit 2, one line)."""
    handlers = {"rotate": _cmd_rotate, "promote": _cmd_promote, "discard": _cmd_discard}
    try:
        return handlers[args.keys_command](engine, name, args)
    finally:
        engine.stores.close()


def _cmd_rotate(engine: Engine, name: str, args: argparse.Namespace) -> int:
    record, version = _read(engine, name)
    if record.pending is not None:
        raise InputError(
            f"{name}: a pending key is already staged ({_sha256(record.pending)[:16]})",
            hint=f"promote it with `rotator keys promote {name}` or drop it with "
                 f"`rotator keys discard {name}` first",
        )
    engine.load_pair(name, record.current, "current", version)
    staged = stage(engine, name, reason="requested by the operator", via="cli",
                   bits=args.bits, days=args.days, known=(record, version))
    if staged is None:
        raise InputError(f"{name}: the key record changed while staging",
                         hint="another writer staged or promoted a key; see `rotator status`")
    sys.stdout.write(staged.pair.certificate)
    return 0


def _cmd_promote(engine: Engine, name: str, args: argparse.Namespace) -> int:
    record, version = _read(engine, name)
    if record.pending is None:
        raise InputError(f"{name}: no pending key to promote",
                         hint=f"stage one with `rotator keys rotate {name}`")
    sha = _sha256(record.pending)
    if not args.force:
        _verify_pending(engine, name, record, version)
    result = promote(engine, name, sha256=sha, forced=args.force, via="cli",
                     reason="forced by the operator" if args.force
                     else "the token endpoint accepted the pending key",
                     known=(record, version))
    if result is None:
        raise InputError(f"{name}: the pending key changed while promoting",
                         hint="see `rotator status`, then retry")
    print(f"{name}: promoted key {sha}")
    return 0


def _verify_pending(engine: Engine, name: str, record: KeyRecord, version: str) -> None:
    """One token request signed by the pending key: accepted means its certificate is live."""
    assert record.pending is not None
    signer = engine.load_pair(name, record.pending, "pending", version).signer
    try:
        engine.provider(name).exchange(engine.mint(name, signer))
    except TokenRejected as exc:
        if not is_invalid_assertion(exc):
            raise
        raise InputError(
            f"{name}: the token endpoint rejects the pending key (invalid assertion)",
            hint=f"upload its certificate (`rotator cert show {name} --pending --pem`) and retry, "
                 "or pass --force",
        ) from None
    audit.emit("key.pending_verified", credential=name, key_sha256=signer.cert_sha256)


def _cmd_discard(engine: Engine, name: str, _args: argparse.Namespace) -> int:
    record, _ = _read(engine, name)
    if record.pending is None:
        raise InputError(f"{name}: no pending key to discard")
    sha = _sha256(record.pending)
    if discard(engine, name, sha256=sha, via="cli") is None:
        raise InputError(f"{name}: the pending key changed while discarding",
                         hint="see `rotator status`, then retry")
    print(f"{name}: discarded pending key {sha}")
    return 0
