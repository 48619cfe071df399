"""The self-signed X.509 certificate of a key that lives in a key service.

cryptography's ``CertificateBuilder.sign`` wants a private key object. (With cryptography 50 a
Python subclass of ``rsa.RSAPrivateKey`` that forwards ``sign`` to the service is accepted, but
it would be an object that *looks* like a private key to every isinstance check in the process.)
Instead the certificate is assembled here in DER: the TBSCertificate from parts cryptography
serialises on its own (the Name, the SubjectPublicKeyInfo, the extension values), signed by
the key service, wrapped as Certificate (RFC 5280 4.1), then parsed back and verified. No
private key object exists at any point.

The result is what :func:`rotator.keys.crypto.self_signed_certificate` makes for a PEM key: CN
subject = issuer, a random 159-bit serial, not_before 5 minutes ago, not_after `days` ahead,
BasicConstraints CA:FALSE (critical), sha256WithRSAEncryption.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from rotator.errors import KeyMaterialError
from rotator.keys.crypto import public_key_der
from rotator.keys.remote.base import RSA_BITS, RemoteKey

# sha256WithRSAEncryption (1.2.840.113549.1.1.11) with NULL parameters, as RFC 4055 requires.
_SHA256_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
_BASIC_CONSTRAINTS_OID = bytes.fromhex("0603551d13")  # 2.5.29.19
_PROBE = b"rotator remote key self-test"


def remote_self_signed_certificate(
    key: RemoteKey, *, common_name: str, days: int = 365, now: datetime | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """A certificate for `key`'s public key, signed by the key service, verified before return."""
    if not 1 <= days <= 3650:
        raise KeyMaterialError(f"--days {days}: choose between 1 and 3650")
    public = key.public_key()
    _check_rsa(public, where=key.reference)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    not_before = now - timedelta(minutes=5)
    not_after = now + timedelta(days=days)
    serial = serial if serial is not None else x509.random_serial_number()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]).public_bytes()
    constraints = x509.BasicConstraints(ca=False, path_length=None).public_bytes()
    extension = _seq(_BASIC_CONSTRAINTS_OID + _tlv(0x01, b"\xff") + _tlv(0x04, constraints))
    tbs = _seq(
        _tlv(0xA0, _integer(2))             # version v3
        + _integer(serial)
        + _SHA256_RSA
        + name                               # issuer
        + _seq(_time(not_before) + _time(not_after))
        + name                               # subject
        + public_key_der(public)             # SubjectPublicKeyInfo
        + _tlv(0xA3, _seq(extension))        # extensions
    )
    signature = key.sign(tbs)
    der = _seq(tbs + _SHA256_RSA + _tlv(0x03, b"\x00" + signature))
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise KeyMaterialError(f"{key.reference}: the assembled certificate does not parse") from None
    verify_self_signed(cert, where=key.reference)
    if cert.not_valid_before_utc != not_before or cert.not_valid_after_utc != not_after:
        raise KeyMaterialError(f"{key.reference}: the certificate's validity came out wrong")
    return cert


def verify_self_signed(cert: x509.Certificate, *, where: str) -> None:
    """The certificate is signed (sha256WithRSA) by the key it carries."""
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey) or cert.signature_hash_algorithm is None \
            or cert.signature_hash_algorithm.name != "sha256":
        raise KeyMaterialError(f"{where}: the certificate is not an RSA/SHA-256 certificate")
    try:
        public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise KeyMaterialError(
            f"{where}: the key service's signature on the certificate does not verify",
            hint="the key service signed with a different key than the public key it reported",
        ) from None


def check_remote_pair(key: RemoteKey, cert: x509.Certificate, *, where: str) -> None:
    """What `check` proves for a keyless credential: the key's public key is the certificate's,
    and the key service really signs with it (a probe signature verifies)."""
    if public_key_der(key.public_key()) != public_key_der(cert.public_key()):
        raise KeyMaterialError(
            f"{where}: the certificate does not belong to {key.reference}",
            hint="its public key differs; re-make the certificate for this key (keys init)",
        )
    signature = key.sign(_PROBE)
    try:
        cert.public_key().verify(signature, _PROBE, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]
    except InvalidSignature:
        raise KeyMaterialError(f"{where}: {key.reference} signs, but its signature does not verify "
                               "with the certificate") from None


def _check_rsa(public: object, *, where: str) -> None:
    if not isinstance(public, rsa.RSAPublicKey) or public.key_size not in RSA_BITS:
        raise KeyMaterialError(f"{where}: RS256 needs an RSA key of 2048, 3072 or 4096 bits")


# ---------------------------------------------------------------------------- DER (X.690)


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def _seq(content: bytes) -> bytes:
    return _tlv(0x30, content)


def _integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative INTEGER")
    # two's complement, minimal length, with a leading zero when the top bit is set
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _time(moment: datetime) -> bytes:
    """RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050, always Z, no fractions."""
    moment = moment.astimezone(UTC)
    if moment.year < 2050:
        return _tlv(0x17, moment.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return _tlv(0x18, moment.strftime("%Y%m%d%H%M%SZ").encode("ascii"))
