"""RS256 signing with an AWS KMS key, over boto3.

The private key never leaves KMS: rotator calls ``Sign`` for each signature and ``GetPublicKey``
for the certificate. Keys are named by key id, alias (``alias/sf-prod``) or ARN; only
``KeySpec`` RSA_2048/3072/4096 with ``KeyUsage`` SIGN_VERIFY can sign RS256
(``RSASSA_PKCS1_V1_5_SHA_256``).

* Message type: ``RAW`` (KMS hashes the message with SHA-256) for messages up to KMS's 4096-byte
  RAW limit — assertions and TBS certificates are far below it — and ``DIGEST`` (the SHA-256
  digest) above it. Both give the same RS256 signature on real KMS. RAW is the default because
  moto's KMS ignores ``MessageType`` and always hashes what it gets: with DIGEST against moto
  the signature would be over SHA-256(digest) and the tests could not check the real path.
* boto3 is imported only when a KMS service is made (about 170 ms and 20 MB), and one client
  serves every call (botocore keeps its connections alive and reuses them). Time is bounded by
  connect/read timeouts and at most 2 attempts; botocore reads whole replies, so sizes are
  checked field by field (a signature must be exactly the modulus length, a public key at most
  a few KiB of DER).
* Rollover makes a *new* key (``create_key``, tagged ``rotator:credential=<name>``). Deleting
  the old one is never automatic: :meth:`KmsService.schedule_deletion` exists only for an
  explicit operator command, and waits at least 7 days as KMS requires.
* botocore exceptions are converted here: AccessDenied names the action and the key, a
  disabled or pending-deletion key says so, a missing key says which. Nothing from botocore
  leaves this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator import hardening
from rotator.errors import (
    KeyMaterialError,
    RecordNotFound,
    StoreAccessDenied,
    StoreAuthError,
    StoreError,
    StoreUnavailable,
)
from rotator.keys.remote.base import sha256

RSA_SPECS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
ALGORITHM = "RSASSA_PKCS1_V1_5_SHA_256"
RAW_LIMIT = 4096  # KMS Sign: a RAW message is at most 4096 bytes
MAX_PUBLIC_KEY_DER = 1024  # a 4096-bit SubjectPublicKeyInfo is 550 bytes
SIGNER_POLICY = "deploy/aws/kms-signer-iam-policy.json"
ROLLOVER_POLICY = "deploy/aws/kms-rollover-iam-policy.json"
TAG_KEY = "rotator:credential"
# key id (uuid or mrk-...), alias/NAME, or an ARN of either
_KEY_REF = re.compile(
    r"(?:arn:aws[a-z-]*:kms:[a-z0-9-]{1,30}:[0-9]{12}:(?:key/|alias/))?[A-Za-z0-9/_:.-]{1,256}"
)
T = TypeVar("T")


@dataclass(frozen=True)
class KmsKeyInfo:
    key_id: str
    arn: str
    key_spec: str
    key_usage: str
    key_state: str
    public_key: rsa.RSAPublicKey | None  # None when the key is not an RSA key


class KmsService:
    """KMS in one region through one boto3 client."""

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        store: str = "aws",
        timeout: float = 10.0,
        profile: str | None = None,
        client: Any = None,
    ) -> None:
        self.store = store
        if client is None:
            client = self._make_client(region, endpoint_url, timeout, profile)
        self.client = client
        self.address = endpoint_url or f"KMS in {client.meta.region_name}"

    def __repr__(self) -> str:
        return f"<KmsService {self.address}>"

    def _make_client(self, region: str | None, endpoint_url: str | None, timeout: float,
                     profile: str | None) -> Any:
        try:
            import boto3  # lazily: only credentials that sign with KMS pay for boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError
        except ImportError:
            raise StoreError(self.store, "", "signer \"aws-kms\" needs boto3",
                             hint="install it with pip install 'rotator[aws]'") from None
        try:
            session = boto3.session.Session(
                profile_name=profile, region_name=region,
                **hardening.aws_credentials(profile),  # keys withheld from os.environ
            )
            return session.client(
                "kms", endpoint_url=endpoint_url,
                config=Config(connect_timeout=timeout, read_timeout=timeout,
                              retries={"mode": "standard", "max_attempts": 2}),
            )
        except BotoCoreError as exc:  # ProfileNotFound, NoRegionError, ...
            reason = type(exc).__name__
        raise StoreError(self.store, "", f"cannot make a KMS client ({reason})",
                         hint="set the store's region (or AWS_REGION) and check its profile")

    # ------------------------------------------------------------------ keys

    def describe(self, key_ref: str) -> KmsKeyInfo:
        """Metadata (DescribeKey) and, for RSA signing keys, the public key (GetPublicKey)."""
        meta = self._call(lambda: self.client.describe_key(KeyId=key_ref)["KeyMetadata"],
                          key_ref=key_ref, action="kms:DescribeKey")
        if not isinstance(meta, dict):
            raise self._unexpected(key_ref, "DescribeKey reply")
        fields = {name: meta.get(name) for name in ("KeyId", "Arn", "KeySpec", "KeyUsage", "KeyState")}
        if not all(isinstance(v, str) and 0 < len(v) <= 300 for v in fields.values()):
            raise self._unexpected(key_ref, "DescribeKey reply")
        public = None
        if fields["KeySpec"] in RSA_SPECS and fields["KeyUsage"] == "SIGN_VERIFY" \
                and fields["KeyState"] == "Enabled":
            public = self._public_key(key_ref)
        return KmsKeyInfo(fields["KeyId"], fields["Arn"], fields["KeySpec"], fields["KeyUsage"],
                          fields["KeyState"], public)

    def key(self, key_ref: str) -> KmsKey:
        """The key `key_ref`, checked to be an enabled RSA SIGN_VERIFY key."""
        info = self.describe(key_ref)
        where = f"KMS key {key_ref}"
        if info.key_usage != "SIGN_VERIFY":
            raise KeyMaterialError(f"{where} has KeyUsage {info.key_usage}; RS256 needs SIGN_VERIFY",
                                   hint="create a key with --key-usage SIGN_VERIFY --key-spec RSA_2048")
        if info.key_spec not in RSA_SPECS:
            raise KeyMaterialError(
                f"{where} has KeySpec {info.key_spec}; RS256 needs RSA_2048, RSA_3072 or RSA_4096",
                hint="Salesforce accepts RSA keys only: create one with --key-spec RSA_2048",
            )
        self._require_enabled(key_ref, info.key_state)
        if info.public_key is None or info.public_key.key_size != RSA_SPECS[info.key_spec]:
            raise self._unexpected(key_ref, "public key")
        return KmsKey(self, info.arn, info.public_key)

    def create_key(
        self, credential: str, *, key_spec: str = "RSA_2048", description: str | None = None
    ) -> str:
        """A new RSA signing key for `credential` (rollover); returns its ARN."""
        if key_spec not in RSA_SPECS:
            raise KeyMaterialError(f"KMS key spec {key_spec!r}: use RSA_2048, RSA_3072 or RSA_4096")
        meta = self._call(
            lambda: self.client.create_key(
                KeySpec=key_spec, KeyUsage="SIGN_VERIFY",
                Description=(description or f"rotator signing key for credential {credential}")[:8192],
                Tags=[{"TagKey": TAG_KEY, "TagValue": credential[:256]}],
            )["KeyMetadata"],
            key_ref="(new key)", action="kms:CreateKey", policy=ROLLOVER_POLICY,
        )
        arn = meta.get("Arn") if isinstance(meta, dict) else None
        if not isinstance(arn, str) or not _KEY_REF.fullmatch(arn):
            raise self._unexpected("(new key)", "CreateKey reply")
        return arn

    def create_alias(self, alias: str, key_arn: str) -> None:
        """Point `alias` (alias/NAME) at `key_arn`: `keys init` naming an alias that does not exist
        yet. Needs kms:CreateAlias on the alias and the key (an operator's right, not the daemon's)."""
        if not re.fullmatch(r"alias/[A-Za-z0-9/_-]{1,250}", alias) or alias.startswith("alias/aws/"):
            raise KeyMaterialError(f"KMS alias {alias[:60]!r}: use alias/NAME (letters, digits, / _ -)")
        self._call(lambda: self.client.create_alias(AliasName=alias, TargetKeyId=key_arn),
                   key_ref=alias, action="kms:CreateAlias", policy=ROLLOVER_POLICY)

    def schedule_deletion(self, key_ref: str, *, days: int = 30) -> str:
        """Schedule `key_ref` for deletion after `days` (7..30). Only ever called on an explicit
        operator command: a deleted key cannot be recovered, and its certificate stops working.
        Needs kms:ScheduleKeyDeletion, which neither shipped policy grants (an operator's right)."""
        if not 7 <= days <= 30:
            raise KeyMaterialError(f"--days {days}: KMS waits between 7 and 30 days")
        if key_ref.startswith("alias/") or ":alias/" in key_ref:
            # an alias may have been moved to another key since: name the key itself
            raise KeyMaterialError(f"KMS key {key_ref}: give the key id or key ARN to delete, not an alias")
        key_id = self.describe(key_ref).key_id
        reply = self._call(
            lambda: self.client.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=days),
            key_ref=key_ref, action="kms:ScheduleKeyDeletion", policy=ROLLOVER_POLICY,
        )
        when = reply.get("DeletionDate") if isinstance(reply, dict) else None
        return str(when)

    # ------------------------------------------------------------------ signing

    def sign_message(self, key_ref: str, message: bytes, *, key_size: int) -> bytes:
        """RSASSA-PKCS1-v1_5/SHA-256 of `message` by `key_ref` (RAW up to 4096 bytes, else DIGEST)."""
        if len(message) <= RAW_LIMIT:
            body, message_type = message, "RAW"
        else:
            body, message_type = sha256(message), "DIGEST"
        reply = self._call(
            lambda: self.client.sign(KeyId=key_ref, Message=body, MessageType=message_type,
                                     SigningAlgorithm=ALGORITHM),
            key_ref=key_ref, action="kms:Sign",
        )
        signature = reply.get("Signature") if isinstance(reply, dict) else None
        if not isinstance(signature, bytes) or len(signature) != key_size // 8:
            raise self._unexpected(key_ref, "Sign reply")
        return signature

    # ------------------------------------------------------------------ plumbing

    def _public_key(self, key_ref: str) -> rsa.RSAPublicKey:
        reply = self._call(lambda: self.client.get_public_key(KeyId=key_ref),
                           key_ref=key_ref, action="kms:GetPublicKey")
        der = reply.get("PublicKey") if isinstance(reply, dict) else None
        if not isinstance(der, bytes) or len(der) > MAX_PUBLIC_KEY_DER:
            raise self._unexpected(key_ref, "GetPublicKey reply")
        try:
            key = serialization.load_der_public_key(der)
        except ValueError:
            raise self._unexpected(key_ref, "public key") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise self._unexpected(key_ref, "public key")
        return key

    def _require_enabled(self, key_ref: str, state: str) -> None:
        if state == "Enabled":
            return
        if state == "PendingDeletion":
            raise StoreError(
                self.store, key_ref, f"KMS key {key_ref} is pending deletion and cannot sign",
                hint="cancel it (aws kms cancel-key-deletion, then enable-key) or use another key",
            )
        raise StoreError(self.store, key_ref, f"KMS key {key_ref} is {state} and cannot sign",
                         hint="enable it (aws kms enable-key) or use another key")

    def _call(self, fn: Callable[[], T], *, key_ref: str, action: str, policy: str = SIGNER_POLICY) -> T:
        if key_ref != "(new key)" and not _KEY_REF.fullmatch(key_ref):
            raise KeyMaterialError(f"KMS key {key_ref[:60]!r}: give a key id, alias/NAME or key ARN")
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except (ClientError, BotoCoreError, ValueError) as exc:
            failure: BaseException = exc
        # Converted outside the except block: nothing we raise chains a botocore exception.
        raise self._convert(failure, key_ref=key_ref, action=action, policy=policy)

    def _convert(self, exc: BaseException, *, key_ref: str, action: str, policy: str) -> StoreError:
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
            code = str(error.get("Code", ""))[:80]
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            text = " ".join(str(error.get("Message", "")).split())[:200]
            if code in ("AccessDeniedException", "AccessDenied"):
                return StoreAccessDenied(self.store, key_ref,
                                         f"permission denied: the IAM policy does not allow {action} "
                                         f"on KMS key {key_ref}", hint=f"grant it; see {policy}")
            if code == "NotFoundException":
                return RecordNotFound(self.store, key_ref, f"KMS key {key_ref} not found",
                                      hint="check signer_key (key id, alias/NAME or ARN) and the region")
            if code == "DisabledException":
                return StoreError(self.store, key_ref, f"KMS key {key_ref} is disabled and cannot sign",
                                  hint="enable it (aws kms enable-key) or use another key")
            if code == "KMSInvalidStateException":
                return StoreError(self.store, key_ref, f"KMS key {key_ref} cannot sign in its state "
                                  f"({text or 'e.g. pending deletion'})",
                                  hint="check it with aws kms describe-key")
            if code in ("InvalidKeyUsageException", "UnsupportedOperationException"):
                return StoreError(self.store, key_ref, f"KMS key {key_ref} cannot do {action} "
                                  f"({text or code})", hint="use an RSA SIGN_VERIFY key")
            if code in ("ThrottlingException", "KMSInternalException", "DependencyTimeoutException",
                        "KeyUnavailableException") or (isinstance(status, int) and status >= 500):
                return StoreUnavailable(self.store, key_ref, f"{action} on KMS key {key_ref} failed: "
                                        f"{code or status} at {self.address}")
            return StoreError(self.store, key_ref, f"{action} on KMS key {key_ref} failed: {code or status}"
                              + (f" ({text})" if text else ""))
        if isinstance(exc, NoCredentialsError):
            return StoreAuthError(self.store, key_ref, f"{action}: no AWS credentials found",
                                  hint="give the process a role or the usual AWS_* variables / profile")
        if isinstance(exc, ConnectTimeoutError | EndpointConnectionError):
            return StoreUnavailable(self.store, key_ref, f"{action}: cannot connect to {self.address}",
                                    hint="check the region/endpoint and that KMS is reachable from here")
        if isinstance(exc, ReadTimeoutError):
            return StoreUnavailable(self.store, key_ref, f"{action}: {self.address} did not answer in time")
        return StoreUnavailable(self.store, key_ref, f"{action} failed talking to {self.address} "
                                f"({type(exc).__name__})")

    def _unexpected(self, key_ref: str, what: str) -> StoreError:
        return StoreError(self.store, key_ref, f"unexpected {what} from {self.address}")


class KmsKey:
    """One KMS key: a :class:`rotator.keys.remote.base.RemoteKey`."""

    def __init__(self, service: KmsService, arn: str, public: rsa.RSAPublicKey) -> None:
        self.service = service
        self.arn = arn
        self._public = public

    def __repr__(self) -> str:
        return f"<KmsKey {self.arn}>"

    @property
    def reference(self) -> str:
        return self.arn

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self.service.sign_message(self.arn, message, key_size=self.key_size)
