"""AWS Secrets Manager store, following AWS's own rotation model.

A record is the `SecretString` (one JSON object) of the secret's AWSCURRENT version, read with
`VersionStage="AWSCURRENT"` explicitly; `Record.version` is that VersionId. A write is AWS's
four rotation steps, so consumers that read AWSCURRENT (the AWS SDKs, the Secrets Manager
caching clients, `aws secretsmanager get-secret-value`) always see a complete token and can
fall back to AWSPREVIOUS:

1. `describe_secret` — which version holds AWSCURRENT now (VersionIdsToStages; never trust a
   stage-less `get_secret_value`). If it is no longer `expected_version`: StoreConflict,
   before anything is written. A leftover AWSPENDING from a crashed run is an orphan (it was
   never promoted and AWSCURRENT is still what the caller read): its label is removed, and it
   is never promoted — only a value this call wrote and verified is.
2. `put_secret_value(VersionStages=["AWSPENDING"], ClientRequestToken=<request token>)` —
   the token becomes the VersionId, so a retry is idempotent and a second writer with the
   same token but other content collides (ResourceExistsException) instead of clobbering.
3. `get_secret_value(VersionId=<token>)` — test it: the stored content must be ours.
4. `update_secret_version_stage("AWSCURRENT", MoveToVersionId=new,
   RemoveFromVersionId=expected_version)` — the compare-and-swap: it fails if AWSCURRENT moved
   meanwhile (then StoreConflict and our AWSPENDING label is removed). AWS moves AWSPREVIOUS to
   the version AWSCURRENT left. Then AWSPENDING is removed from the new version.

`expected_version=None` means the secret must not exist (or hold no value yet): it is created
with `create_secret` (tags from the config and the write's metadata, `KmsKeyId` if set) when
`create_missing` is on, else RecordNotFound.

boto3 is imported in `AwsStore.__init__`, never when rotator is imported, and each store makes
one client. botocore errors are converted here into rotator.errors with a diagnosis: the IAM or
KMS action and the secret a policy must allow, the credential chain, throttling; nothing from
botocore leaves this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rotator import __version__, hardening
from rotator.config import AwsStoreConfig, check_store_path
from rotator.errors import (
    ConfigError,
    RecordError,
    RecordNotFound,
    RotatorError,
    StoreAccessDenied,
    StoreAuthError,
    StoreConflict,
    StoreError,
    StoreUnavailable,
)
from rotator.stores.base import Record, WriteResult

CURRENT = "AWSCURRENT"
PENDING = "AWSPENDING"
PREVIOUS = "AWSPREVIOUS"
MAX_SECRET_STRING_BYTES = 65536
MAX_ATTEMPTS = 2  # botocore's own retries; rotator's policy does the real backoff
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9-]{32,64}$")
# AWS tags: letters, digits, spaces and + - = . _ : / @ ; keys up to 128, values up to 256.
_TAG_BAD_CHARS = re.compile(r"[^A-Za-z0-9 +\-=._:/@]")
MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS = 128, 256, 50

AUTH_CODES = frozenset({
    "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken",
    "ExpiredTokenException", "InvalidSignatureException", "SignatureDoesNotMatch",
    "IncompleteSignature", "MissingAuthenticationToken", "MissingAuthenticationTokenException",
    "AuthFailure", "RequestExpired", "InvalidAccessKeyId", "InvalidToken",
})
THROTTLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "LimitExceededException",
    "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException", "SlowDown",
})
UNAVAILABLE_CODES = frozenset({
    "InternalServiceError", "InternalServiceErrorException", "InternalFailure",
    "ServiceUnavailable", "ServiceUnavailableException", "RequestTimeout",
    "RequestTimeoutException",
})
KMS_CODES = {
    "DecryptionFailure": "kms:Decrypt",
    "EncryptionFailure": "kms:GenerateDataKey (and kms:Decrypt)",
    "KMSAccessDeniedException": "kms:Decrypt / kms:GenerateDataKey",
    "KMSDisabledException": "kms:Decrypt / kms:GenerateDataKey",
    "KMSInvalidStateException": "kms:Decrypt / kms:GenerateDataKey",
    "KMSNotFoundException": "kms:Decrypt / kms:GenerateDataKey",
}
CHAIN_HINT = (
    "boto3 looks for credentials in this order: the store's profile, AWS_ACCESS_KEY_ID/"
    "AWS_SECRET_ACCESS_KEY(/AWS_SESSION_TOKEN), AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN (IRSA), "
    "the shared config/credentials files (AWS_PROFILE), the container role, the instance role; "
    "refresh expired session credentials (aws sso login, a new role session)"
)


class _ApiError(Exception):
    """A botocore failure reduced to plain facts, so no botocore object travels further."""

    def __init__(
        self, operation: str, code: str, message: str, status: int | None = None,
        kind: str = "client",
    ) -> None:
        super().__init__(f"{operation}: {code}: {message}")
        self.operation = operation
        self.code = code
        self.message = message
        self.status = status
        self.kind = kind  # client | network | credentials | region | profile | params | other


@dataclass
class _State:
    """What describe_secret says about one secret."""

    arn: str
    stages: dict[str, list[str]] = field(default_factory=dict)
    deleted: bool = False

    def holder(self, stage: str) -> str | None:
        for version, labels in self.stages.items():
            if stage in labels:
                return version
        return None

    def with_stage(self, stage: str) -> list[str]:
        return [version for version, labels in self.stages.items() if stage in labels]


class AwsStore:
    def __init__(self, name: str, config: AwsStoreConfig) -> None:
        self.name = name
        self.config = config
        self._arns: dict[str, str] = {}
        self._config_tags = _config_tags(name, config.tags)
        try:
            import boto3
            from botocore import exceptions as bex
            from botocore.config import Config as BotoConfig
        except ImportError:
            raise ConfigError(
                f"stores.{name}: type \"aws\" needs boto3",
                hint="install it with pip install 'rotator[aws]'",
            ) from None
        boto_config = BotoConfig(
            connect_timeout=config.timeout,
            read_timeout=config.timeout,
            retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
            user_agent_extra=f"rotator/{__version__}",
        )
        # Everything a botocore call can raise; converted at this module's edge.
        self._boto_errors: tuple[type[Exception], ...] = (bex.BotoCoreError, bex.ClientError)
        error: _ApiError | None = None
        try:
            session = boto3.session.Session(
                profile_name=config.profile, region_name=config.region,
                **hardening.aws_credentials(config.profile),  # keys withheld from os.environ
            )
            self._client = session.client(
                "secretsmanager", endpoint_url=config.endpoint_url, config=boto_config
            )
        except self._boto_errors as exc:  # ProfileNotFound, NoRegionError, ...
            error = _reduce("CreateClient", exc)
        if error is not None:
            raise self._convert(error, "")
        self.region: str = self._client.meta.region_name

    # ------------------------------------------------------------------ interface

    def read(self, path: str) -> Record | None:
        """The AWSCURRENT version's record, or None when the secret or its value is missing."""
        return self._read_stage(path, CURRENT)

    def read_previous(self, path: str) -> Record | None:
        """The AWSPREVIOUS version's record (the token consumers fall back to), or None."""
        return self._read_stage(path, PREVIOUS)

    def write(
        self,
        path: str,
        data: dict[str, Any],
        *,
        expected_version: str | None,
        request_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> WriteResult:
        self._check_path(path)
        payload = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if len(payload.encode("utf-8")) > MAX_SECRET_STRING_BYTES:
            raise StoreError(
                self.name, path, f"record is larger than Secrets Manager's {MAX_SECRET_STRING_BYTES}"
                " bytes limit for SecretString",
            )
        token = request_token(request_id, payload)
        try:
            return self._write(path, payload, token, expected_version, metadata or {})
        except _ApiError as err:
            raise self._convert(err, path) from None

    def check(self) -> None:
        """One read-only call: proves the credentials are accepted and the endpoint answers.

        `ListSecrets` needs no permission on a particular secret; an AccessDenied answer still
        proves both (AWS authenticated us before it refused), so least-privilege policies
        without ListSecrets pass. The per-secret permissions are checked when `rotator check`
        reads each credential's key and token.
        """
        try:
            self._call("ListSecrets", "list_secrets", MaxResults=1)
        except _ApiError as err:
            if err.code == "AccessDeniedException":
                return
            raise self._convert(err, "") from None

    def describe(self) -> str:
        text = f"aws secretsmanager {self.region}"
        if self.config.endpoint_url:
            text += f" {self.config.endpoint_url}"
        return text

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            close()

    # ------------------------------------------------------------------ read

    def _read_stage(self, path: str, stage: str) -> Record | None:
        self._check_path(path)
        try:
            reply = self._call(
                "GetSecretValue", "get_secret_value", SecretId=path, VersionStage=stage
            )
        except _ApiError as err:
            if err.code == "ResourceNotFoundException":
                return None  # no such secret, or no version with this stage (no value yet)
            raise self._convert(err, path) from None
        self._remember_arn(path, reply.get("ARN"))
        version = str(reply.get("VersionId") or "")
        where = f"{self.name}:{path}" + ("" if stage == CURRENT else f" ({stage})")
        data = _parse_secret(reply, where, version)
        meta: dict[str, Any] = {
            "arn": reply.get("ARN"),
            "version_stages": list(reply.get("VersionStages") or []),
        }
        created = reply.get("CreatedDate")
        if isinstance(created, datetime):
            meta["created_time"] = created.isoformat()
        return Record(data, version, meta)

    # ------------------------------------------------------------------ write

    def _write(
        self, path: str, payload: str, token: str, expected: str | None, metadata: dict[str, str]
    ) -> WriteResult:
        state = self._describe(path)
        if state is None:
            if expected is not None:
                raise self._conflict(path, expected, None, "the secret no longer exists")
            return self._create(path, payload, token, metadata)
        if state.deleted:
            raise self._scheduled_for_deletion(path)
        current = state.holder(CURRENT)
        if current == token:
            # This very write already went through (a retry after a crash or a lost reply).
            self._verify(path, token, payload)
            if PENDING in state.stages.get(token, []):
                self._drop_pending(path, token)
            return WriteResult(token, state.holder(PREVIOUS))
        if current != expected:
            raise self._conflict(path, expected, current)
        for orphan in state.with_stage(PENDING):
            if orphan != token:
                # Left by a run that crashed before it finished, or by a writer that lost a race:
                # never promoted, and AWSCURRENT is still what our caller read. Our write
                # supersedes it; its value is never promoted.
                self._drop_pending(path, orphan)
        stages = self._put_pending(path, payload, token, expected)
        self._verify(path, token, payload, cleanup=True)
        if CURRENT not in stages:
            self._promote(path, token, expected)
        # else: the secret had no value yet, and AWS labels a first version AWSCURRENT itself.
        self._drop_pending(path, token)
        return WriteResult(token, expected)

    def _describe(self, path: str) -> _State | None:
        try:
            reply = self._call("DescribeSecret", "describe_secret", SecretId=path)
        except _ApiError as err:
            if err.code == "ResourceNotFoundException":
                return None
            raise
        self._remember_arn(path, reply.get("ARN"))
        stages = {
            str(version): [str(label) for label in labels]
            for version, labels in (reply.get("VersionIdsToStages") or {}).items()
        }
        return _State(str(reply.get("ARN") or path), stages, reply.get("DeletedDate") is not None)

    def _create(
        self, path: str, payload: str, token: str, metadata: dict[str, str]
    ) -> WriteResult:
        if not self.config.create_missing:
            raise RecordNotFound(
                self.name, path,
                "the secret does not exist: create the secret first or set create_missing = true",
                hint=f"aws secretsmanager create-secret --name {path} --secret-string file://record.json",
            )
        params: dict[str, Any] = {
            "Name": path,
            "SecretString": payload,
            "ClientRequestToken": token,
            "Description": "Managed by rotator; consumers read the AWSCURRENT version",
        }
        if self.config.kms_key_id:
            params["KmsKeyId"] = self.config.kms_key_id
        tags = self._tags(metadata)
        if tags:
            params["Tags"] = tags
        try:
            reply = self._call("CreateSecret", "create_secret", **params)
        except _ApiError as err:
            if err.code != "ResourceExistsException":
                raise
            # Someone created it between our describe and our create — or it was us, on a
            # retry of a create whose reply was lost.
            state = self._describe(path)
            current = state.holder(CURRENT) if state else None
            if current == token:
                self._verify(path, token, payload)
                return WriteResult(token, None)
            raise self._conflict(path, None, current) from None
        self._remember_arn(path, reply.get("ARN"))
        return WriteResult(str(reply.get("VersionId") or token), None)

    def _put_pending(self, path: str, payload: str, token: str, expected: str | None) -> list[str]:
        try:
            reply = self._call(
                "PutSecretValue", "put_secret_value", SecretId=path, SecretString=payload,
                ClientRequestToken=token, VersionStages=[PENDING],
            )
        except _ApiError as err:
            if err.code == "ResourceExistsException":
                raise StoreConflict(
                    self.name, path,
                    f"request token {token} already names a version with other content",
                    hint="another writer used the same request id; re-read and decide again",
                ) from None
            if err.code == "ResourceNotFoundException":
                raise self._conflict(path, expected, None, "the secret was deleted") from None
            raise
        return [str(label) for label in reply.get("VersionStages") or []]

    def _verify(self, path: str, token: str, payload: str, *, cleanup: bool = False) -> None:
        """AWS's testSecret step: the version our token names must hold exactly what we wrote."""
        try:
            reply = self._call("GetSecretValue", "get_secret_value", SecretId=path, VersionId=token)
        except _ApiError as err:
            if err.code != "ResourceNotFoundException":
                raise
            reply = {}
        stored = reply.get("SecretString")
        try:
            same = isinstance(stored, str) and json.loads(stored) == json.loads(payload)
        except ValueError:
            same = False
        if not same:
            if cleanup:
                self._drop_pending(path, token)
            raise StoreConflict(
                self.name, path,
                f"version {token} does not hold the record this write stored; it is not promoted",
                hint="another writer used the same request id; re-read and decide again",
            )

    def _promote(self, path: str, token: str, expected: str | None) -> None:
        params: dict[str, Any] = {
            "SecretId": path, "VersionStage": CURRENT, "MoveToVersionId": token,
        }
        if expected is not None:
            params["RemoveFromVersionId"] = expected
        try:
            self._call("UpdateSecretVersionStage", "update_secret_version_stage", **params)
        except _ApiError as err:
            if not _may_be_a_lost_race(err):
                raise
            # The compare-and-swap failed — unless an earlier attempt of this very call (a
            # botocore retry after a lost reply) already moved AWSCURRENT to our version.
            state = self._describe(path)
            current = state.holder(CURRENT) if state else None
            if current == token:
                return
            if current != expected:
                self._drop_pending(path, token)
                raise self._conflict(path, expected, current) from None
            raise

    def _drop_pending(self, path: str, version: str) -> None:
        """Remove AWSPENDING from `version`, best effort.

        A label that already moved elsewhere is fine; any other failure is left for later:
        the next put moves AWSPENDING anyway, and a write that failed to clean up after itself
        has already succeeded.
        """
        with contextlib.suppress(_ApiError):
            self._call(
                "UpdateSecretVersionStage", "update_secret_version_stage",
                SecretId=path, VersionStage=PENDING, RemoveFromVersionId=version,
            )

    def _tags(self, metadata: dict[str, str]) -> list[dict[str, str]]:
        tags = dict(self._config_tags)
        for key, value in metadata.items():
            tags.setdefault(_tag_text(f"rotator:{key}", MAX_TAG_KEY), _tag_text(value, MAX_TAG_VALUE))
        return [{"Key": k, "Value": v} for k, v in list(tags.items())[:MAX_TAGS]]

    # ------------------------------------------------------------------ botocore edge

    def _call(self, operation: str, method: str, **params: Any) -> dict[str, Any]:
        error: _ApiError | None = None
        try:
            return getattr(self._client, method)(**params)
        except self._boto_errors as exc:
            error = _reduce(operation, exc)
        raise error

    def _convert(self, err: _ApiError, path: str) -> RotatorError:
        """A botocore failure -> a rotator error saying what to change."""
        action = f"secretsmanager:{err.operation}"
        code, status = err.code, err.status
        said = _aws_said(err.message)
        if err.kind == "network":
            where = self.config.endpoint_url or f"Secrets Manager in {self.region}"
            return StoreUnavailable(
                self.name, path, f"cannot reach {where} ({err.message})",
                hint="check the network path (proxy, VPC endpoint, security groups); retried later",
            )
        if err.kind == "credentials" or code in AUTH_CODES:
            hint = CHAIN_HINT
            if code == "RequestExpired":
                hint = "the request's signature time is off: check this host's clock (NTP)"
            return StoreAuthError(
                self.name, path, f"AWS did not accept our credentials ({code}){said}", hint=hint
            )
        if err.kind == "profile":
            return StoreError(
                self.name, path, f"AWS profile {self.config.profile!r} not found",
                hint="fix stores." + self.name + ".profile or the shared config file (AWS_CONFIG_FILE)",
            )
        if err.kind == "region":
            return StoreError(
                self.name, path, "no AWS region",
                hint=f"set region in [stores.{self.name}] or AWS_REGION",
            )
        if err.kind == "params":
            return StoreError(self.name, path, f"{action}: invalid request ({err.message})")
        if err.kind != "client":
            return StoreError(self.name, path, f"{action} failed ({err.message})")
        arn = self._secret_arn(path)
        if code in KMS_CODES or (code == "AccessDeniedException" and "kms" in err.message.lower()):
            kms_action = KMS_CODES.get(code, "kms:Decrypt / kms:GenerateDataKey")
            key = self.config.kms_key_id or "the secret's KMS key (aws/secretsmanager by default)"
            return StoreAccessDenied(
                self.name, path, f"{action} on secret {path} failed: KMS refused ({code}){said}",
                hint=f"allow {kms_action} on {key} to this identity, with kms:ViaService "
                f"secretsmanager.{self.region}.amazonaws.com, and check the key is enabled",
            )
        if code == "AccessDeniedException":
            return StoreAccessDenied(
                self.name, path, f"access denied: {action} on secret {path or '*'}{said}",
                hint=f"the IAM policy must allow {action} on {arn} "
                "(see deploy/aws/rotator-iam-policy.json)",
            )
        if code in THROTTLE_CODES or code in UNAVAILABLE_CODES or (status or 0) >= 500:
            hint = "rotator retries later with backoff"
            if code == "LimitExceededException":
                hint = ("a Secrets Manager quota was hit (PutSecretValue about once per 10 minutes "
                        "sustained, 100 versions a day): slow the credential's every")
            return StoreUnavailable(
                self.name, path, f"{action} throttled or unavailable ({code}){said}", hint=hint
            )
        if code == "InvalidRequestException" and "delet" in err.message.lower():
            return self._scheduled_for_deletion(path)
        if code == "ResourceNotFoundException":
            return RecordNotFound(self.name, path, f"{action}: secret {path} not found")
        return StoreError(self.name, path, f"{action} failed ({code}){said}")

    def _scheduled_for_deletion(self, path: str) -> StoreError:
        return StoreError(
            self.name, path, f"secret {path} is scheduled for deletion",
            hint=f"restore it with `aws secretsmanager restore-secret --secret-id {path}`, "
            "or point the credential at another secret",
        )

    def _conflict(
        self, path: str, expected: str | None, found: str | None, why: str | None = None
    ) -> StoreConflict:
        text = why or "AWSCURRENT moved since it was read"
        return StoreConflict(
            self.name, path,
            f"{text} (expected version {expected or 'none'}, found {found or 'none'})",
            hint="another writer got there first; re-read and decide again",
        )

    def _secret_arn(self, path: str) -> str:
        """The secret's ARN if a reply told us, else the pattern an IAM policy would use."""
        if not path:
            return "*"
        return self._arns.get(path) or f"arn:aws:secretsmanager:{self.region}:ACCOUNT:secret:{path}-*"

    def _remember_arn(self, path: str, arn: Any) -> None:
        if isinstance(arn, str) and arn:
            self._arns[path] = arn

    def _check_path(self, path: str) -> None:
        try:
            check_store_path(path)
        except ValueError as exc:
            raise StoreError(self.name, path, str(exc)) from None


# ---------------------------------------------------------------------------- helpers


def request_token(request_id: str | None, payload: str) -> str:
    """The ClientRequestToken (and so the VersionId) for a write: 32-64 characters.

    A rotation id (32 hex digits, random) is used as it is; any other request id is hashed.
    Without a request id the token is an HMAC of the content under a random per-process key:
    the same write retried (in this process) is the same version, but the VersionId, which
    CloudTrail, audit lines and `describe-secret` show, says nothing about the secret.
    """
    if request_id is not None:
        if TOKEN_PATTERN.fullmatch(request_id):
            return request_id
        return hashlib.sha256(b"rotator-request\0" + request_id.encode("utf-8")).hexdigest()
    return hmac.new(_TOKEN_KEY, b"rotator-record\0" + payload.encode("utf-8"), hashlib.sha256).hexdigest()


_TOKEN_KEY = secrets.token_bytes(32)


def _parse_secret(reply: dict[str, Any], where: str, version: str) -> dict[str, Any]:
    text = reply.get("SecretString")
    if text is None:
        detail = "holds SecretBinary only" if reply.get("SecretBinary") is not None else "has no value"
        raise RecordError(
            where, f"the secret {detail}; rotator records are a JSON object in SecretString",
            hint="write it with --secret-string file://record.json", version=version,
        )
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise RecordError(
            where, "the secret's SecretString is not valid JSON",
            hint="rotator records are one JSON object, e.g. {\"private_key\": ..., \"certificate\": ...}",
            version=version,
        ) from None
    if not isinstance(data, dict):
        raise RecordError(where, "the secret's SecretString is not a JSON object", version=version)
    return data


def _reduce(operation: str, exc: Exception) -> _ApiError:
    """botocore/boto3 exception -> _ApiError (plain strings only; no parameter values)."""
    from botocore import exceptions as bex

    if isinstance(exc, bex.ClientError):
        error = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
        meta = exc.response.get("ResponseMetadata", {}) if isinstance(exc.response, dict) else {}
        code = str(error.get("Code") or "Unknown")
        message = str(error.get("Message") or "")
        return _ApiError(operation, code, message, meta.get("HTTPStatusCode"))
    name = type(exc).__name__
    if isinstance(exc, bex.ParamValidationError):
        # Its text can quote parameter values (a SecretString is a secret): names only.
        params = sorted(set(re.findall(r"parameter (\S+?)[,:\s]", str(exc))))
        return _ApiError(operation, name, "parameters " + (", ".join(params) or "?"), kind="params")
    if isinstance(exc, bex.ProfileNotFound):
        return _ApiError(operation, name, str(exc), kind="profile")
    if isinstance(exc, bex.NoRegionError):
        return _ApiError(operation, name, str(exc), kind="region")
    credential_errors: tuple[type[BaseException], ...] = (
        bex.NoCredentialsError, bex.PartialCredentialsError, bex.CredentialRetrievalError,
    )
    for extra in ("TokenRetrievalError", "SSOTokenLoadError", "UnauthorizedSSOTokenError",
                  "InvalidConfigError"):
        if hasattr(bex, extra):
            credential_errors += (getattr(bex, extra),)
    if isinstance(exc, credential_errors):
        return _ApiError(operation, name, str(exc), kind="credentials")
    network_errors = (
        bex.EndpointConnectionError, bex.ConnectTimeoutError, bex.ReadTimeoutError,
        bex.ConnectionClosedError, bex.HTTPClientError,
    )
    kind = "network" if isinstance(exc, network_errors) else "other"
    return _ApiError(operation, name, _short(str(exc)), kind=kind)


def _may_be_a_lost_race(err: _ApiError) -> bool:
    """A refused stage move that describe_secret must explain (AWS answers a RemoveFromVersionId
    that no longer holds the label with a parameter/request error, not a dedicated code)."""
    if err.kind != "client":
        return False
    refusals = AUTH_CODES | THROTTLE_CODES | UNAVAILABLE_CODES | set(KMS_CODES)
    return err.code not in refusals and err.code != "AccessDeniedException" and (err.status or 400) < 500


def _aws_said(message: str) -> str:
    text = " ".join(message.split())
    return f": AWS says {_short(text)!r}" if text else ""


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tag_text(text: str, limit: int) -> str:
    return _TAG_BAD_CHARS.sub("_", text)[:limit]


def _config_tags(store: str, tags: dict[str, str]) -> dict[str, str]:
    """The config's tags in AWS's charset; 'aws:' is a prefix AWS keeps for itself."""
    result: dict[str, str] = {}
    for key, value in tags.items():
        clean = _tag_text(key, MAX_TAG_KEY)
        if not clean or clean.lower().startswith("aws:"):
            raise ConfigError(
                f"stores.{store}.tags: {key!r} is not a usable tag key "
                "(empty, or starts with the reserved prefix aws:)"
            )
        result[clean] = _tag_text(value, MAX_TAG_VALUE)
    return result
