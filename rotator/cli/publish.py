"""`rotator keys publish NAME [--pending | --current] [--dry-run]`: the Metadata API by hand.

Reads the app's component, replaces only its certificate, reads it back and compares the
fingerprints (rotator.keys.metadata). `--current` puts the current certificate back: the way
out when the app holds a certificate whose key rotator does not sign with.
"""

from __future__ import annotations

import argparse

from rotator.audit import pipeline as audit
from rotator.engine import Engine
from rotator.errors import InputError, RotatorError
from rotator.keys import lifecycle
from rotator.keys.metadata import publish_to_app, sha256_or_none


def publish_command(engine: Engine, name: str, args: argparse.Namespace) -> int:
    ctx = engine.key_context(name)
    publisher = ctx.metadata
    if publisher is None:
        raise InputError(f"credentials.{name}.publish: not configured",
                         hint='add publish = { type = "connected-app", app = "Your_App_Name" }')
    record, raw = ctx.read_record()
    role = "current" if args.current else "pending"
    pair = record.current if role == "current" else record.pending
    if pair is None:
        raise InputError(f"{name}: no pending key to publish",
                         hint=f"stage one with `rotator keys rotate {name}`, or pass --current")
    # the key must be stored and match its certificate before the certificate goes live
    sha = ctx.load_pair(pair, role, raw.version).signer.cert_sha256
    where = f"{publisher.type_name} {publisher.app}"
    old = sha256_or_none(publisher.read())
    print(f"{name}: {where}: certificate {old or 'none'} -> {sha} ({role})")
    if args.dry_run:
        print(f"{name}: dry run: nothing changed")
        return 0
    if old == sha:
        print(f"{name}: {where} already holds it; nothing changed")
        return 0
    try:
        detail = publish_to_app(publisher, pair.certificate, sha)
    except RotatorError as exc:
        audit.emit("key.published", level="error", outcome="failure", credential=name, target="metadata",
                   key_sha256=sha, ok=False, role=role, app=publisher.app, via=publisher.via,
                   error_class=exc.kind, diagnosis=exc.diagnostics(), retryable=exc.retryable)
        raise
    audit.emit("key.published", credential=name, target="metadata", key_sha256=sha, ok=True,
               role=role, **detail)
    if role == "pending":
        lifecycle.mark_published(ctx, sha)
    print(f"{name}: {where} now holds {sha}")
    return 0
