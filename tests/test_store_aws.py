"""AWS Secrets Manager store over a real socket: moto's HTTP server, a fault proxy, boto3 consumers.

moto's server runs once per module and is reset between tests; dummy credentials come from the
environment, so no real AWS is ever reached. Tests read stages the way a consumer does
(`VersionStage=...`) and find AWSCURRENT through describe_secret, never through moto's gaps.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.config import AwsStoreConfig, parse_config
from rotator.errors import (
    ConfigError,
    RecordError,
    RecordNotFound,
    StoreAccessDenied,
    StoreAuthError,
    StoreConflict,
    StoreError,
    StoreUnavailable,
)
from rotator.stores import WriteResult
from rotator.stores.aws import AwsStore, request_token
from rotator.testing.aws import AWS_ENV_CLEAR, AwsFaultProxy, MotoServer, aws_env
from tests.conftest import CLIENT_ID, REPO, USERNAME, rotator_subprocess_env, write_config

TOKEN = "sf/token"
KEY = "sf/key"
RID1, RID2, RID3 = ("1" * 32), ("2" * 32), ("3" * 32)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """moto's server for the module, and dummy AWS credentials in the environment meanwhile."""
    with pytest.MonkeyPatch.context() as patch, MotoServer() as server:
        for name in AWS_ENV_CLEAR:
            patch.delenv(name, raising=False)
        for name, value in aws_env().items():
            patch.setenv(name, value)
        yield server


@pytest.fixture(autouse=True)
def fresh_moto(moto: MotoServer) -> None:
    moto.reset()


@pytest.fixture(scope="module")
def direct(moto: MotoServer) -> AwsStore:
    """A store straight to moto, shared by the module (creating a boto3 session costs ~0.1 s)."""
    return make_store(moto.url)


@pytest.fixture
def sm(moto: MotoServer) -> Any:
    """A consumer's boto3 client, straight to moto."""
    return moto.client()


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[AwsFaultProxy]:
    with AwsFaultProxy(moto.url) as server:
        yield server


def make_store(url: str, name: str = "aws", **settings: Any) -> AwsStore:
    return AwsStore(name, AwsStoreConfig(type="aws", region="us-east-1", endpoint_url=url, **settings))


def stages(sm: Any, name: str = TOKEN) -> dict[str, list[str]]:
    """Labelled versions only: AWS leaves unlabelled (deprecated) versions out, moto lists them."""
    found = sm.describe_secret(SecretId=name).get("VersionIdsToStages", {})
    return {version: labels for version, labels in found.items() if labels}


def holder(sm: Any, stage: str, name: str = TOKEN) -> str | None:
    found = [v for v, labels in stages(sm, name).items() if stage in labels]
    assert len(found) <= 1, f"{stage} on {found}"
    return found[0] if found else None


def value_at(sm: Any, stage: str, name: str = TOKEN) -> dict[str, Any]:
    return json.loads(sm.get_secret_value(SecretId=name, VersionStage=stage)["SecretString"])


def version_count(sm: Any, name: str = TOKEN) -> int:
    return len(sm.list_secret_version_ids(SecretId=name, IncludeDeprecated=True)["Versions"])


def seed(store: AwsStore, data: dict[str, Any] | None = None) -> str:
    """A token secret whose AWSCURRENT is `data`; returns its version."""
    return store.write(TOKEN, data or {"n": 0}, expected_version=None, request_id=RID1).version


def put_key(sm: Any, tmp_path: Path, pair: Any) -> None:
    """What the operator does: `aws secretsmanager create-secret --secret-string file://key.json`."""
    key_json = tmp_path / "key.json"
    key_json.write_text(json.dumps({"private_key": pair.key_pem, "certificate": pair.cert_pem}))
    sm.create_secret(Name=KEY, SecretString=key_json.read_text())


def aws_config(tmp_path: Path, endpoint: Any, url: str, extra: str = "") -> Path:
    stores = f'[stores.aws]\ntype = "aws"\nregion = "us-east-1"\nendpoint_url = "{url}"\n{extra}'
    return write_config(
        tmp_path / "rotator.toml", login_url=endpoint.url, stores=stores,
        credentials={"sf": {"key": f"aws:{KEY}", "token": f"aws:{TOKEN}"}},
    )


@pytest.fixture
def sf_aws(tmp_path: Path, endpoint: Any, sm: Any, rsa_keys: list[Any], proxy: AwsFaultProxy) -> Path:
    """Key in Secrets Manager, connected app registered; the config talks through the proxy."""
    put_key(sm, tmp_path, rsa_keys[0])
    endpoint.register_app(CLIENT_ID, rsa_keys[0].cert_pem, users=[USERNAME])
    return aws_config(tmp_path, endpoint, proxy.url)


def rotate(run_cli: Any, config: Path) -> dict[str, Any]:
    result = run_cli("--config", config, "rotate", "sf", "--force")
    lines = result.json_lines()
    assert len(lines) == 1, (result.code, result.out, result.err)
    assert result.code == (0 if lines[0]["ok"] else 1)
    return lines[0]


class Crash(BaseException):
    """The process dies here (not an error rotator could catch)."""


# ---------------------------------------------------------------------------- engine, end to end


def test_two_rotations_leave_current_and_previous_for_consumers(run_cli, endpoint, sm, sf_aws) -> None:
    """Two forced rotations: AWSCURRENT is the newest token, AWSPREVIOUS the one before, no AWSPENDING."""
    assert rotate(run_cli, sf_aws) == {"name": "sf", "ok": True, "action": "rotated", "error": None}
    first = value_at(sm, "AWSCURRENT")
    assert rotate(run_cli, sf_aws)["ok"]
    current, previous = value_at(sm, "AWSCURRENT"), value_at(sm, "AWSPREVIOUS")
    assert previous == first and current != first
    assert current["access_token"] == endpoint.issued[-1] and endpoint.is_valid(current["access_token"])
    assert current["credential"] == "sf" and current["instance_url"] == endpoint.url
    labels = stages(sm)
    assert not any("AWSPENDING" in stage for stage in labels.values())
    assert labels[current["rotation_id"]] == ["AWSCURRENT"]  # VersionId = the rotation id
    tags = {t["Key"]: t["Value"] for t in sm.describe_secret(SecretId=TOKEN)["Tags"]}
    assert tags["rotator:credential"] == "sf" and tags["rotator:written_by"] == "rotator"
    shown = run_cli("--config", sf_aws, "token", "sf", "--field", "instance_url")
    assert shown.out.strip() == endpoint.url


def test_keys_init_writes_the_key_record_to_secrets_manager(run_cli, endpoint, sm, tmp_path, moto) -> None:
    """`keys init` stores the key as a JSON SecretString a rotation then signs with."""
    config = aws_config(tmp_path, endpoint, moto.url)
    made = run_cli("--config", config, "keys", "init", "sf")
    assert made.code == 0, made.err
    record = value_at(sm, "AWSCURRENT", KEY)
    assert set(record) >= {"private_key", "certificate"}
    (tmp_path / "key-copy.json").write_text(json.dumps(record))  # lets the secret guard know it
    endpoint.register_app(CLIENT_ID, made.out, users=[USERNAME])
    assert rotate(run_cli, config)["ok"]
    assert value_at(sm, "AWSCURRENT")["access_token"] == endpoint.issued[-1]


def test_rotation_after_a_crashed_run_never_promotes_its_pending_value(
    run_cli, endpoint, sm, sf_aws
) -> None:
    """A half-written AWSPENDING left by a crash is dropped, never promoted; the next run completes."""
    assert rotate(run_cli, sf_aws)["ok"]
    before = holder(sm, "AWSCURRENT")
    crashed = "c" * 32
    sm.put_secret_value(SecretId=TOKEN, SecretString='{"access_token": "half-writ',
                        ClientRequestToken=crashed, VersionStages=["AWSPENDING"])
    assert holder(sm, "AWSCURRENT") == before  # consumers still read the complete token
    assert rotate(run_cli, sf_aws)["ok"]
    assert value_at(sm, "AWSCURRENT")["access_token"] == endpoint.issued[-1]
    assert holder(sm, "AWSPREVIOUS") == before
    assert crashed not in stages(sm)
    assert holder(sm, "AWSPENDING") is None


def test_denied_put_names_the_action_and_keeps_the_token(run_cli, endpoint, sm, sf_aws, proxy) -> None:
    """AccessDenied on PutSecretValue: the diagnosis names the action and secret; AWSCURRENT is unchanged."""
    assert rotate(run_cli, sf_aws)["ok"]
    before = value_at(sm, "AWSCURRENT")
    proxy.set_fault("PutSecretValue", "AccessDeniedException",
                    message="User: arn:aws:sts::123456789012:assumed-role/rotator/i-1 is not "
                            "authorized to perform: secretsmanager:PutSecretValue")
    line = rotate(run_cli, sf_aws)
    assert line["ok"] is False and line["action"] == "failed"
    assert "secretsmanager:PutSecretValue" in line["error"]
    assert "arn:aws:secretsmanager:us-east-1:123456789012:secret:sf/token-" in line["error"]
    assert "assumed-role/rotator" in line["error"]
    assert value_at(sm, "AWSCURRENT") == before
    assert len(stages(sm)) == 1


def test_throttled_key_read_fails_retryably_before_any_exchange(run_cli, endpoint, sm, sf_aws, proxy) -> None:
    """ThrottlingException on every GetSecretValue: StoreUnavailable, no token request, token untouched."""
    assert rotate(run_cli, sf_aws)["ok"]
    before, requests = holder(sm, "AWSCURRENT"), endpoint.token_requests
    proxy.set_fault("GetSecretValue", "ThrottlingException", message="Rate exceeded")
    line = rotate(run_cli, sf_aws)
    assert line["ok"] is False
    assert "throttled" in line["error"] and "GetSecretValue" in line["error"] and KEY in line["error"]
    assert endpoint.token_requests == requests
    assert holder(sm, "AWSCURRENT") == before


def test_one_throttle_is_absorbed_by_botocore_retry(run_cli, endpoint, sm, sf_aws, proxy) -> None:
    """A single ThrottlingException is retried once by botocore (max_attempts 2) and the rotation succeeds."""
    assert rotate(run_cli, sf_aws)["ok"]  # creates the secret
    proxy.reset_operations()
    proxy.set_fault("PutSecretValue", "ThrottlingException", count=1)
    assert rotate(run_cli, sf_aws)["ok"]
    assert proxy.operations.count("PutSecretValue") == 2
    assert value_at(sm, "AWSCURRENT")["access_token"] == endpoint.issued[-1]


def test_missing_and_malformed_key_secrets_are_diagnosed(run_cli, endpoint, sm, tmp_path, moto) -> None:
    """No key secret -> 'no key record'; a non-JSON SecretString -> names the secret; no token is written."""
    config = aws_config(tmp_path, endpoint, moto.url)
    line = rotate(run_cli, config)
    assert line["ok"] is False and "aws:sf/key" in line["error"] and "no key record" in line["error"]
    sm.create_secret(Name=KEY, SecretString="-----BEGIN PRIVATE KEY----- not json")
    line = rotate(run_cli, config)
    assert line["ok"] is False and "aws:sf/key" in line["error"] and "not valid JSON" in line["error"]
    assert endpoint.token_requests == 0
    assert sm.list_secrets()["SecretList"][0]["Name"] == KEY and len(sm.list_secrets()["SecretList"]) == 1


def test_missing_token_secret_without_create_missing(run_cli, endpoint, sm, tmp_path, rsa_keys, moto) -> None:
    """create_missing = false and no token secret: the rotation fails saying what to do, creating nothing."""
    put_key(sm, tmp_path, rsa_keys[0])
    endpoint.register_app(CLIENT_ID, rsa_keys[0].cert_pem, users=[USERNAME])
    config = aws_config(tmp_path, endpoint, moto.url, extra="create_missing = false\n")
    line = rotate(run_cli, config)
    assert line["ok"] is False
    assert "create the secret first or set create_missing = true" in line["error"]
    assert [s["Name"] for s in sm.list_secrets()["SecretList"]] == [KEY]


def test_cli_check_reaches_the_store_read_only(run_cli, endpoint, sm, sf_aws, proxy) -> None:
    """`rotator check` reports the store ok and writes nothing (only read-only operations)."""
    result = run_cli("--config", sf_aws, "check")
    assert result.code == 0, result.out
    assert f"store aws: ok (aws secretsmanager us-east-1 {proxy.url})" in result.out
    assert set(proxy.operations) <= {"ListSecrets", "GetSecretValue", "DescribeSecret"}
    assert [s["Name"] for s in sm.list_secrets()["SecretList"]] == [KEY]


def as_list(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def test_iam_policy_allows_every_call_a_rotation_makes(run_cli, sf_aws, proxy) -> None:
    """The shipped IAM policy allows each operation of create + rotate, and KMS only via Secrets Manager."""
    assert rotate(run_cli, sf_aws)["ok"] and rotate(run_cli, sf_aws)["ok"]
    policy = json.loads((REPO / "deploy/aws/rotator-iam-policy.json").read_text())
    allowed: dict[str, list[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions, resources = as_list(statement["Action"]), as_list(statement["Resource"])
        for action in actions:
            allowed.setdefault(action, []).extend(resources)
    used = set(proxy.operations)
    assert {"CreateSecret", "PutSecretValue", "UpdateSecretVersionStage"} <= used
    for operation in used:
        assert f"secretsmanager:{operation}" in allowed, operation
        assert all(r.startswith("arn:aws:secretsmanager:REGION:ACCOUNT:secret:")
                   for r in allowed[f"secretsmanager:{operation}"])
    assert "secretsmanager:TagResource" in allowed  # CreateSecret with Tags needs it
    writes = allowed["secretsmanager:PutSecretValue"]
    assert all("signing-key" not in r for r in writes)  # the key secret is read-only
    kms = [s for s in policy["Statement"] if "kms:Decrypt" in s["Action"]]
    assert kms and "kms:GenerateDataKey" in kms[0]["Action"]
    assert "kms:ViaService" in json.dumps(kms[0]["Condition"])


# ---------------------------------------------------------------------------- store: the write protocol


def test_create_tags_once_and_read_returns_current_version(moto, sm, proxy) -> None:
    """The first write creates the secret with sanitised tags; later writes do not tag; read = AWSCURRENT."""
    store = make_store(proxy.url, tags={"team": "payments#eu", "cost center": "42"})
    first = store.write(TOKEN, {"n": 1}, expected_version=None, request_id=RID1,
                        metadata={"credential": "sf", "key_sha256": "ab" * 32, "note": "a|b"})
    tags = {t["Key"]: t["Value"] for t in sm.describe_secret(SecretId=TOKEN)["Tags"]}
    assert tags == {"team": "payments_eu", "cost center": "42", "rotator:credential": "sf",
                    "rotator:key_sha256": "ab" * 32, "rotator:note": "a_b"}
    record = store.read(TOKEN)
    assert record is not None and record.data == {"n": 1}
    assert record.version == first.version == RID1 == holder(sm, "AWSCURRENT")
    assert record.meta["arn"].startswith("arn:aws:secretsmanager:us-east-1:")
    proxy.reset_operations()
    store.write(TOKEN, {"n": 2}, expected_version=record.version, request_id=RID2,
                metadata={"credential": "other"})
    assert proxy.operations == ["DescribeSecret", "PutSecretValue", "GetSecretValue",
                                "UpdateSecretVersionStage", "UpdateSecretVersionStage"]
    tags = {t["Key"]: t["Value"] for t in sm.describe_secret(SecretId=TOKEN)["Tags"]}
    assert tags["rotator:credential"] == "sf"


def test_write_moves_current_and_keeps_previous(direct, sm) -> None:
    """A write puts AWSPENDING, moves AWSCURRENT to it, AWSPREVIOUS to the old one, and drops AWSPENDING."""
    old = seed(direct, {"n": 1})
    result = direct.write(TOKEN, {"n": 2}, expected_version=old, request_id=RID2)
    assert (result.version, result.previous_version) == (RID2, old)
    assert stages(sm) == {old: ["AWSPREVIOUS"], RID2: ["AWSCURRENT"]}
    assert value_at(sm, "AWSCURRENT") == {"n": 2} and value_at(sm, "AWSPREVIOUS") == {"n": 1}
    previous = direct.read_previous(TOKEN)
    assert previous is not None and previous.data == {"n": 1} and previous.version == old


def test_stale_expected_version_conflicts_before_writing(direct, sm) -> None:
    """expected_version that is no longer AWSCURRENT -> StoreConflict, and no version is added."""
    old = seed(direct)
    direct.write(TOKEN, {"n": 2}, expected_version=old, request_id=RID2)
    with pytest.raises(StoreConflict, match=f"expected version {old}, found {RID2}"):
        direct.write(TOKEN, {"n": 3}, expected_version=old, request_id=RID3)
    assert version_count(sm) == 2 and value_at(sm, "AWSCURRENT") == {"n": 2}


def test_expected_none_on_an_existing_secret_conflicts(direct, sm) -> None:
    """expected_version=None but the secret exists with a value -> StoreConflict, value unchanged."""
    seed(direct, {"n": 1})
    with pytest.raises(StoreConflict, match="expected version none"):
        direct.write(TOKEN, {"n": 2}, expected_version=None, request_id=RID2)
    assert value_at(sm, "AWSCURRENT") == {"n": 1}


def test_expected_version_on_a_missing_secret_conflicts(direct, sm) -> None:
    """A version is expected but the secret is gone: StoreConflict, nothing is created."""
    with pytest.raises(StoreConflict, match="no longer exists"):
        direct.write(TOKEN, {"n": 1}, expected_version=RID1, request_id=RID2)
    assert sm.list_secrets()["SecretList"] == []


def test_create_missing_false_raises_record_not_found(moto, sm) -> None:
    """create_missing = false: a missing secret is RecordNotFound with the fix in the message."""
    store = make_store(moto.url, create_missing=False)
    with pytest.raises(RecordNotFound, match="create the secret first or set create_missing = true"):
        store.write(TOKEN, {"n": 1}, expected_version=None, request_id=RID1)
    assert sm.list_secrets()["SecretList"] == []


def test_operator_created_empty_secret_gets_its_first_version(direct, sm) -> None:
    """A secret created without a value reads as None and takes the first write as AWSCURRENT."""
    sm.create_secret(Name=TOKEN, Description="made by terraform")
    assert direct.read(TOKEN) is None
    result = direct.write(TOKEN, {"n": 1}, expected_version=None, request_id=RID1)
    assert stages(sm) == {RID1: ["AWSCURRENT"]} and result.version == RID1
    assert value_at(sm, "AWSCURRENT") == {"n": 1}


def test_kms_key_id_is_used_on_create(moto, sm) -> None:
    """kms_key_id from the config is passed to CreateSecret."""
    store = make_store(moto.url, kms_key_id="alias/rotator")
    seed(store)
    assert sm.describe_secret(SecretId=TOKEN)["KmsKeyId"] == "alias/rotator"


def test_same_request_twice_is_one_version(direct, sm) -> None:
    """Idempotent retry: the same request_id and payload twice -> one new version, no error."""
    again = direct.write(TOKEN, {"n": 1}, expected_version=None, request_id=RID1)
    assert again.version == seed(direct, {"n": 1}) == RID1
    first = direct.write(TOKEN, {"n": 2}, expected_version=RID1, request_id=RID2)
    second = direct.write(TOKEN, {"n": 2}, expected_version=RID1, request_id=RID2)
    assert first == second
    assert version_count(sm) == 2 and stages(sm) == {RID1: ["AWSPREVIOUS"], RID2: ["AWSCURRENT"]}


def test_same_request_with_other_content_is_a_conflict(direct, sm) -> None:
    """A request id whose version holds other content is never taken for ours: StoreConflict."""
    direct.write(TOKEN, {"n": 1}, expected_version=None, request_id=RID1)
    with pytest.raises(StoreConflict, match="does not hold the record this write stored"):
        direct.write(TOKEN, {"n": 2}, expected_version=RID1, request_id=RID1)
    assert value_at(sm, "AWSCURRENT") == {"n": 1}


def test_request_token_is_a_valid_client_request_token() -> None:
    """Rotation ids are used as they are; other ids and no id give stable 64-char tokens."""
    assert request_token(RID1, "{}") == RID1
    derived = request_token(None, '{"a":1}')
    assert derived == request_token(None, '{"a":1}') != request_token(None, '{"a":2}')
    assert len(derived) == 64 and len(request_token("retry-7", "{}")) == 64
    assert request_token("retry-7", "{}") == request_token("retry-7", '{"other":1}')


def test_write_without_request_id_is_idempotent_by_content(direct, sm) -> None:
    """request_id=None: the token comes from the payload, so the same write twice is one version."""
    first = direct.write(KEY, {"k": "v"}, expected_version=None)
    assert len(first.version) == 64
    assert direct.write(KEY, {"k": "v"}, expected_version=None) == first
    assert version_count(sm, KEY) == 1


# ---------------------------------------------------------------------------- store: crashes and races


class CrashBeforePromote(AwsStore):
    def _promote(self, path: str, token: str, expected: str | None) -> None:
        raise Crash


class CrashBeforeCleanup(AwsStore):
    def _drop_pending(self, path: str, version: str) -> None:
        raise Crash


def crashing(cls: type[AwsStore], url: str) -> AwsStore:
    return cls("aws", AwsStoreConfig(type="aws", region="us-east-1", endpoint_url=url))


def test_crash_between_put_and_move_then_a_new_write(direct, moto, sm) -> None:
    """Crash after AWSPENDING: consumers keep the old value; the next write supersedes the orphan."""
    old = seed(direct, {"n": 1})
    with pytest.raises(Crash):
        crashing(CrashBeforePromote, moto.url).write(TOKEN, {"n": 2}, expected_version=old,
                                                     request_id=RID2)
    assert stages(sm) == {old: ["AWSCURRENT"], RID2: ["AWSPENDING"]}
    assert value_at(sm, "AWSCURRENT") == {"n": 1}
    direct.write(TOKEN, {"n": 3}, expected_version=old, request_id=RID3)
    assert stages(sm) == {old: ["AWSPREVIOUS"], RID3: ["AWSCURRENT"]}


def test_crash_between_put_and_move_then_the_same_request_finishes(direct, moto, sm) -> None:
    """Crash after AWSPENDING, retried with the same request id: the verified version is promoted."""
    old = seed(direct, {"n": 1})
    with pytest.raises(Crash):
        crashing(CrashBeforePromote, moto.url).write(TOKEN, {"n": 2}, expected_version=old,
                                                     request_id=RID2)
    result = direct.write(TOKEN, {"n": 2}, expected_version=old, request_id=RID2)
    assert result.version == RID2
    assert stages(sm) == {old: ["AWSPREVIOUS"], RID2: ["AWSCURRENT"]}


def test_crash_after_move_leaves_pending_that_the_next_write_clears(direct, moto, sm) -> None:
    """Crash before AWSPENDING is removed: the token is already current; the next write cleans up."""
    old = seed(direct, {"n": 1})
    with pytest.raises(Crash):
        crashing(CrashBeforeCleanup, moto.url).write(TOKEN, {"n": 2}, expected_version=old,
                                                     request_id=RID2)
    assert sorted(stages(sm)[RID2]) == ["AWSCURRENT", "AWSPENDING"]
    assert value_at(sm, "AWSCURRENT") == {"n": 2}
    direct.write(TOKEN, {"n": 3}, expected_version=RID2, request_id=RID3)
    assert stages(sm) == {RID2: ["AWSPREVIOUS"], RID3: ["AWSCURRENT"]}


class BarrierStore(AwsStore):
    """Holds each writer just before its compare-and-swap, so both really race there."""

    barrier: threading.Barrier

    def _promote(self, path: str, token: str, expected: str | None) -> None:
        self.barrier.wait(timeout=10)
        super()._promote(path, token, expected)


@pytest.mark.parametrize("round_", range(2))
def test_two_concurrent_writers_exactly_one_wins(direct, moto, sm, round_: int) -> None:
    """Two stores, same expected_version, at once: one wins, the other gets StoreConflict; one AWSCURRENT."""
    old = seed(direct, {"n": 0})
    barrier = threading.Barrier(2)
    outcomes: dict[str, Any] = {}

    def writer(rid: str) -> None:
        store = crashing(BarrierStore, moto.url)
        store.barrier = barrier  # type: ignore[attr-defined]
        try:
            outcomes[rid] = store.write(TOKEN, {"writer": rid}, expected_version=old, request_id=rid)
        except Exception as exc:  # reported through the assertions below
            outcomes[rid] = exc

    threads = [threading.Thread(target=writer, args=(rid,)) for rid in (RID2, RID3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [rid for rid, out in outcomes.items() if isinstance(out, WriteResult)]
    losers = [rid for rid, out in outcomes.items() if isinstance(out, StoreConflict)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    labels = stages(sm)
    assert [v for v, s in labels.items() if "AWSCURRENT" in s] == winners
    assert labels[old] == ["AWSPREVIOUS"] and losers[0] not in labels
    assert value_at(sm, "AWSCURRENT") == {"writer": winners[0]}


# ---------------------------------------------------------------------------- store: diagnoses


FAULTS = [
    # (operation, code, status, what fails, error class, words the diagnosis must contain)
    ("GetSecretValue", "AccessDeniedException", 400, "read", StoreAccessDenied,
     ["secretsmanager:GetSecretValue", "sf/token",
      "arn:aws:secretsmanager:us-east-1:ACCOUNT:secret:sf/token-*"]),
    ("UpdateSecretVersionStage", "AccessDeniedException", 400, "write", StoreAccessDenied,
     ["secretsmanager:UpdateSecretVersionStage", "secret:sf/token-"]),
    ("GetSecretValue", "DecryptionFailure", 400, "read", StoreAccessDenied, ["kms:Decrypt", "sf/token"]),
    ("PutSecretValue", "EncryptionFailure", 400, "write", StoreAccessDenied, ["kms:GenerateDataKey"]),
    ("GetSecretValue", "AccessDeniedException", 400, "read-kms", StoreAccessDenied, ["kms:Decrypt"]),
    ("GetSecretValue", "UnrecognizedClientException", 400, "read", StoreAuthError,
     ["UnrecognizedClientException", "AWS_ACCESS_KEY_ID", "IRSA"]),
    ("PutSecretValue", "ExpiredTokenException", 400, "write", StoreAuthError,
     ["credentials", "instance role"]),
    ("GetSecretValue", "TooManyRequestsException", 400, "read", StoreUnavailable, ["throttled"]),
    ("PutSecretValue", "LimitExceededException", 400, "write", StoreUnavailable, ["quota", "10 minutes"]),
    ("GetSecretValue", "InternalServiceError", 500, "read", StoreUnavailable, ["InternalServiceError"]),
    ("GetSecretValue", "connection-reset", 400, "read", StoreUnavailable, ["cannot reach"]),
]


@pytest.mark.parametrize(("operation", "code", "status", "call", "error", "words"), FAULTS,
                         ids=[f"{f[0]}-{f[1]}-{f[3]}" for f in FAULTS])
def test_aws_errors_are_diagnosed(direct, sm, proxy, operation, code, status, call, error, words) -> None:
    """Each AWS failure becomes its rotator error naming the action/secret; the current value is untouched."""
    old = seed(direct, {"n": 1})
    store = make_store(proxy.url)
    message = "Access to KMS is not allowed" if call == "read-kms" else None
    proxy.set_fault(operation, code, status=status, message=message)
    with pytest.raises(error) as caught:
        if call.startswith("read"):
            store.read(TOKEN)
        else:
            store.write(TOKEN, {"n": 2}, expected_version=old, request_id=RID2)
    text = caught.value.diagnostics()
    for word in words:
        assert word in text
    assert caught.value.retryable is (error in (StoreUnavailable, StoreAuthError))
    assert not any(type(e).__module__.startswith(("botocore", "boto3")) for e in chain(caught.value))
    assert holder(sm, "AWSCURRENT") == old and value_at(sm, "AWSCURRENT") == {"n": 1}


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def test_missing_secret_reads_as_none(direct) -> None:
    """ResourceNotFoundException on read -> None (the engine decides what a missing record means)."""
    assert direct.read("no/such/secret") is None
    assert direct.read_previous("no/such/secret") is None


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"SecretString": "not json at all"}, "not valid JSON"),
    ({"SecretString": '["private_key"]'}, "not a JSON object"),
    ({"SecretBinary": b"\x30\x82\x01"}, "SecretBinary only"),
])
def test_malformed_secret_is_a_record_error_with_its_version(direct, sm, kwargs, words) -> None:
    """A value that is not a JSON object -> RecordError naming the secret and carrying its VersionId."""
    sm.create_secret(Name=KEY, **kwargs)
    with pytest.raises(RecordError) as caught:
        direct.read(KEY)
    assert words in caught.value.diagnostics() and "aws:sf/key" in caught.value.diagnostics()
    assert caught.value.version == holder(sm, "AWSCURRENT", KEY)


def test_malformed_token_is_replaced_by_compare_and_set(direct, sm) -> None:
    """An unreadable token's VersionId lets a writer replace it with the normal CAS write."""
    sm.create_secret(Name=TOKEN, SecretString="{broken")
    with pytest.raises(RecordError) as caught:
        direct.read(TOKEN)
    direct.write(TOKEN, {"n": 1}, expected_version=caught.value.version, request_id=RID2)
    assert value_at(sm, "AWSCURRENT") == {"n": 1}


def test_secret_scheduled_for_deletion_is_a_clear_error(direct, sm) -> None:
    """A secret pending deletion: read and write fail with the restore command, nothing is written."""
    old = seed(direct, {"n": 1})
    sm.delete_secret(SecretId=TOKEN, RecoveryWindowInDays=7)
    for attempt in (lambda: direct.read(TOKEN),
                    lambda: direct.write(TOKEN, {"n": 2}, expected_version=old, request_id=RID2)):
        with pytest.raises(StoreError, match="scheduled for deletion") as caught:
            attempt()
        assert "restore-secret --secret-id sf/token" in caught.value.diagnostics()
        assert not caught.value.retryable
    assert version_count(sm) == 1


def test_no_credentials_is_an_auth_error_with_the_chain(moto, monkeypatch) -> None:
    """No credentials anywhere -> StoreAuthError explaining where boto3 looks."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    with pytest.raises(StoreAuthError, match="NoCredentialsError") as caught:
        make_store(moto.url).read(TOKEN)
    assert "AWS_WEB_IDENTITY_TOKEN_FILE" in caught.value.diagnostics()


def test_unreachable_endpoint_is_unavailable() -> None:
    """Nothing listening at endpoint_url -> StoreUnavailable naming the endpoint."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    store = make_store(url, timeout=2)
    with pytest.raises(StoreUnavailable, match="cannot reach") as caught:
        store.check()
    assert url in caught.value.diagnostics() and caught.value.retryable


def test_unknown_profile_and_missing_region_are_store_errors(monkeypatch) -> None:
    """profile not in the shared config, or no region at all: a StoreError saying which setting."""
    with pytest.raises(StoreError, match="profile 'nope' not found"):
        AwsStore("aws", AwsStoreConfig(type="aws", profile="nope"))
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(StoreError, match="no AWS region") as caught:
        AwsStore("aws", AwsStoreConfig(type="aws"))
    assert "stores.aws" in caught.value.diagnostics() or "[stores.aws]" in caught.value.diagnostics()


def test_reserved_tag_prefix_is_a_config_error() -> None:
    """A config tag starting with aws: cannot be set on a secret: ConfigError naming the key path."""
    with pytest.raises(ConfigError, match=r"stores\.aws\.tags"):
        AwsStore("aws", AwsStoreConfig(type="aws", region="us-east-1", tags={"aws:owner": "x"}))


def test_check_is_read_only_and_accepts_a_policy_without_list(moto, sm, proxy) -> None:
    """check() makes one ListSecrets call; AccessDenied on it still proves identity; bad keys fail."""
    store = make_store(proxy.url)
    store.check()
    proxy.set_fault("ListSecrets", "AccessDeniedException")
    store.check()
    proxy.set_fault("ListSecrets", "InvalidSignatureException")
    with pytest.raises(StoreAuthError):
        store.check()
    assert proxy.operations == ["ListSecrets"] * 3
    assert sm.list_secrets()["SecretList"] == []


def test_describe_names_region_and_endpoint(direct, moto) -> None:
    """describe(): 'aws secretsmanager <region> [endpoint]'."""
    assert direct.describe() == f"aws secretsmanager us-east-1 {moto.url}"
    plain = AwsStore("aws", AwsStoreConfig(type="aws", region="eu-west-1"))
    assert plain.describe() == "aws secretsmanager eu-west-1"
    plain.close()


def test_record_over_the_size_limit_is_refused_before_any_call(proxy) -> None:
    """A record above 64 KiB is refused with a StoreError and no request is sent."""
    with pytest.raises(StoreError, match="65536"):
        make_store(proxy.url).write(TOKEN, {"x": "y" * 70000}, expected_version=None)
    assert proxy.operations == []


# ---------------------------------------------------------------------------- config and imports


def _aws_config(every: str, store: str = "aws") -> Any:
    raw = {
        "stores": {"aws": {"type": "aws", "region": "us-east-1"}, "local": {"type": "file", "path": "s"}},
        "credentials": {"sf": {"provider": "salesforce", "client_id": CLIENT_ID, "username": USERNAME,
                               "key": f"{store}:sf/key", "token": f"{store}:sf/token",
                               "every": every, "jitter": "0s"}},
    }
    return parse_config(raw, base_dir=Path("/tmp"))


def test_rate_warning_for_fast_intervals_on_aws() -> None:
    """every < 10m on a Secrets Manager token warns (PutSecretValue rate, version quota); else silent."""
    warnings = _aws_config("5m").warnings
    assert len(warnings) == 1
    assert "credentials.sf.every" in warnings[0] and "10 minutes" in warnings[0]
    assert "288 versions a day" in warnings[0]
    assert _aws_config("10m").warnings == ()
    assert _aws_config("5m", store="local").warnings == ()


def test_rotator_imports_do_not_import_boto3() -> None:
    """Importing the CLI, the daemon, the engine and the stores leaves boto3 (and botocore) unimported."""
    code = ("import rotator.cli.app, rotator.cli.commands, rotator.daemon.service, rotator.engine, "
            "rotator.stores, sys; "
            "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=rotator_subprocess_env(), cwd=REPO)
    assert done.returncode == 0, done.stderr
