"""signer = "aws-kms" end to end: rotator with moto's KMS and Secrets Manager, the Salesforce
emulator and the CLI — keys init (existing key, or a new key behind a new alias), rotate, cert
show, check, jwt, staged rollover to a new KMS key, `keys retire`, failures that keep the old
token, and no private key anywhere rotator runs.

moto does not enforce IAM and a disabled key still signs there: AccessDenied and a Sign refused
for a disabled key come from rotator.testing's AwsFaultProxy, as KMS answers them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from rotator.keys import crypto
from rotator.keys.crypto import cert_info, load_certificate
from rotator.keys.remote.kms import TAG_KEY
from rotator.testing.aws import AWS_ENV_CLEAR, REGION, AwsFaultProxy, MotoServer, aws_env
from tests.conftest import CLIENT_ID, USERNAME, write_config
from tests.test_keyless_transit import assert_no_private_key, forbid_private_keys, named

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as patch, MotoServer() as server:
        for name in AWS_ENV_CLEAR:
            patch.delenv(name, raising=False)
        for name, value in aws_env().items():
            patch.setenv(name, value)
        yield server


@pytest.fixture(scope="module")
def admin(moto: MotoServer) -> Any:
    """The operator's KMS client (same moto): makes, disables and inspects keys."""
    import boto3

    return boto3.client("kms", region_name=REGION, endpoint_url=moto.url)


class Setup:
    """Credential `sf` signing with KMS key `signer_key`; key record in Secrets Manager (or a file)."""

    def __init__(self, tmp_path: Path, url: str, endpoint: Any, signer_key: str, *, key_in: str = "aws",
                 **overrides: Any) -> None:
        self.tmp = tmp_path
        self.path = f"keyless-{secrets.token_hex(4)}/key"
        stores = ('[stores.local]\ntype = "file"\npath = "store"\n'
                  f'[stores.aws]\ntype = "aws"\nregion = "{REGION}"\nendpoint_url = "{url}"\n')
        self.key_in = key_in
        self.config = write_config(tmp_path / "rotator.toml", login_url=endpoint.url, stores=stores,
                                   credentials={"sf": {
                                       "signer": "aws-kms", "signer_key": f"aws:{signer_key}",
                                       "key": f"aws:{self.path}" if key_in == "aws" else "local:sf/key",
                                       "token": "local:sf/token", "publish_file": "pending.pem",
                                       **overrides}})

    def record(self, moto: MotoServer) -> dict[str, Any]:
        if self.key_in == "aws":
            reply = moto.client().get_secret_value(SecretId=self.path, VersionStage="AWSCURRENT")
            return json.loads(reply["SecretString"])
        return json.loads((self.tmp / "store" / "sf" / "key.json").read_text())

    def token_bytes(self) -> bytes:
        return (self.tmp / "store" / "sf" / "token.json").read_bytes()


def sha(pem: str) -> str:
    return cert_info(load_certificate(pem)).sha256


def der(pem: str) -> bytes:
    return load_certificate(pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def init(run_cli, s: Setup, endpoint: Any, *args: str) -> str:
    result = run_cli("--config", s.config, "keys", "init", "sf", *args)
    assert result.code == 0, result.err
    endpoint.register_app(CLIENT_ID, result.out, users=[USERNAME])
    return result.out


def rotate(run_cli, s: Setup, *args: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = run_cli("--config", s.config, "rotate", "sf", *args)
    events = [json.loads(line) for line in result.err.splitlines() if line.startswith("{")]
    return result.json_lines()[0], events


def new_key(admin: Any, spec: str = "RSA_2048", usage: str = "SIGN_VERIFY") -> dict[str, str]:
    return admin.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]


# ---------------------------------------------------------------------------- the whole loop


def test_init_creates_key_and_alias_then_rotate_cert_check_jwt(run_cli, tmp_path: Path, moto: MotoServer,
                                                               admin: Any, endpoint: Any) -> None:
    alias = f"alias/sf-{secrets.token_hex(4)}"
    s = Setup(tmp_path, moto.url, endpoint, alias)
    pem = init(run_cli, s, endpoint, "--days", "30")

    arn = admin.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]  # the alias now names a new key
    meta = admin.describe_key(KeyId=arn)["KeyMetadata"]
    assert (meta["KeySpec"], meta["KeyUsage"], meta["KeyState"]) == ("RSA_2048", "SIGN_VERIFY", "Enabled")
    assert {"TagKey": TAG_KEY, "TagValue": "sf"} in admin.list_resource_tags(KeyId=arn)["Tags"]
    assert der(pem) == admin.get_public_key(KeyId=arn)["PublicKey"]
    cert = load_certificate(pem)
    cert.verify_directly_issued_by(cert)
    record = s.record(moto)
    assert record["key_ref"] == arn and record["certificate"] == pem and "key_version" not in record
    assert_no_private_key(record)

    line, events = rotate(run_cli, s)
    assert line["ok"] and line["action"] == "rotated", line
    token = json.loads(s.token_bytes())
    assert token["key_sha256"] == sha(pem) and endpoint.is_valid(token["access_token"])
    assert named(events, "key.loaded")[0]["signer"] == "aws-kms"

    shown = run_cli("--config", s.config, "cert", "show", "sf", "--json")
    assert shown.code == 0 and json.loads(shown.out)["sha256"] == sha(pem)
    checked = run_cli("--config", s.config, "check")
    assert checked.code == 0 and "credential sf: ok" in checked.out, checked.out + checked.err
    minted = run_cli("--config", s.config, "jwt", "sf", guard=False)
    assert jwt.decode(minted.out.strip(), cert.public_key(), algorithms=["RS256"],  # type: ignore[arg-type]
                      audience=endpoint.url)["iss"] == CLIENT_ID


def test_init_with_an_existing_key_and_wrong_key_types(run_cli, tmp_path: Path, moto: MotoServer,
                                                       admin: Any, endpoint: Any) -> None:
    meta = new_key(admin, "RSA_3072")
    s = Setup(tmp_path, moto.url, endpoint, meta["KeyId"])
    pem = init(run_cli, s, endpoint)
    assert s.record(moto)["key_ref"] == meta["Arn"] and load_certificate(pem).public_key().key_size == 3072
    assert rotate(run_cli, s)[0]["ok"]

    for spec, usage, expected in [("ECC_NIST_P256", "SIGN_VERIFY", "KeySpec ECC_NIST_P256"),
                                  ("RSA_2048", "ENCRYPT_DECRYPT", "KeyUsage ENCRYPT_DECRYPT")]:
        wrong = new_key(admin, spec, usage)
        other = Setup(tmp_path, moto.url, endpoint, wrong["Arn"])
        result = run_cli("--config", other.config, "keys", "init", "sf")
        assert result.code == 2 and expected in result.err and wrong["Arn"] in result.err, result.err
    missing = Setup(tmp_path, moto.url, endpoint, "11111111-2222-3333-4444-555555555555")
    result = run_cli("--config", missing.config, "keys", "init", "sf")
    assert result.code == 1 and "not found" in result.err


# ---------------------------------------------------------------------------- rollover


def test_rollover_to_a_new_kms_key_then_retire_the_old_one(run_cli, tmp_path: Path, moto: MotoServer,
                                                           admin: Any, endpoint: Any) -> None:
    old_meta = new_key(admin)
    s = Setup(tmp_path, moto.url, endpoint, old_meta["Arn"])
    init(run_cli, s, endpoint, "--days", "30")
    assert rotate(run_cli, s)[0]["ok"]

    staged = run_cli("--config", s.config, "keys", "rotate", "sf")
    assert staged.code == 0, staged.err
    new = staged.out
    record = s.record(moto)
    assert "pending_key_ref" in record, (sorted(record), staged.err[-3000:])
    new_arn = record["pending_key_ref"]
    assert new_arn != old_meta["Arn"] and record["pending_certificate"] == new
    assert der(new) == admin.get_public_key(KeyId=new_arn)["PublicKey"]
    assert {"TagKey": TAG_KEY, "TagValue": "sf"} in admin.list_resource_tags(KeyId=new_arn)["Tags"]
    assert (tmp_path / "pending.pem").read_text() == new
    assert_no_private_key(record)

    endpoint.reset_counters()
    line, events = rotate(run_cli, s, "--force")
    assert line["ok"] and [a.outcome for a in endpoint.token_log] == ["invalid_grant", "ok"]
    assert named(events, "key.pending_rejected")
    endpoint.upload_certificate(CLIENT_ID, new)
    line, events = rotate(run_cli, s, "--force")
    assert line["ok"] and named(events, "key.promoted")
    record = s.record(moto)
    assert record["key_ref"] == new_arn and record["previous_key_ref"] == old_meta["Arn"]
    assert json.loads(s.token_bytes())["key_sha256"] == sha(new)
    # promotion never deletes: the old key is still enabled until the operator says so
    assert admin.describe_key(KeyId=old_meta["Arn"])["KeyMetadata"]["KeyState"] == "Enabled"

    current = run_cli("--config", s.config, "keys", "retire", "sf", "--key-id", new_arn)
    assert current.code == 2 and "is the current key" in current.err
    retire = ("--config", s.config, "keys", "retire", "sf", "--key-id", old_meta["Arn"], "--days")
    short = run_cli(*retire, "3")
    assert short.code == 2 and "between 7 and 30" in short.err
    retired = run_cli(*retire, "7")
    assert retired.code == 0, retired.err
    assert "cancel-key-deletion" in retired.out and '"event": "key.retired"' in retired.err
    assert admin.describe_key(KeyId=old_meta["Arn"])["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert rotate(run_cli, s, "--force")[0]["ok"]  # the new key keeps signing


# ---------------------------------------------------------------------------- failures


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[AwsFaultProxy]:
    with AwsFaultProxy(moto.url) as server:
        yield server


def test_access_denied_and_disabled_key_keep_the_old_token(run_cli, tmp_path: Path, moto: MotoServer,
                                                           admin: Any, endpoint: Any,
                                                           proxy: AwsFaultProxy) -> None:
    meta = new_key(admin)
    s = Setup(tmp_path, proxy.url, endpoint, meta["Arn"], key_in="file")
    init(run_cli, s, endpoint)
    assert rotate(run_cli, s)[0]["ok"]
    before = s.token_bytes()

    proxy.set_fault("Sign", "AccessDeniedException", message="not authorized to perform kms:Sign", count=None)
    line, _ = rotate(run_cli, s, "--force")
    assert not line["ok"] and f"does not allow kms:Sign on KMS key {meta['Arn']}" in line["error"]
    assert "kms-signer-iam-policy.json" in line["error"]
    assert s.token_bytes() == before
    proxy.clear_faults()

    proxy.set_fault("Sign", "KMSInternalException", status=500, count=None)
    line, _ = rotate(run_cli, s, "--force")
    assert not line["ok"] and "KMSInternalException" in line["error"] and s.token_bytes() == before
    proxy.clear_faults()

    admin.disable_key(KeyId=meta["KeyId"])  # moto reports it in DescribeKey (and still signs)
    line, _ = rotate(run_cli, s, "--force")
    assert not line["ok"] and "is Disabled and cannot sign" in line["error"]
    assert "aws kms enable-key" in line["error"] and s.token_bytes() == before
    checked = run_cli("--config", s.config, "check")
    assert checked.code == 1 and "credential sf: FAILED" in checked.out
    admin.enable_key(KeyId=meta["KeyId"])
    assert rotate(run_cli, s, "--force")[0]["ok"]


def test_kms_unreachable_keeps_the_old_token(run_cli, tmp_path: Path, moto: MotoServer, admin: Any,
                                             endpoint: Any) -> None:
    meta = new_key(admin)
    proxy = AwsFaultProxy(moto.url).start()
    try:
        s = Setup(tmp_path, proxy.url, endpoint, meta["Arn"], key_in="file")
        init(run_cli, s, endpoint)
        assert rotate(run_cli, s)[0]["ok"]
        before = s.token_bytes()
    finally:
        proxy.stop()
    line, _ = rotate(run_cli, s, "--force")
    assert not line["ok"] and "cannot connect" in line["error"] and s.token_bytes() == before


# ---------------------------------------------------------------------------- no private key


def test_no_private_key_object_in_rotator_over_init_rotation_and_rollover(run_cli, tmp_path: Path,
                                                                          moto: MotoServer, admin: Any,
                                                                          endpoint: Any) -> None:
    alias = f"alias/np-{secrets.token_hex(4)}"
    s = Setup(tmp_path, moto.url, endpoint, alias)
    with pytest.MonkeyPatch.context() as patch:
        # moto runs in this process and IS the key service: its CreateKey may make key pairs
        refused = forbid_private_keys(patch, allow=("moto.",))
        with pytest.raises(AssertionError):
            crypto.generate_rsa_key(2048)
        refused.clear()
        init(run_cli, s, endpoint)  # creates the key (in moto) and the alias
        assert rotate(run_cli, s)[0]["ok"]
        staged = run_cli("--config", s.config, "keys", "rotate", "sf")  # a new KMS key
        assert staged.code == 0, staged.err
        endpoint.upload_certificate(CLIENT_ID, staged.out)
        line, events = rotate(run_cli, s, "--force")
        assert line["ok"] and named(events, "key.promoted")
        assert refused == []
    assert_no_private_key(s.record(moto))
