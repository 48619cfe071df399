"""Handing a pending certificate to the operator: a record in a store, a file, an upload hook.

`publish` offers the certificate to every target the credential configures and audits each
outcome; `withdraw` takes it back after a discard. The upload hook runs with the PEM on stdin,
a minimal environment and a timeout (docs/key-rotation.md).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rotator.audit import pipeline as audit
from rotator.clock import rfc3339
from rotator.errors import InputError, RotatorError, StoreConflict
from rotator.fsutil import make_dirs
from rotator.keys.context import KeyContext
from rotator.keys.crypto import CertInfo, cert_info_from_pem
from rotator.keys.metadata import publish_to_app
from rotator.records import KeyPair

# The upload hook may deploy metadata to Salesforce, which takes a while; it still must not
# hold a rotation worker forever.
HOOK_TIMEOUT = 300.0
# Variables the hook inherits; everything else (VAULT_TOKEN, AWS_*, SF_*...) stays behind.
HOOK_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
STDERR_TAIL = 300
MAX_CAS_ATTEMPTS = 3


class PublishError(RotatorError):
    """The pending certificate could not be handed to a publication target."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message, hint=hint)
        self.hook_exit_code = exit_code


def publish(ctx: KeyContext, pair: KeyPair) -> bool:
    """Hand the pending certificate to every configured target; True if all took it.

    Targets: a `certificate` field at publish_certificate (STORE:PATH), the publish_file
    path (0644), and upload_hook run with the PEM on stdin. Each outcome is audited.
    """
    cred = ctx.cred
    info = cert_info_from_pem(pair.certificate)
    ctx.memo.published[info.sha256] = ctx.clock()
    targets: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if cred.publish_certificate is not None:
        targets.append(("store", lambda: _publish_store(ctx, pair.certificate, info)))
    if cred.publish_file is not None:
        path = cred.publish_file
        targets.append(("file", lambda: _publish_file(path, pair.certificate)))
    if cred.upload_hook:
        hook = cred.upload_hook
        targets.append(("hook", lambda: _run_hook(hook, pair.certificate, ctx.name, info, cred.client_id)))
    publisher = ctx.metadata
    if publisher is not None:  # last: the other targets are records of what is about to go live
        targets.append(("metadata", lambda: publish_to_app(publisher, pair.certificate, info.sha256)))
    ok = True
    for target, action in targets:
        try:
            detail = action()
        except RotatorError as exc:
            ok = False
            extra: dict[str, Any] = {"exit_code": exc.hook_exit_code} if isinstance(exc, PublishError) else {}
            if target == "metadata" and publisher is not None:
                if ctx.on_publication is not None:
                    ctx.on_publication(False)
                failures = ctx.memo.publish_failures
                failures[info.sha256] = failures.get(info.sha256, 0) + 1
                extra.update(app=publisher.app, via=publisher.via, retryable=exc.retryable)
            audit.emit("key.published", level="error", outcome="failure", credential=ctx.name,
                       target=target, key_sha256=info.sha256, ok=False, error_class=exc.kind,
                       diagnosis=exc.diagnostics(), **extra)
            continue
        if target == "metadata":
            ctx.memo.publish_failures.pop(info.sha256, None)
            if ctx.on_publication is not None:
                ctx.on_publication(True)
        audit.emit("key.published", credential=ctx.name, target=target, key_sha256=info.sha256,
                   ok=True, **detail)
    if publisher is not None:
        ctx.step("published")
    return ok and bool(targets)


def _publish_store(ctx: KeyContext, pem: str, info: CertInfo) -> dict[str, Any]:
    ref = _publish_ref(ctx)
    data = {
        "certificate": pem, "sha256": info.sha256, "not_after": info.not_after.isoformat(),
        "credential": ctx.name, "status": "pending", "published_at": rfc3339(ctx.now()),
    }
    written = _put(ctx, ref.store, ref.path, data, ctx.name, info.sha256)
    return {"where": str(ref), "version": written}


def _publish_ref(ctx: KeyContext) -> Any:
    cred = ctx.cred
    ref = cred.publish_certificate
    for other in ctx.credentials.values():
        if ref in (other.key, other.token):
            raise InputError(
                f"credentials.{ctx.name}.publish_certificate: {ref} is a key or token record",
                hint="publish the certificate to a path of its own",
            )
    return ref


def _put(ctx: KeyContext, store_name: str, path: str, data: dict[str, Any], name: str,
         sha256: str) -> str:
    store = ctx.stores[store_name]
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


def withdraw(ctx: KeyContext, sha256: str) -> list[str]:
    """After a discard: take the certificate back where rotator put it, so no pipeline
    uploads a certificate whose key is gone. A hook's upload cannot be undone."""
    cred = ctx.cred
    withdrawn = []
    try:
        if cred.publish_certificate is not None:
            ref = _publish_ref(ctx)
            existing = ctx.stores[ref.store].read(ref.path)
            if existing is not None and existing.data.get("sha256") == sha256:
                data = {**existing.data, "certificate": None, "status": "discarded",
                        "discarded_at": rfc3339(ctx.now())}
                _put(ctx, ref.store, ref.path, data, ctx.name, sha256)
                withdrawn.append("store")
        path = cred.publish_file
        if path is not None and path.exists():
            try:
                same = cert_info_from_pem(path.read_text(encoding="ascii")).sha256 == sha256
            except (RotatorError, UnicodeDecodeError):
                same = False
            if same:
                path.unlink()
                withdrawn.append("file")
    except (RotatorError, OSError) as exc:
        error = exc if isinstance(exc, RotatorError) else PublishError(f"{exc.strerror}")
        audit_failure(ctx.name, "withdraw", error)
    return withdrawn


def audit_failure(name: str, step: str, exc: RotatorError) -> None:
    """A lifecycle step failed: audited, never fatal to the token."""
    audit.emit("lifecycle.failed", level="error", outcome="failure", credential=name, step=step,
               error_class=exc.kind, diagnosis=exc.diagnostics(), retryable=exc.retryable)
