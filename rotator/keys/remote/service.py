"""A credential's keyless signer, from its config: `signer` + `signer_key` -> a key service.

* ``signer = "vault-transit"``: a :class:`TransitService` on the Vault store named by
  ``signer_key`` (its ``transit_mount``), using that store's authenticated hvac client and its
  login/renewal/re-login (:class:`rotator.stores.vault_auth.VaultAuth`): one Vault token, one
  connection pool, one place that knows how to log in.
* ``signer = "aws-kms"``: a :class:`KmsService` with the AWS store's region, endpoint_url,
  profile and timeout (the credential chain boto3 uses for the store).

One service per store object (a store rebuilt after ``StoreSet.close`` gets a new one) and one
loaded signer per key slot and key identity per :class:`KeyCache` (per engine), as for PEM keys.

A keyless key pair in the key record is the certificate plus ``key_ref`` (the Transit key name
with ``key_version``, or the KMS key ARN). Loading it reads the key's public key from the
service and checks that it is the certificate's; every signature is then verified locally
against the certificate (:class:`RemoteSigner`).
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from typing import TYPE_CHECKING, Any

from rotator.audit import pipeline as audit
from rotator.errors import ConfigError, InputError, KeyMaterialError, RecordError, RecordNotFound
from rotator.keys.crypto import (
    CertInfo,
    KeyCache,
    cert_info,
    cert_to_pem,
    load_certificate,
    public_key_der,
)
from rotator.keys.remote.assertion import RemoteSigner
from rotator.keys.remote.base import RemoteKey
from rotator.records import KeyPair

if TYPE_CHECKING:
    from cryptography import x509

    from rotator.keys.context import KeyContext
    from rotator.keys.remote.kms import KmsService
    from rotator.keys.remote.transit import TransitService

TRANSIT = "vault-transit"
KMS = "aws-kms"

_lock = threading.Lock()
_services: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # store -> service
# KeyCache -> slot -> (identity, signer, info): what the PEM KeyCache does for key objects
_loaded: weakref.WeakKeyDictionary[KeyCache, dict[str, tuple[bytes, RemoteSigner, CertInfo]]] = \
    weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------------- services


def service(ctx: KeyContext) -> TransitService | KmsService:
    """The key service of this credential's signer_key store (made once per store object)."""
    cred = ctx.cred
    ref = cred.signer_ref
    if ref is None or cred.signer == "pem":
        raise ConfigError(f"credentials.{ctx.name}.signer: not a keyless signer")
    store = ctx.stores[ref.store]
    with _lock:
        made = _services.get(store)
        if made is None:
            made = _services[store] = _make_service(cred.signer, ref.store, store)
    return made


def _make_service(kind: str, name: str, store: Any) -> TransitService | KmsService:
    if kind == TRANSIT:
        from rotator.keys.remote.transit import TransitService
        from rotator.stores.vault import VaultStore

        if not isinstance(store, VaultStore):
            raise ConfigError(f'stores.{name}: signer = "vault-transit" needs a vault store')
        return TransitService(store.client, mount=store.config.transit_mount, store=name, auth=store.auth)
    from rotator.keys.remote.kms import KmsService
    from rotator.stores.aws import AwsStore

    if not isinstance(store, AwsStore):
        raise ConfigError(f'stores.{name}: signer = "aws-kms" needs an aws store')
    config = store.config
    return KmsService(region=config.region, endpoint_url=config.endpoint_url, store=name,
                      timeout=config.timeout, profile=config.profile)


# ---------------------------------------------------------------------------- loading


def load(ctx: KeyContext, pair: KeyPair, role: str, *, where: str) -> tuple[RemoteSigner, CertInfo, bool]:
    """The signer of a keyless key pair, checked once per key identity: (signer, info, fresh)."""
    cred = ctx.cred
    if not pair.remote:
        raise KeyMaterialError(
            f"{where}: signer = \"{cred.signer}\" but the key record holds a private_key",
            hint=f"make a keyless record with `rotator keys init {ctx.name} --force`, "
                 "or set signer = \"pem\"",
        )
    svc = service(ctx)
    identity = hashlib.sha256("\0".join((
        cred.signer, str(cred.signer_key), str(pair.key_ref), str(pair.key_version), pair.certificate,
        str(id(svc)),
    )).encode("utf-8", "surrogatepass")).digest()
    slot = f"{ctx.name}/{role}"
    with _lock:
        slots = _loaded.setdefault(ctx.keys, {})
        cached = slots.get(slot)
    if cached is not None and cached[0] == identity:
        return cached[1], cached[2], False
    key = _key(svc, pair, where=where)
    cert = load_certificate(pair.certificate, where=where)
    if public_key_der(key.public_key()) != public_key_der(cert.public_key()):
        raise KeyMaterialError(
            f"{where}: the certificate does not belong to {key.reference}",
            hint=f"its public key differs; re-make it for this key (rotator keys init {ctx.name} --force)",
        )
    info = cert_info(cert)
    signer = RemoteSigner(key, info.sha256, cert.public_key())  # type: ignore[arg-type]
    with _lock:
        slots[slot] = (identity, signer, info)
    return signer, info, True


def _key(svc: TransitService | KmsService, pair: KeyPair, *, where: str) -> RemoteKey:
    from rotator.keys.remote.transit import TransitService

    assert pair.key_ref is not None
    if isinstance(svc, TransitService):
        if pair.key_version is None:
            # an unpinned Transit key would follow `rotate` silently: the record must say which
            raise RecordError(where, "key_version is missing for a Transit key",
                              hint="re-make the record with `rotator keys init NAME --force`")
        return svc.key(pair.key_ref, pair.key_version)
    if pair.key_version is not None:
        raise RecordError(where, "key_version is for Transit keys; a KMS key_ref is the key ARN")
    return svc.key(pair.key_ref)


# ---------------------------------------------------------------------------- making keys


def pair_of(key: RemoteKey, cert: x509.Certificate) -> KeyPair:
    """The key record slot for `key` and its certificate: never a private key."""
    from rotator.keys.remote.transit import TransitKey

    if isinstance(key, TransitKey):
        return KeyPair(None, cert_to_pem(cert), key_ref=key.name, key_version=key.version)
    return KeyPair(None, cert_to_pem(cert), key_ref=key.reference)


def initial_key(ctx: KeyContext, *, bits: int) -> RemoteKey:
    """`keys init`: the key signer_key names; created (RSA, `bits`) if it does not exist yet.

    Transit: the key name (its latest version). KMS: an existing key id, ARN or alias; a
    missing alias/NAME gets a new key (tagged with the credential) and the alias.
    """
    from rotator.keys.remote.transit import TransitService

    svc = service(ctx)
    ref = ctx.cred.signer_ref
    assert ref is not None
    name = ref.path
    if isinstance(svc, TransitService):
        try:
            svc.describe(name)
        except RecordNotFound:
            svc.create_key(name, f"rsa-{_bits(bits)}")
            audit.emit("key.remote_created", credential=ctx.name, signer=TRANSIT, key_ref=name,
                       key_type=f"rsa-{bits}", via="init")
        return svc.key(name)
    try:
        return svc.key(name)
    except RecordNotFound:
        if not (name.startswith("alias/") or ":alias/" in name):
            raise
    arn = svc.create_key(ctx.name, key_spec=f"RSA_{_bits(bits)}")
    audit.emit("key.remote_created", credential=ctx.name, signer=KMS, key_ref=arn,
               key_type=f"RSA_{bits}", via="init")
    svc.create_alias(name.split(":", 5)[-1] if name.startswith("arn:") else name, arn)
    return svc.key(arn)


def successor_key(ctx: KeyContext, current: KeyPair, *, bits: int | None) -> RemoteKey:
    """Rollover: Transit `rotate` (a new version of the same key), or a new KMS key."""
    from rotator.keys.remote.transit import TransitService

    svc = service(ctx)
    assert current.key_ref is not None
    if isinstance(svc, TransitService):
        if bits is not None:
            raise InputError("--bits: a Transit key keeps its type across versions",
                             hint="a new Transit key of another size needs a new signer_key and keys init")
        version = svc.rotate(current.key_ref)
        audit.emit("key.remote_created", credential=ctx.name, signer=TRANSIT, key_ref=current.key_ref,
                   key_version=version, via="rollover")
        return svc.key(current.key_ref, version)
    size = bits or load_certificate(current.certificate).public_key().key_size  # type: ignore[union-attr]
    arn = svc.create_key(ctx.name, key_spec=f"RSA_{_bits(size)}")
    audit.emit("key.remote_created", credential=ctx.name, signer=KMS, key_ref=arn, key_type=f"RSA_{size}",
               via="rollover")
    return svc.key(arn)


def _bits(bits: int) -> int:
    if bits not in (2048, 3072, 4096):
        raise KeyMaterialError(f"--bits {bits}: use 2048, 3072 or 4096")
    return bits


def retire(ctx: KeyContext, key_id: str, *, days: int) -> str:
    """Schedule a KMS key that the key record no longer signs with for deletion (explicit
    operator command only). Refused for the current and the pending key."""
    from rotator.keys.remote.kms import KmsService

    if ctx.cred.signer != KMS:
        raise InputError(
            f"{ctx.name}: keys retire is for signer = \"aws-kms\"",
            hint="old Transit versions stay in Vault; to stop them signing, raise the key's "
                 "min_encryption_version (bao write transit/keys/NAME/config min_encryption_version=N)",
        )
    svc = service(ctx)
    assert isinstance(svc, KmsService)
    record, _ = ctx.read_record()
    arn = svc.describe(key_id).arn
    for role in ("current", "pending"):
        pair = getattr(record, role)
        if pair is not None and pair.key_ref == arn:  # records hold the key ARN (pair_of)
            raise InputError(f"{ctx.name}: KMS key {key_id} is the {role} key; it still signs",
                             hint="retire a key only after a promotion replaced it")
    when = svc.schedule_deletion(arn, days=days)
    audit.emit("key.retired", credential=ctx.name, signer=KMS, key_ref=arn, days=days, deletion_date=when)
    return when
