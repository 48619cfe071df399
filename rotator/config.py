"""TOML config -> validated, frozen models.

Each section is validated on its own so that every error names its key path
(`credentials.sf.login_url: ...`) in one line. Relative file paths are resolved
against the directory of the config file, so a config and its files can move together.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rotator.durations import format_duration, parse_duration
from rotator.errors import ConfigError
from rotator.urls import check_url

DEFAULT_CONFIG_PATH = Path("/etc/rotator/rotator.toml")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # fullmatch: `$` would accept a "\n"
# Store paths: what Vault, Secrets Manager and a file system all accept, and nothing that
# could climb out of a file store's root.
PATH_PATTERN = re.compile(r"[A-Za-z0-9_+=@.-]+(/[A-Za-z0-9_+=@.-]+)*")  # fullmatch, as above
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
HOST_PATTERN = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*\Z")
MAX_DURATION_SECONDS = 10 * 365 * 86400.0  # what parse_duration allows for "90s"-style strings


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration string such as '30m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        if not math.isfinite(value) or value > MAX_DURATION_SECONDS:
            raise ValueError("a duration must be a finite number of seconds, at most 10 years")
        return float(value)
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]


def _url(value: Any) -> str:
    return check_url(value)


Url = Annotated[str, BeforeValidator(_url)]


@dataclass(frozen=True)
class Ref:
    """`STORE:PATH` — where a record lives."""

    store: str
    path: str

    def __str__(self) -> str:
        return f"{self.store}:{self.path}"


def parse_ref(value: Any) -> Ref:
    if isinstance(value, Ref):
        return value
    if not isinstance(value, str) or ":" not in value:
        raise ValueError("expected STORE:PATH, e.g. \"vault:salesforce/prod/signing-key\"")
    store, _, path = value.partition(":")
    if not NAME_PATTERN.fullmatch(store):
        raise ValueError(f"{store!r} is not a store name")
    check_store_path(path)
    return Ref(store, path)


def check_store_path(path: str) -> str:
    if not path:
        raise ValueError("the PATH part of STORE:PATH is empty")
    if path.startswith("/"):
        raise ValueError(f"{path!r} is absolute; store paths are relative to the store")
    if any(part in ("..", ".") for part in path.split("/")):
        raise ValueError(f"{path!r} contains '.' or '..'; store paths cannot leave the store")
    if len(path) > 512 or not PATH_PATTERN.fullmatch(path):
        raise ValueError(
            f"{path!r} has characters a store path cannot have "
            "(allowed: letters, digits, / _ + = @ . -)"
        )
    return path


RefField = Annotated[Ref, BeforeValidator(parse_ref)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


# ---------------------------------------------------------------------------- daemon


class DaemonConfig(_Model):
    listen: str = "127.0.0.1:9464"
    # bearer token for /metrics and /readyz's details; without it only loopback callers get them
    metrics_token_file: Path | None = None
    audit_log: Path | None = None
    audit_max_bytes: int = Field(default=100 * 1024 * 1024, ge=4096)
    audit_hmac_key_file: Path | None = None
    state_dir: Path | None = None
    workers: int = Field(default=4, ge=1, le=64)
    shutdown_timeout: Duration = 30.0

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value == "":
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9464), or \"\" to disable")
        return value


# ---------------------------------------------------------------------------- stores


class FileStoreConfig(_Model):
    type: Literal["file"]
    path: Path


class VaultAuthConfig(_Model):
    method: Literal["token", "approle", "kubernetes"] = "token"
    # token
    token_file: Path | None = None
    token_env: str = "VAULT_TOKEN"  # noqa: S105 - the variable's name, not a secret
    # approle
    role_id_file: Path | None = None
    secret_id_file: Path | None = None
    # kubernetes
    role: str | None = None
    jwt_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    # auth mount; default: the method's name
    mount: str | None = None
    # token lifecycle: the increment asked for at each renew-self (default: the token's own
    # TTL), and whether a token rotator logged in for (approle, kubernetes) is revoked on exit
    renew_increment: Duration | None = None
    revoke_on_close: bool = True
    # approle: Vault locks a role_id after `lockout_threshold` failed logins within
    # `lockout_window` (its user lockout defaults: 5 in 15 min); rotator's own retries stay
    # below that, shared by every store of the process that logs in with the same role
    lockout_threshold: int = Field(default=5, ge=2, le=1000)
    lockout_window: Duration = Field(default=900.0, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> VaultAuthConfig:
        if self.method == "approle" and not (self.role_id_file and self.secret_id_file):
            raise ValueError("approle auth needs role_id_file and secret_id_file")
        if self.method == "kubernetes" and not self.role:
            raise ValueError("kubernetes auth needs role (the Vault role bound to this service account)")
        return self


class VaultStoreConfig(_Model):
    type: Literal["vault"]
    url: Url
    mount: str = "secret"
    namespace: str | None = None
    ca_cert: Path | None = None
    # the most one Vault request may take, start to end (connect, headers, body, redirects)
    timeout: Duration = Field(default=10.0, gt=0)
    # hosts (host or host:port, e.g. the cluster's other nodes) a redirect may lead to besides
    # url's own; the Vault token is never sent anywhere else
    redirect_hosts: tuple[str, ...] = ()
    auth: VaultAuthConfig = VaultAuthConfig()
    # the Transit mount for credentials with signer = "vault-transit" on this store
    transit_mount: str = "transit"

    @field_validator("transit_mount")
    @classmethod
    def _transit_mount(cls, value: str) -> str:
        part = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
        if not re.fullmatch(rf"{part}(/{part}){{0,7}}", value):
            raise ValueError("a mount path: letters, digits, '_', '.', '-' and '/' between parts")
        return value


class AwsStoreConfig(_Model):
    type: Literal["aws"]
    region: str | None = None
    endpoint_url: Url | None = None
    profile: str | None = None
    create_missing: bool = True
    kms_key_id: str | None = None
    tags: dict[str, str] = {}
    timeout: Duration = Field(default=10.0, gt=0)


StoreConfig = FileStoreConfig | VaultStoreConfig | AwsStoreConfig
STORE_MODELS: dict[str, type[_Model]] = {
    "file": FileStoreConfig,
    "vault": VaultStoreConfig,
    "aws": AwsStoreConfig,
}

# ---------------------------------------------------------------------------- credentials

SALESFORCE_MAX_ASSERTION_LIFETIME = 180.0
# The Metadata API version rotator speaks by default (Spring '26); the External Client App
# certificate field exists from 60.0 on, and Salesforce retired versions below 31.0.
DEFAULT_METADATA_API_VERSION = "66.0"
MIN_METADATA_API_VERSION = 31.0
ECA_CERTIFICATE_API_VERSION = 60.0
# A component's full name: an API name, optionally with a namespace prefix (ns__Name).
APP_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")


class PublishConfig(_Model):
    """`publish = { type, app, via, api_version }`: put the pending certificate into the app
    through the Metadata API (docs/key-rotation.md)."""

    type: Literal["connected-app", "external-client-app"]
    app: str
    via: str | None = None  # another credential whose token may change the app; default: this one
    api_version: str = DEFAULT_METADATA_API_VERSION

    @field_validator("app")
    @classmethod
    def _app(cls, value: str) -> str:
        if not APP_NAME_PATTERN.match(value):
            raise ValueError(f"{value[:80]!r} is not an app API name (letters, digits, '_'; "
                             "the component's full name, e.g. Acme_Integration)")
        return value

    @field_validator("via")
    @classmethod
    def _via(cls, value: str | None) -> str | None:
        if value is not None and not NAME_PATTERN.match(value):
            raise ValueError("expected the name of a credential")
        return value

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not re.fullmatch(r"\d{2,3}\.0", value) or float(value) < MIN_METADATA_API_VERSION:
            raise ValueError(f"{value[:20]!r} is not a Metadata API version such as "
                             f"\"{DEFAULT_METADATA_API_VERSION}\" (31.0 or later)")
        return value

    @model_validator(mode="after")
    def _eca_version(self) -> PublishConfig:
        if self.type == "external-client-app" and float(self.api_version) < ECA_CERTIFICATE_API_VERSION:
            raise ValueError("api_version: an External Client App's certificate needs 60.0 or later")
        return self

    @property
    def metadata_type(self) -> str:
        return "ConnectedApp" if self.type == "connected-app" else "ExtlClntAppGlobalOauthSettings"


class CredentialConfig(_Model):
    provider: Literal["salesforce", "jwt-bearer"]
    client_id: str = Field(min_length=1, max_length=1024)
    username: str | None = Field(default=None, min_length=1, max_length=1024)
    login_url: Url | None = None
    token_url: Url | None = None
    audience: str | None = None
    scope: str | None = None
    extra_claims: dict[str, Any] = {}
    algorithm: Literal["RS256", "PS256", "ES256"] = "RS256"
    key: RefField
    token: RefField
    every: Duration = 1800.0
    jitter: Duration = 60.0
    assertion_lifetime: Duration = 180.0
    timeout: Duration = Field(default=20.0, gt=0)
    # hosts the endpoint may name in instance_url / id besides Salesforce's own domains
    # (a custom domain, a proxy, loopback for an emulator); "*.example.com" covers subdomains
    instance_hosts: tuple[str, ...] = ()
    # who signs: the key record's PEM, or a key that never leaves Vault Transit / AWS KMS
    # (docs/keyless.md); signer_key = "STORE:NAME" names the Transit key or KMS key
    signer: Literal["pem", "vault-transit", "aws-kms"] = "pem"
    signer_key: str | None = Field(default=None, min_length=3, max_length=2048)
    # key and certificate lifecycle
    renew_before: Duration | None = None
    max_key_age: Duration | None = None
    expiry_warnings: tuple[int, ...] = (30, 14, 7, 3, 1)
    publish_certificate: RefField | None = None
    publish_file: Path | None = None
    upload_hook: tuple[str, ...] | None = None
    publish: PublishConfig | None = None
    # failure policy
    retry_min: Duration = 10.0
    retry_max: Duration = 900.0
    max_requests_per_hour: int = Field(default=60, ge=1, le=1800)
    # the session timeout of the app / profile / org (Salesforce gives no expires_in): fills a
    # token's expires_at as an estimate counted from issue (docs/salesforce.md)
    session_timeout: Duration | None = None
    # probe a new token before it is written (rotator.providers.verify); off by default
    verify: Literal["userinfo", "query"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_jitter(cls, data: Any) -> Any:
        # Default jitter: a tenth of the interval, at most a minute (so every = "1m" works).
        if isinstance(data, dict) and "jitter" not in data:
            try:
                every = _duration(data.get("every", 1800.0))
            except (ValueError, TypeError):
                return data  # the field validator reports it
            data = {**data, "jitter": min(60.0, every / 10)}
        return data

    @field_validator("verify", mode="before")
    @classmethod
    def _verify(cls, value: Any) -> Any:
        # `verify = false` reads like requests' TLS switch: say what this key is instead
        if isinstance(value, bool):
            raise ValueError('is the probe of a new token ("userinfo" or "query"), not TLS '
                             "verification, which cannot be turned off")
        return value

    @field_validator("every")
    @classmethod
    def _every(cls, value: float) -> float:
        if value < 1:
            raise ValueError("must be at least 1s")
        return value

    @field_validator("assertion_lifetime")
    @classmethod
    def _lifetime(cls, value: float) -> float:
        if not 10 <= value <= 3600:
            raise ValueError("must be between 10s and 1h")
        return value

    @field_validator("instance_hosts")
    @classmethod
    def _instance_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        hosts = []
        for entry in value:
            host = entry.lower()
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            if not (HOST_PATTERN.match(host) or _is_ip(host)):
                raise ValueError(
                    f"{entry[:100]!r} is not a host name (e.g. \"api.example.com\", \"*.example.com\", "
                    "\"127.0.0.1\")"
                )
            hosts.append(host)
        return tuple(hosts)

    @field_validator("extra_claims")
    @classmethod
    def _claims(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = {"iss", "sub", "aud", "exp", "iat"} & set(value)
        if reserved:
            raise ValueError(f"cannot override {', '.join(sorted(reserved))}; use the named settings")
        return value

    @model_validator(mode="after")
    def _provider_rules(self) -> CredentialConfig:
        if self.provider == "salesforce":
            if not self.username:
                raise ValueError("salesforce needs username (the JWT sub)")
            if self.algorithm != "RS256":
                raise ValueError("salesforce accepts only RS256 assertions; remove algorithm")
            if self.assertion_lifetime > SALESFORCE_MAX_ASSERTION_LIFETIME:
                raise ValueError("salesforce wants exp within 3 minutes; assertion_lifetime <= 3m")
            if self.audience is not None:
                check_url(self.audience)
        else:
            if not self.token_url:
                raise ValueError("jwt-bearer needs token_url")
            if self.publish is not None:
                raise ValueError("publish: the Metadata API is Salesforce's; remove publish")
            if self.verify is not None:
                raise ValueError("verify probes a Salesforce instance (userinfo / query); remove verify")
            if self.session_timeout is not None:
                raise ValueError("session_timeout is Salesforce's (generic servers send expires_in); "
                                 "remove session_timeout")
        if self.signer == "pem" and self.signer_key is not None:
            raise ValueError('signer_key is for signer = "vault-transit" or "aws-kms"; remove it '
                             'or set signer')
        if self.signer != "pem":
            if self.signer_key is None:
                raise ValueError(f'signer = "{self.signer}" needs signer_key = "STORE:NAME" '
                                 "(the Transit key name or KMS key on that store)")
            if self.algorithm != "RS256":
                raise ValueError(f'signer = "{self.signer}" signs RS256 only; remove algorithm')
        if self.retry_min > self.retry_max:
            raise ValueError("retry_min is larger than retry_max")
        if self.jitter >= self.every:
            raise ValueError("jitter must be smaller than every")
        if self.session_timeout is not None and self.every >= self.session_timeout:
            # the stored token would end before its successor is written
            raise ValueError(f"every ({format_duration(self.every)}) must be shorter than "
                             f"session_timeout ({format_duration(self.session_timeout)})")
        return self

    # -- derived settings, so callers never repeat the provider rules

    @property
    def signer_ref(self) -> Ref | None:
        """signer_key as (store, key name); validated by parse_config."""
        if self.signer_key is None:
            return None
        store, _, name = self.signer_key.partition(":")
        return Ref(store, name)

    @property
    def effective_login_url(self) -> str:
        return self.login_url or "https://login.salesforce.com"

    @property
    def effective_token_url(self) -> str:
        if self.token_url:
            return self.token_url
        return self.effective_login_url + "/services/oauth2/token"

    @property
    def effective_audience(self) -> str:
        if self.audience:
            return self.audience
        if self.provider == "salesforce":
            return self.effective_login_url
        return self.effective_token_url


# ---------------------------------------------------------------------------- root


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig
    stores: Mapping[str, StoreConfig]
    credentials: Mapping[str, CredentialConfig]
    source: Path | None = None
    warnings: tuple[str, ...] = field(default=())

    def credential(self, name: str) -> CredentialConfig:
        try:
            return self.credentials[name]
        except KeyError:
            known = ", ".join(sorted(self.credentials)) or "none"
            raise ConfigError(
                f"no credential named {name!r}", hint=f"defined: {known}"
            ) from None


def resolve_config_path(cli_value: str | None) -> Path:
    if cli_value:
        return Path(cli_value)
    env = os.environ.get("ROTATOR_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load_config(path: Path) -> Config:
    try:
        raw_bytes = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found",
            hint="pass --config PATH or set ROTATOR_CONFIG",
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    config = parse_config(raw, base_dir=path.parent.resolve(), source=path)
    warning = _writable_by_others(path)
    if warning is not None:
        config = replace(config, warnings=(*config.warnings, warning))
    return config


def _writable_by_others(path: Path) -> str | None:
    """A config another user can edit can point rotator's tokens anywhere: say so."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & 0o022:
        return f"{path}: the config file is writable by group/others (chmod go-w {path})"
    return None


def parse_config(raw: Mapping[str, Any], *, base_dir: Path, source: Path | None = None) -> Config:
    unknown = set(raw) - {"daemon", "stores", "credentials"}
    if unknown:
        first = sorted(unknown)[0]
        raise ConfigError(f"{first}: unknown section", hint="allowed: daemon, stores, credentials")
    daemon = _validate(DaemonConfig, _table(raw, "daemon"), "daemon")
    daemon = _resolve_paths(
        daemon, base_dir, ("audit_log", "audit_hmac_key_file", "state_dir", "metrics_token_file"), "daemon"
    )

    stores: dict[str, StoreConfig] = {}
    for name, body in _table(raw, "stores").items():
        where = f"stores.{name}"
        _check_name(name, where)
        body = _as_table(body, where)
        kind = body.get("type")
        model = STORE_MODELS.get(kind) if isinstance(kind, str) else None
        if model is None:
            raise ConfigError(f"{where}.type: expected one of file, vault, aws (got {kind!r})")
        store = _validate(model, body, where)
        if isinstance(store, FileStoreConfig):
            store = _resolve_paths(store, base_dir, ("path",), where)
        elif isinstance(store, VaultStoreConfig):
            store = _resolve_paths(store, base_dir, ("ca_cert",), where)
            auth = _resolve_paths(
                store.auth, base_dir, ("token_file", "role_id_file", "secret_id_file", "jwt_file"),
                f"{where}.auth",
            )
            store = store.model_copy(update={"auth": auth})
        stores[name] = store  # type: ignore[assignment]

    credentials: dict[str, CredentialConfig] = {}
    warnings: list[str] = []
    for name, body in _table(raw, "credentials").items():
        where = f"credentials.{name}"
        _check_name(name, where)
        cred = _validate(CredentialConfig, _as_table(body, where), where)
        cred = _resolve_paths(cred, base_dir, ("publish_file",), where)
        for attr in ("key", "token", "publish_certificate"):
            ref = getattr(cred, attr)
            if ref is not None and ref.store not in stores:
                known = ", ".join(sorted(stores)) or "none defined"
                raise ConfigError(
                    f"{where}.{attr}: unknown store {ref.store!r}",
                    hint=f"stores: {known}",
                )
        _check_signer(name, cred, stores)
        if cred.key == cred.token:
            raise ConfigError(f"{where}.token: must differ from key (both are {cred.key})")
        warnings.extend(_rate_warnings(name, cred, stores))
        warnings.extend(_session_warnings(name, cred))
        credentials[name] = cred
    _check_unique_refs(credentials, stores)
    _check_publish_via(credentials)
    return Config(daemon, stores, credentials, source, tuple(warnings))


# Transit key names, and KMS key ids / alias/NAME / key or alias ARNs (rotator.keys.remote checks
# them again before every request).
_TRANSIT_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_KMS_KEY = re.compile(
    r"(arn:aws[a-z-]*:kms:[a-z0-9-]{1,30}:[0-9]{12}:(key/[A-Za-z0-9-]{1,64}|alias/[A-Za-z0-9/_-]{1,250})"
    r"|alias/[A-Za-z0-9/_-]{1,250}|(mrk-)?[A-Za-z0-9-]{1,64})"
)


def _check_signer(name: str, cred: CredentialConfig, stores: Mapping[str, StoreConfig]) -> None:
    """signer_key names a store of the right kind and a key name that store's service accepts."""
    ref = cred.signer_ref
    if ref is None:
        return
    where = f"credentials.{name}.signer_key"
    if ":" not in (cred.signer_key or "") or not ref.store or not ref.path:
        raise ConfigError(f'{where}: expected "STORE:NAME", e.g. "vault:sf-prod" or "aws:alias/sf-prod"')
    store = stores.get(ref.store)
    if store is None:
        known = ", ".join(sorted(stores)) or "none defined"
        raise ConfigError(f"{where}: unknown store {ref.store!r}", hint=f"stores: {known}")
    if cred.signer == "vault-transit":
        if not isinstance(store, VaultStoreConfig):
            raise ConfigError(f'{where}: signer = "vault-transit" needs a vault store, '
                              f"{ref.store!r} is {store.type!r}")
        if not _TRANSIT_KEY.fullmatch(ref.path):
            raise ConfigError(f"{where}: {ref.path[:60]!r} is not a Transit key name "
                              "(letters, digits, '_', '.', '-'; max 128)")
    else:
        if not isinstance(store, AwsStoreConfig):
            raise ConfigError(f'{where}: signer = "aws-kms" needs an aws store, '
                              f"{ref.store!r} is {store.type!r}")
        if not _KMS_KEY.fullmatch(ref.path):
            raise ConfigError(f"{where}: {ref.path[:60]!r} is not a KMS key id, alias/NAME or key ARN")


_REF_FIELDS = ("key", "token", "publish_certificate")


def _check_unique_refs(
    credentials: Mapping[str, CredentialConfig], stores: Mapping[str, StoreConfig]
) -> None:
    """Every record rotator writes has one owner: a token ref equal to another credential's key
    ref would overwrite that key with a token (issue 15). The same for publish targets, and
    for a publish_file that is a file store's record."""
    seen: dict[object, str] = {}
    for name, cred in credentials.items():
        owned: list[tuple[object, str]] = [
            (("ref", str(ref)), attr) for attr in _REF_FIELDS
            if (ref := getattr(cred, attr)) is not None
        ]
        if cred.publish_file is not None:
            owned.append((("file", os.path.normpath(cred.publish_file)), "publish_file"))
        for attr in _REF_FIELDS:  # a file store's record, as the file it is
            ref = getattr(cred, attr)
            store = stores.get(ref.store) if ref is not None else None
            if ref is not None and isinstance(store, FileStoreConfig):
                owned.append((("file", os.path.normpath(store.path / f"{ref.path}.json")), attr))
        for key, attr in owned:
            where = f"credentials.{name}.{attr}"
            other = seen.get(key)
            if other is not None and other != where:
                raise ConfigError(f"{where}: same record as {other} ({key[1]}); every key, token "
                                  "and publish target needs a ref (or file) of its own")
            seen[key] = where


def _check_publish_via(credentials: Mapping[str, CredentialConfig]) -> None:
    """`publish.via` names a defined Salesforce credential, and no two credentials publish
    through each other (each would then need the other's Metadata API permissions)."""
    for name, cred in credentials.items():
        via = cred.publish.via if cred.publish else None
        if via is None or via == name:
            continue
        where = f"credentials.{name}.publish.via"
        other = credentials.get(via)
        if other is None:
            known = ", ".join(sorted(credentials)) or "none"
            raise ConfigError(f"{where}: no credential named {via!r}", hint=f"defined: {known}")
        if other.provider != "salesforce":
            raise ConfigError(f"{where}: {via!r} is not a salesforce credential")
        seen = [name, via]
        while other.publish is not None and other.publish.via not in (None, seen[-1]):
            nxt = other.publish.via
            if nxt in seen:
                raise ConfigError(f"{where}: publishes in a cycle ({' -> '.join([*seen, nxt])})",
                                  hint="let one credential (the publishing one) publish through itself")
            seen.append(nxt)
            other = credentials.get(nxt)
            if other is None:
                break


def _rate_warnings(
    name: str, cred: CredentialConfig, stores: Mapping[str, StoreConfig]
) -> list[str]:
    # Secrets Manager: PutSecretValue at most once per 10 minutes sustained; AWS keeps the
    # 100 newest versions plus all from the last 24 h, so a faster cadence hits the quota.
    store = stores.get(cred.token.store)
    if isinstance(store, AwsStoreConfig) and cred.every < 600:
        per_day = int(86400 // cred.every)
        return [
            f"credentials.{name}.every: {int(cred.every)}s is faster than Secrets Manager's "
            f"sustained PutSecretValue rate (once per 10 minutes); {per_day} versions a day "
            "will run into the version quota — use every >= 10m"
        ]
    return []


def _session_warnings(name: str, cred: CredentialConfig) -> list[str]:
    # every < session_timeout is enforced; above half of it, one failed run (or a late one)
    # lets the stored token's session end before a successor is written
    timeout = cred.session_timeout
    if timeout is not None and cred.every > timeout / 2:
        return [
            f"credentials.{name}.every: {format_duration(cred.every)} is more than half of "
            f"session_timeout ({format_duration(timeout)}); a single failed or late run lets the "
            f"stored token expire — use every <= {format_duration(timeout / 2)}"
        ]
    return []


def _table(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    return _as_table(raw.get(key, {}), key)


def _as_table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table ([{where}])")
    return value


def _check_name(name: str, where: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{where}: names use letters, digits, '_', '.', '-' (max 128)")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _resolve_paths(model: Any, base: Path, attrs: tuple[str, ...], where: str) -> Any:
    update = {}
    for attr in attrs:
        value = getattr(model, attr)
        if isinstance(value, Path) and _CONTROL.search(str(value)):
            raise ConfigError(f"{where}.{attr}: the path has a control character (a trailing newline?)")
        if isinstance(value, Path) and not value.is_absolute():
            update[attr] = base / value
    return model.model_copy(update=update) if update else model


def _validate(model: type[Any], body: Mapping[str, Any], where: str) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None


def format_validation_error(exc: ValidationError, prefix: str) -> str:
    """First error only, as `prefix.key.path: message` — one line, no input values echoed."""
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(part) for part in (prefix, *err["loc"]) if part != "")
    kind = err["type"]
    msg = err["msg"]
    if kind == "missing":
        msg = "required key is missing"
    elif kind == "extra_forbidden":
        msg = "unknown key (check the spelling against the documented settings)"
    elif kind in ("value_error", "assertion_error"):
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return " ".join(f"{loc}: {msg}".split())
