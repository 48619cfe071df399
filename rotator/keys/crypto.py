"""Keys, certificates and assertions.

What `openssl genrsa` / `req` / `x509 -req -sha256 -days 365` and jwt.io do by hand.
A private key is parsed once and kept as a key object: PyJWT given PEM bytes
re-validates the key on every signature (~36 ms), given the object it just signs.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from rotator.errors import KeyMaterialError

MIN_RSA_BITS = 2048
ALLOWED_RSA_BITS = (2048, 3072, 4096)
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# ---------------------------------------------------------------------------- making keys


def generate_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    if bits not in ALLOWED_RSA_BITS:
        raise KeyMaterialError(f"--bits {bits}: use 2048, 3072 or 4096")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def generate_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def self_signed_certificate(
    key: PrivateKey, *, common_name: str, days: int = 365, now: datetime | None = None
) -> x509.Certificate:
    if not 1 <= days <= 3650:
        raise KeyMaterialError(f"--days {days}: choose between 1 and 3650")
    now = now or datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def key_to_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def cert_to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


# ---------------------------------------------------------------------------- loading


def load_private_key(
    pem: str | bytes, *, passphrase: str | None = None, where: str = "private_key"
) -> PrivateKey:
    """Parse a PEM key (PKCS#1 or PKCS#8, optionally encrypted). Errors name `where`, never the key."""
    data = _utf8(pem, f"{where}: not a PEM private key (not plain text)")
    if b"-----BEGIN" not in data:
        raise KeyMaterialError(f"{where}: not a PEM private key (no BEGIN line)")
    password = _utf8(passphrase, f"{where}: the passphrase is not plain text") if passphrase else None
    if password is not None:
        _check_kdf_cost(data, where)
    try:
        # cryptography's RSA consistency check costs ~50 ms a key (1,000 credentials: 50 s).
        # We skip it here and prove the key instead where it matters: check_pair() signs and
        # verifies a probe against the certificate's public key, which a broken or mismatched
        # key cannot pass.
        key = serialization.load_pem_private_key(
            data, password=password, unsafe_skip_rsa_key_validation=True
        )
    except TypeError:
        if password is None:
            raise KeyMaterialError(
                f"{where}: the key is encrypted", hint="add its passphrase"
            ) from None
        raise KeyMaterialError(
            f"{where}: a passphrase was given but the key is not encrypted",
            hint="remove the passphrase",
        ) from None
    except ValueError:
        if password is not None and b"ENCRYPTED" in data:
            raise KeyMaterialError(f"{where}: wrong passphrase or corrupt key") from None
        raise KeyMaterialError(f"{where}: malformed PEM private key") from None
    except UnsupportedAlgorithm:
        raise KeyMaterialError(f"{where}: unsupported key type") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyMaterialError(f"{where}: only RSA and EC (P-256) keys are supported")
    return key


# A passphrase-derived key costs what the key file says: PBKDF2 rounds (OpenSSL writes 2,048;
# cryptography and OpenSSL 3 up to a few hundred thousand) or scrypt's N. A hostile or broken
# record asking for billions would stall every load, so the cost is read before decrypting.
MAX_KDF_ITERATIONS = 10_000_000
MAX_SCRYPT_N = 1 << 20
_PBES2 = bytes.fromhex("2a864886f70d01050d")  # 1.2.840.113549.1.5.13
_PBKDF2 = bytes.fromhex("2a864886f70d01050c")  # 1.2.840.113549.1.5.12
_SCRYPT = bytes.fromhex("2b06010401da47040b")  # 1.3.6.1.4.1.11591.4.11


def _check_kdf_cost(data: bytes, where: str) -> None:
    """Refuse an encrypted PKCS#8 key whose key derivation is too costly to attempt."""
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" not in data:
        return  # PKCS#1 "Proc-Type: 4,ENCRYPTED" keys use one MD5 round: nothing to bound
    try:
        body = data.split(b"-----BEGIN ENCRYPTED PRIVATE KEY-----", 1)[1]
        body = body.split(b"-----END", 1)[0]
        info = _der(base64.b64decode(b"".join(body.split()), validate=True))[0][1]
        oid, params = (item[1] for item in _der(_der(info)[0][1])[:2])
        if oid == _PBES2:
            kdf = _der(_der(params)[0][1])
            oid, params = kdf[0][1], kdf[1][1]
        fields = [value for _tag, value in _der(params)]
        if oid == _SCRYPT:
            cost, what, limit = int.from_bytes(fields[1], "big"), "scrypt N", MAX_SCRYPT_N
        else:  # PBKDF2, and PBES1 / PKCS#12 schemes: SEQUENCE { salt, iterationCount, ... }
            cost, what, limit = int.from_bytes(fields[1], "big"), "PBKDF2 iteration count", MAX_KDF_ITERATIONS
    except (ValueError, IndexError, binascii.Error):
        return  # not the shape we know: cryptography reports a malformed key
    if cost > limit:
        raise KeyMaterialError(f"{where}: the encrypted key asks for a {what} of {cost} (at most "
                               f"{limit} is accepted)", hint="re-encrypt it with ordinary settings")


def _der(buf: bytes) -> list[tuple[int, bytes]]:
    """The TLV items of one DER level (definite lengths only)."""
    items, at = [], 0
    while at < len(buf):
        tag, size = buf[at], buf[at + 1]
        at += 2
        if size & 0x80:
            count = size & 0x7F
            if not 0 < count <= 4:
                raise ValueError("unsupported DER length")
            size = int.from_bytes(buf[at:at + count], "big")
            at += count
        if at + size > len(buf):
            raise ValueError("truncated DER")
        items.append((tag, buf[at:at + size]))
        at += size
    return items


def load_certificate(pem: str | bytes, *, where: str = "certificate") -> x509.Certificate:
    data = _utf8(pem, f"{where}: not a PEM certificate (not plain text)")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise KeyMaterialError(f"{where}: not a PEM certificate (no BEGIN CERTIFICATE line)")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise KeyMaterialError(f"{where}: malformed PEM certificate") from None


def _utf8(text: str | bytes, problem: str) -> bytes:
    """A record's text as bytes; a lone surrogate (JSON can carry "\\ud800") is bad input."""
    if isinstance(text, bytes):
        return text
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise KeyMaterialError(problem) from None


def check_key_for_algorithm(key: PrivateKey, algorithm: str, *, where: str) -> None:
    """RS256/PS256 need RSA >= 2048; ES256 needs P-256."""
    if algorithm in ("RS256", "PS256"):
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyMaterialError(
                f"{where}: {algorithm} needs an RSA key, this is an EC key",
                hint="Salesforce accepts RSA keys only: openssl genrsa -out server.key 2048",
            )
        if key.key_size < MIN_RSA_BITS:
            raise KeyMaterialError(
                f"{where}: RSA key is {key.key_size} bits; at least {MIN_RSA_BITS} are required"
            )
    elif algorithm == "ES256" and (
        not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1"
    ):
        raise KeyMaterialError(f"{where}: ES256 needs an EC P-256 key")


_PROBE = b"rotator key self-test"


def check_pair(key: PrivateKey, cert: x509.Certificate, *, where: str) -> None:
    """The key matches the certificate and really signs: a probe signature must verify."""
    if public_key_der(key.public_key()) != public_key_der(cert.public_key()):
        raise KeyMaterialError(
            f"{where}: private_key does not match certificate",
            hint="they come from different key pairs; import the certificate made from this key",
        )
    public = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPrivateKey):
            signature = key.sign(_PROBE, padding.PKCS1v15(), hashes.SHA256())
            public.verify(signature, _PROBE, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]
        else:
            signature = key.sign(_PROBE, ec.ECDSA(hashes.SHA256()))
            public.verify(signature, _PROBE, ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr,call-arg]
    except (InvalidSignature, ValueError):
        raise KeyMaterialError(
            f"{where}: private_key is corrupt (its signatures do not verify)",
            hint="restore the key from its source or make a new one",
        ) from None


def public_key_der(public_key: Any) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# ---------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime
    sha256: str

    def days_left(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400

    @property
    def lifetime_seconds(self) -> float:
        return (self.not_after - self.not_before).total_seconds()


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lowercase hex (what `openssl x509 -fingerprint -sha256` shows)."""
    return cert.fingerprint(hashes.SHA256()).hex()


@functools.lru_cache(maxsize=4096)
def cert_info_from_pem(pem: str, where: str = "certificate") -> CertInfo:
    """Facts of a PEM certificate, memoised: certificates are public and small, parsing is not free."""
    return cert_info(load_certificate(pem, where=where))


def cert_info(cert: x509.Certificate) -> CertInfo:
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=fingerprint(cert),
    )


# ---------------------------------------------------------------------------- signing


class KeyCache:
    """Parsed keys by content: each distinct key PEM is parsed (and each key + certificate pair
    self-tested) once per process, whichever credentials' slots (e.g. "sf-prod/current") hold it.

    A fleet whose credentials share one key (one record, or copies of it) pays the parse and
    the probe signature of check_pair() once, not once per credential. A slot keeps only its
    latest key, and a parsed key is dropped when no slot holds it any more, so a rotated-out
    key does not linger in memory.
    """

    def __init__(self) -> None:
        # slot -> content digest; digest -> parsed object; digest -> how many slots hold it
        self._slots: dict[str, bytes] = {}
        self._keys: dict[bytes, PrivateKey] = {}
        self._key_refs: dict[bytes, int] = {}
        self._checked: dict[str, bytes] = {}
        self._pairs: dict[bytes, tuple[PrivateKey, CertInfo, bytes]] = {}  # + key digest
        self._pair_refs: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def load(self, slot: str, pem: str, passphrase: str | None, *, where: str) -> PrivateKey:
        digest = _digest(pem, passphrase or "")
        with self._lock:
            key = self._keys.get(digest)
            if key is not None:
                _hold(self._slots, self._key_refs, self._keys, slot, digest)
                return key
        key = load_private_key(pem, passphrase=passphrase, where=where)
        with self._lock:
            key = self._keys.setdefault(digest, key)  # a racing thread's parse wins: one object
            _hold(self._slots, self._key_refs, self._keys, slot, digest)
        return key

    def load_checked(
        self, slot: str, pem: str, passphrase: str | None, certificate: str, algorithm: str,
        *, where: str,
    ) -> tuple[PrivateKey, CertInfo, bool]:
        """Key + certificate facts, checked once for this exact pair and algorithm.

        Returns (key, info, fresh): fresh is True when the pair is new to this slot (the
        caller audits `key.loaded` once per credential and role). The parse, the self-test
        signature and the certificate parse happen only for a pair new to the process.
        """
        digest = _digest(pem, passphrase or "", certificate, algorithm)
        with self._lock:
            same = self._checked.get(slot) == digest
            pair = self._pairs.get(digest)
            if pair is not None:
                key, info, key_digest = pair
                _hold(self._checked, self._pair_refs, self._pairs, slot, digest)
                # the slot's parsed key follows too, or the one it held before would linger
                self._keys.setdefault(key_digest, key)
                _hold(self._slots, self._key_refs, self._keys, slot, key_digest)
                return key, info, not same
        key = self.load(slot, pem, passphrase, where=where)
        cert = load_certificate(certificate, where=where)
        check_key_for_algorithm(key, algorithm, where=where)
        check_pair(key, cert, where=where)
        info = cert_info(cert)
        with self._lock:
            pair = self._pairs.setdefault(digest, (key, info, _digest(pem, passphrase or "")))
            _hold(self._checked, self._pair_refs, self._pairs, slot, digest)
        return pair[0], pair[1], True

    def __len__(self) -> int:
        """How many distinct parsed keys are held."""
        return len(self._keys)


def _digest(*parts: str) -> bytes:
    # surrogatepass: a record's JSON may carry a lone surrogate; it must hash, not raise
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).digest()


def _hold(slots: dict[str, bytes], refs: dict[bytes, int], objects: dict[bytes, Any],
          slot: str, digest: bytes) -> None:
    """Point `slot` at `digest`; drop the object its previous digest named if no slot holds it."""
    old = slots.get(slot)
    if old == digest:
        return
    slots[slot] = digest
    refs[digest] = refs.get(digest, 0) + 1
    if old is not None:
        refs[old] -= 1
        if refs[old] <= 0:
            del refs[old]
            objects.pop(old, None)
