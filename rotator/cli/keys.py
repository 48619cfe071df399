"""`rotator keys rotate | promote | discard | publish NAME`: the operator's hands on the key lifecycle.

The decisions and the compare-and-set writes live in rotator.keys.lifecycle; this module
turns arguments into calls and results into lines on the terminal.
"""

from __future__ import annotations

import argparse
import sys

from rotator.audit import pipeline as audit
from rotator.engine import Engine
from rotator.errors import InputError, TokenRejected
from rotator.keys import lifecycle
from rotator.keys.context import KeyContext
from rotator.records import KeyRecord


def _read(ctx: KeyContext) -> tuple[KeyRecord, str]:
    record, raw = ctx.read_record()
    return record, raw.version


def keys_command(engine: Engine, name: str, args: argparse.Namespace) -> int:
    """`keys rotate | promote | discard NAME`; refusals are InputError (exit 2, one line)."""
    from rotator.cli.publish import publish_command

    handlers = {"rotate": _cmd_rotate, "promote": _cmd_promote, "discard": _cmd_discard,
                "retire": _cmd_retire, "publish": publish_command}
    try:
        return handlers[args.keys_command](engine, name, args)
    finally:
        engine.stores.close()


def _cmd_rotate(engine: Engine, name: str, args: argparse.Namespace) -> int:
    ctx = engine.key_context(name)
    record, version = _read(ctx)
    if record.pending is not None:
        raise InputError(
            f"{name}: a pending key is already staged ({lifecycle.sha256_of(record.pending)[:16]})",
            hint=f"promote it with `rotator keys promote {name}` or drop it with "
                 f"`rotator keys discard {name}` first",
        )
    ctx.load_pair(record.current, "current", version)
    staged = lifecycle.stage(ctx, reason="requested by the operator", via="cli",
                             bits=args.bits, days=args.days, known=(record, version))
    if staged is None:
        raise InputError(f"{name}: the key record changed while staging",
                         hint="another writer staged or promoted a key; see `rotator status`")
    sys.stdout.write(staged.pair.certificate)
    return 0


def _cmd_promote(engine: Engine, name: str, args: argparse.Namespace) -> int:
    ctx = engine.key_context(name)
    record, version = _read(ctx)
    if record.pending is None:
        raise InputError(f"{name}: no pending key to promote",
                         hint=f"stage one with `rotator keys rotate {name}`")
    sha = lifecycle.sha256_of(record.pending)
    if not args.force:
        _verify_pending(engine, ctx, record, version)
    result = lifecycle.promote(ctx, sha256=sha, forced=args.force, via="cli",
                               reason="forced by the operator" if args.force
                               else "the token endpoint accepted the pending key",
                               known=(record, version))
    if result is None:
        raise InputError(f"{name}: the pending key changed while promoting",
                         hint="see `rotator status`, then retry")
    print(f"{name}: promoted key {sha}")
    return 0


def _verify_pending(engine: Engine, ctx: KeyContext, record: KeyRecord, version: str) -> None:
    """One token request signed by the pending key: accepted means its certificate is live."""
    name = ctx.name
    assert record.pending is not None
    signer = ctx.load_pair(record.pending, "pending", version).signer
    try:
        engine.provider(name).exchange(engine.mint(name, signer))
    except TokenRejected as exc:
        if not lifecycle.is_invalid_assertion(exc):
            raise
        raise InputError(
            f"{name}: the token endpoint rejects the pending key (invalid assertion)",
            hint=f"upload its certificate (`rotator cert show {name} --pending --pem`) and retry, "
                 "or pass --force",
        ) from None
    audit.emit("key.pending_verified", credential=name, key_sha256=signer.cert_sha256)


def _cmd_discard(engine: Engine, name: str, _args: argparse.Namespace) -> int:
    ctx = engine.key_context(name)
    record, _ = _read(ctx)
    if record.pending is None:
        raise InputError(f"{name}: no pending key to discard")
    sha = lifecycle.sha256_of(record.pending)
    if lifecycle.discard(ctx, sha256=sha, via="cli") is None:
        raise InputError(f"{name}: the pending key changed while discarding",
                         hint="see `rotator status`, then retry")
    print(f"{name}: discarded pending key {sha}")
    return 0


def _cmd_retire(engine: Engine, name: str, args: argparse.Namespace) -> int:
    """aws-kms: schedule an old KMS key for deletion; refused for the record's current or
    pending key. The only way rotator ever deletes a key (docs/keyless.md)."""
    from rotator.keys.remote import service

    ctx = engine.key_context(name)
    when = service.retire(ctx, args.key_id, days=args.days)
    print(f"{name}: KMS key {args.key_id} scheduled for deletion ({when}); "
          f"undo with `aws kms cancel-key-deletion --key-id {args.key_id}`")
    return 0
