"""`keys init` and `keys import`: put a usable key record into a store.

init is the openssl recipe (genrsa 2048, req, x509 -req -sha256 -days 365) in one step;
import takes the files that recipe made and checks them before anything is written.
"""

from __future__ import annotations

from pathlib import Path

from rotator.audit import pipeline as audit
from rotator.errors import InputError, KeyMaterialError
from rotator.keys.context import KeyContext
from rotator.keys.crypto import (
    cert_info,
    cert_to_pem,
    check_key_for_algorithm,
    check_pair,
    generate_rsa_key,
    key_to_pem,
    load_certificate,
    load_private_key,
    self_signed_certificate,
)
from rotator.records import KeyPair, KeyRecord
from rotator.stores.base import SecretStore

MAX_FILE_BYTES = 64 * 1024


def new_pair(*, bits: int, days: int, common_name: str) -> KeyPair:
    key = generate_rsa_key(bits)
    cert = self_signed_certificate(key, common_name=common_name, days=days)
    return KeyPair(key_to_pem(key), cert_to_pem(cert))


def init_key_record(
    store: SecretStore, path: str, *, name: str, bits: int, days: int, common_name: str,
    force: bool,
) -> str:
    """Write a new key record; returns the certificate PEM to upload to the connected app."""
    existing = store.read(path)
    if existing is not None and not force:
        raise InputError(
            f"{store.name}:{path} already holds a key record",
            hint=f"to roll it safely use `rotator keys rotate {name}`; --force replaces it",
        )
    pair = new_pair(bits=bits, days=days, common_name=common_name)
    _write(store, path, KeyRecord(pair), existing.version if existing else None, name, "init")
    return pair.certificate


def init_remote_key_record(
    ctx: KeyContext, *, bits: int, days: int, common_name: str, force: bool,
) -> str:
    """`keys init` for a keyless signer: the key in Transit/KMS (made if missing), a certificate
    signed by the key service, a record with the certificate and the key reference only."""
    from rotator.keys.remote import remote_self_signed_certificate, service

    if not 1 <= days <= 3650:
        raise KeyMaterialError(f"--days {days}: choose between 1 and 3650")
    store = ctx.stores[ctx.cred.key.store]
    path = ctx.cred.key.path
    existing = store.read(path)
    if existing is not None and not force:
        raise InputError(
            f"{store.name}:{path} already holds a key record",
            hint=f"to roll it safely use `rotator keys rotate {ctx.name}`; --force replaces it",
        )
    key = service.initial_key(ctx, bits=bits)
    cert = remote_self_signed_certificate(key, common_name=common_name, days=days)
    pair = service.pair_of(key, cert)
    _write(store, path, KeyRecord(pair), existing.version if existing else None, ctx.name, "init")
    return pair.certificate


def import_key_record(
    store: SecretStore, path: str, *, name: str, key_file: Path, cert_file: Path,
    passphrase: str | None, algorithm: str, force: bool,
) -> str:
    key_pem = _read_text(key_file)
    cert_pem = _read_text(cert_file)
    key = load_private_key(key_pem, passphrase=passphrase, where=str(key_file))
    cert = load_certificate(cert_pem, where=str(cert_file))
    check_key_for_algorithm(key, algorithm, where=str(key_file))
    check_pair(key, cert, where=f"{key_file} and {cert_file}")
    existing = store.read(path)
    if existing is not None and not force:
        raise InputError(
            f"{store.name}:{path} already holds a key record", hint="pass --force to replace it"
        )
    pair = KeyPair(key_pem, cert_pem, passphrase)
    _write(store, path, KeyRecord(pair), existing.version if existing else None, name, "import")
    return cert_pem


def _write(
    store: SecretStore, path: str, record: KeyRecord, version: str | None, name: str, how: str
) -> None:
    info = cert_info(load_certificate(record.current.certificate))
    result = store.write(
        path, record.to_data(), expected_version=version,
        metadata={"credential": name, "key_sha256": info.sha256, "written_by": "rotator"},
    )
    audit.emit(
        "key.created" if how == "init" else "key.imported",
        credential=name, store=store.name, path=path, version=result.version,
        key_sha256=info.sha256, serial=info.serial, not_after=info.not_after.isoformat(),
    )


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"{path}: larger than {MAX_FILE_BYTES} bytes; not a PEM file")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not PEM text (DER? convert with openssl ... -outform PEM)") from None
