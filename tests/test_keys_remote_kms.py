"""AWS KMS signer against moto's KMS server on loopback (real RSA keys: moto signs with them and
GetPublicKey returns the matching public key), plus the fault proxy for what moto does not do.

moto gaps (tests do not depend on them): no IAM enforcement (AccessDenied comes from
AwsFaultProxy), a disabled or pending-deletion key still signs and still returns its public
key (DescribeKey reports the state; the DisabledException a real Sign raises comes from the
proxy), and MessageType=DIGEST is treated as RAW.

Also here: the proof that no private key object is created in this process while a
certificate is made and assertions are signed with Transit or KMS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from rotator.errors import (
    KeyMaterialError,
    RecordNotFound,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
)
from rotator.keys import crypto
from rotator.keys.crypto import cert_to_pem, fingerprint
from rotator.keys.remote import RemoteSigner, check_remote_pair, remote_self_signed_certificate
from rotator.keys.remote.kms import TAG_KEY, KmsService
from rotator.testing.aws import AWS_ENV_CLEAR, REGION, AwsFaultProxy, MotoServer, aws_env
from tests.conftest import CLIENT_ID, USERNAME

pytestmark = pytest.mark.integration
AUD = "https://login.salesforce.com"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as patch, MotoServer() as server:
        for name in AWS_ENV_CLEAR:
            patch.delenv(name, raising=False)
        for name, value in aws_env().items():
            patch.setenv(name, value)
        yield server


@pytest.fixture(scope="module")
def kms(moto: MotoServer) -> KmsService:
    return KmsService(region=REGION, endpoint_url=moto.url)


@pytest.fixture
def admin(kms: KmsService) -> Any:
    """The operator's client (same moto): makes, disables and tags keys behind rotator's back."""
    return kms.client


def _rsa_key(admin: Any, spec: str = "RSA_2048", usage: str = "SIGN_VERIFY") -> dict[str, str]:
    return admin.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]


def _claims(aud: str = AUD) -> dict[str, Any]:
    return {"iss": CLIENT_ID, "sub": USERNAME, "aud": aud, "exp": int(time.time()) + 180}


def _verify(token: str, cert: Any, aud: str = AUD) -> dict[str, Any]:
    return jwt.decode(token, cert.public_key(), algorithms=["RS256"], audience=aud)


# ---------------------------------------------------------------------------- signing


@pytest.mark.parametrize("how", ["id", "alias", "arn"])
def test_sign_and_verify_with_the_certificate(kms: KmsService, admin: Any, how: str) -> None:
    meta = _rsa_key(admin)
    alias = f"alias/sf-{meta['KeyId'][:8]}"
    admin.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    ref = {"id": meta["KeyId"], "alias": alias, "arn": meta["Arn"]}[how]

    key = kms.key(ref)
    assert key.reference == meta["Arn"] and key.key_size == 2048
    published = admin.get_public_key(KeyId=meta["KeyId"])["PublicKey"]
    cert = remote_self_signed_certificate(key, common_name="sf-prod", days=60)
    assert cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo) == published
    cert.verify_directly_issued_by(cert)
    check_remote_pair(key, cert, where="sf")
    token = RemoteSigner(key, fingerprint(cert)).sign(_claims())
    assert _verify(token, cert)["iss"] == CLIENT_ID


def test_rsa_4096_and_long_messages(kms: KmsService, admin: Any) -> None:
    key = kms.key(_rsa_key(admin, "RSA_4096")["Arn"])
    cert = remote_self_signed_certificate(key, common_name="big", days=30)
    signer = RemoteSigner(key, fingerprint(cert))
    _verify(signer.sign(_claims()), cert)
    # moto treats DIGEST as RAW, so a > 4096-byte message (sent as a digest) must not verify
    # here although it would on real KMS: this documents the gap the RAW default avoids.
    with pytest.raises(KeyMaterialError, match="does not verify"):
        signer.sign_bytes(b"x" * 5000)


def test_rollover_creates_a_new_tagged_key_and_the_old_one_keeps_signing(kms: KmsService, admin: Any) -> None:
    old = kms.key(_rsa_key(admin)["Arn"])
    old_cert = remote_self_signed_certificate(old, common_name="cur", days=30)

    arn = kms.create_key("sf-prod", key_spec="RSA_3072")
    new = kms.key(arn)
    assert new.reference != old.reference and new.key_size == 3072
    tags = admin.list_resource_tags(KeyId=arn)["Tags"]
    assert {"TagKey": TAG_KEY, "TagValue": "sf-prod"} in tags
    assert admin.describe_key(KeyId=arn)["KeyMetadata"]["KeyUsage"] == "SIGN_VERIFY"
    new_cert = remote_self_signed_certificate(new, common_name="pend", days=30)

    _verify(RemoteSigner(old, fingerprint(old_cert)).sign(_claims()), old_cert)
    token = RemoteSigner(new, fingerprint(new_cert)).sign(_claims())
    _verify(token, new_cert)
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(token, old_cert)
    # rollover never deletes: the old key is still enabled
    assert admin.describe_key(KeyId=old.reference)["KeyMetadata"]["KeyState"] == "Enabled"


def test_schedule_deletion_only_on_an_explicit_call(kms: KmsService, admin: Any) -> None:
    arn = _rsa_key(admin)["Arn"]
    with pytest.raises(KeyMaterialError, match="between 7 and 30"):
        kms.schedule_deletion(arn, days=1)
    with pytest.raises(KeyMaterialError, match="not an alias"):
        kms.schedule_deletion("alias/sf-prod")
    assert admin.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"] == "Enabled"
    kms.schedule_deletion(arn, days=7)
    assert admin.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"] == "PendingDeletion"


def test_kms_assertion_is_accepted_by_the_salesforce_emulator(kms: KmsService, admin: Any,
                                                              endpoint: Any) -> None:
    key = kms.key(_rsa_key(admin)["Arn"])
    cert = remote_self_signed_certificate(key, common_name="sf-prod", days=30)
    endpoint.register_app(CLIENT_ID, cert_to_pem(cert), users=[USERNAME])
    assertion = RemoteSigner(key, fingerprint(cert)).sign(_claims(endpoint.url))
    reply = requests.post(endpoint.token_url, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert endpoint.is_valid(reply.json()["access_token"])


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("spec", "usage", "expected"), [
    ("ECC_NIST_P256", "SIGN_VERIFY", "KeySpec ECC_NIST_P256; RS256 needs RSA_2048"),
    ("RSA_2048", "ENCRYPT_DECRYPT", "KeyUsage ENCRYPT_DECRYPT; RS256 needs SIGN_VERIFY"),
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "RS256 needs SIGN_VERIFY"),
])
def test_wrong_key_type_is_diagnosed(kms: KmsService, admin: Any, spec: str, usage: str,
                                     expected: str) -> None:
    arn = _rsa_key(admin, spec, usage)["Arn"]
    with pytest.raises(KeyMaterialError) as caught:
        kms.key(arn)
    assert expected in caught.value.diagnostics() and arn in caught.value.diagnostics()


def test_disabled_pending_deletion_and_missing_keys(kms: KmsService, admin: Any) -> None:
    meta = _rsa_key(admin)
    arn = meta["Arn"]
    admin.disable_key(KeyId=meta["KeyId"])  # moto's DisableKey takes no ARN
    with pytest.raises(StoreError) as caught:
        kms.key(arn)
    assert "is Disabled and cannot sign" in caught.value.diagnostics()
    assert "aws kms enable-key" in caught.value.diagnostics()

    doomed = _rsa_key(admin)
    admin.schedule_key_deletion(KeyId=doomed["KeyId"], PendingWindowInDays=7)
    with pytest.raises(StoreError, match="pending deletion"):
        kms.key(doomed["Arn"])

    with pytest.raises(RecordNotFound, match="not found"):
        kms.key("alias/no-such-key")
    with pytest.raises(RecordNotFound, match="not found"):
        kms.key("11111111-2222-3333-4444-555555555555")
    with pytest.raises(KeyMaterialError, match="key id, alias/NAME or key ARN"):
        kms.key("alias/x y")


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[AwsFaultProxy]:
    with AwsFaultProxy(moto.url) as server:
        yield server


def test_access_denied_and_a_key_disabled_after_loading(moto: MotoServer, admin: Any,
                                                        proxy: AwsFaultProxy) -> None:
    """moto does not enforce IAM: the proxy answers as KMS does for a missing permission."""
    via_proxy = KmsService(region=REGION, endpoint_url=proxy.url)
    arn = _rsa_key(admin)["Arn"]
    key = via_proxy.key(arn)

    proxy.set_fault("Sign", "AccessDeniedException", message="not authorized to perform kms:Sign")
    with pytest.raises(StoreAccessDenied) as caught:
        key.sign(b"payload")
    text = caught.value.diagnostics()
    assert f"does not allow kms:Sign on KMS key {arn}" in text and "kms-signer-iam-policy.json" in text

    proxy.set_fault("GetPublicKey", "AccessDeniedException")
    with pytest.raises(StoreAccessDenied, match="kms:GetPublicKey"):
        via_proxy.key(arn)
    proxy.clear_faults()

    proxy.set_fault("Sign", "DisabledException", message=f"{arn} is disabled.")
    with pytest.raises(StoreError, match="is disabled and cannot sign"):
        key.sign(b"payload")
    proxy.set_fault("Sign", "KMSInternalException", status=500)
    with pytest.raises(StoreUnavailable) as unavailable:
        key.sign(b"payload")
    assert unavailable.value.retryable


def test_unreachable_kms_names_the_endpoint() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    service = KmsService(region=REGION, endpoint_url=f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(StoreUnavailable) as caught:
        service.key("alias/sf-prod")
    assert f"127.0.0.1:{port}" in caught.value.diagnostics() and caught.value.retryable


# ---------------------------------------------------------------------------- no private key


def _forbid_private_keys(patch: pytest.MonkeyPatch) -> None:
    """Every public way cryptography makes a private key object raises while the patch holds."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a private key object was about to be created")

    for module, name in [
        (rsa, "generate_private_key"), (ec, "generate_private_key"), (ec, "derive_private_key"),
        (serialization, "load_pem_private_key"), (serialization, "load_der_private_key"),
        (serialization, "load_ssh_private_key"), (crypto.serialization, "load_pem_private_key"),
        (crypto.rsa, "generate_private_key"),
    ]:
        patch.setattr(module, name, refuse)
    patch.setattr(rsa.RSAPrivateNumbers, "private_key", refuse)
    patch.setattr(ed25519.Ed25519PrivateKey, "generate", refuse)


def test_no_private_key_object_is_created_for_keyless_signing(kms: KmsService, admin: Any,
                                                              endpoint: Any) -> None:
    from tests.test_keys_remote_transit import OpenBao

    arn = _rsa_key(admin)["Arn"]  # moto (in this process) makes its key before the patch
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        bao = OpenBao(Path(tmp) / "bao.log")
        try:
            bao.root.sys.enable_secrets_engine("transit", path="transit")
            from rotator.keys.remote.transit import TransitService

            transit = TransitService.connect(bao.url, bao.token)
            transit.create_key("sf-prod")
            with pytest.MonkeyPatch.context() as patch:
                _forbid_private_keys(patch)
                # the patch really bites: the PEM path would fail here
                with pytest.raises(AssertionError, match="private key object"):
                    crypto.generate_rsa_key(2048)
                for key in (transit.key("sf-prod"), kms.key(arn)):
                    cert = remote_self_signed_certificate(key, common_name="sf-prod", days=30)
                    check_remote_pair(key, cert, where="sf")
                    signer = RemoteSigner(key, fingerprint(cert))
                    endpoint.register_app(CLIENT_ID, cert_to_pem(cert), users=[USERNAME])
                    reply = requests.post(endpoint.token_url, data={
                        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                        "assertion": signer.sign(_claims(endpoint.url))}, timeout=10)
                    assert reply.status_code == 200, reply.text
                    assert not any(isinstance(value, rsa.RSAPrivateKey) for value in vars(key).values())
        finally:
            bao.stop()


# ---------------------------------------------------------------------------- shipped IAM policies


def _actions(policy: dict[str, Any]) -> set[str]:
    return {action for statement in policy["Statement"] for action in statement["Action"]}


def test_shipped_iam_policies_are_least_privilege() -> None:
    """moto does not evaluate IAM, so the policies are checked for what they grant."""
    from tests.conftest import REPO

    signer = json.loads((REPO / "deploy/aws/kms-signer-iam-policy.json").read_text())
    rollover = json.loads((REPO / "deploy/aws/kms-rollover-iam-policy.json").read_text())
    assert _actions(signer) == {"kms:Sign", "kms:GetPublicKey", "kms:DescribeKey"}
    assert _actions(rollover) == _actions(signer) | {"kms:CreateKey", "kms:TagResource"}
    for policy in (signer, rollover):
        for statement in policy["Statement"]:
            assert statement["Effect"] == "Allow"
            if "kms:Sign" in statement["Action"]:
                assert statement["Resource"] != "*"  # a key ARN (pattern), never every key
            else:
                assert statement["Condition"]["StringEquals"]["kms:KeyUsage"] == "SIGN_VERIFY"
    assert signer["Statement"][0]["Condition"]["StringEquals"]["kms:SigningAlgorithm"] == \
        "RSASSA_PKCS1_V1_5_SHA_256"
