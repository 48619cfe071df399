"""The SalesforceEndpoint class: the org, its apps and users, sessions, faults and routing."""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import json
import re
import secrets
import ssl
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from rotator.testing._http import EmulatorHandler, EmulatorServer
from rotator.testing.salesforce import _metadata as md
from rotator.testing.salesforce._access_jwt import AccessTokenSigner
from rotator.testing.salesforce._org import OrgData, salesforce_id
from rotator.testing.salesforce._rest import VERSIONS, RestApi, versions_list
from rotator.testing.salesforce._tls import throwaway_tls
from rotator.testing.salesforce._wire import (
    HTML_TYPE,
    JSON_TYPE,
    XML_TYPE,
    Reply,
    invalid_session,
    json_reply,
    method_not_allowed,
    not_found,
)

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")
EXP_GRACE_SECONDS = 180
RATE_WINDOW_SECONDS = 3600.0
API_VERSION = "62.0"
FAULT_KINDS = frozenset(
    {"5xx", "429", "html", "html200", "slow", "reset", "badjson", "missing_fields", "huge"}
)
FAULT_TARGETS = ("token", "metadata", "rest")
# the kinds that make sense on the REST API and the Metadata API (the rest are token replies)
SERVICE_FAULT_KINDS = frozenset({"5xx", "html", "slow", "reset"})
HUGE_BODY_BYTES = 5 * 1024 * 1024
MAX_REQUEST_BODY = 1024 * 1024
MAX_USERS = 10_000
MAX_QUERY_FIELDS = 50  # URL query parameters per request
MAX_LOG = 100_000  # token_log and metadata_log keep the newest entries only

# (error, error_description), exactly as Salesforce sends them
UNSUPPORTED_GRANT = ("unsupported_grant_type", "grant type not supported")
INVALID_ASSERTION = ("invalid_grant", "invalid assertion")
INVALID_CLIENT = ("invalid_client_id", "client identifier invalid")
INVALID_AUDIENCE = ("invalid_grant", "audience is invalid")
EXPIRED = ("invalid_grant", "expired authorization code")
NOT_ADMIN_APPROVED = ("invalid_app_access", "user is not admin approved to access this app")
NOT_APPROVED = ("invalid_grant", "user hasn't approved this consumer")
RATE_EXCEEDED = ("invalid_grant", "LOGIN_RATE_EXCEEDED")

MAINTENANCE_PAGE = b"""<!DOCTYPE html>
<html><head><title>Salesforce - Scheduled Maintenance</title></head>
<body><h1>Down for Maintenance</h1>
<p>Salesforce is currently undergoing scheduled maintenance. We apologize for the
inconvenience; please try again shortly.</p></body></html>
"""
LOGIN_PAGE = b"""<!DOCTYPE html>
<html><head><title>Login | Salesforce</title></head>
<body><form method="post" action="/"><input type="text" name="username"></form></body></html>
"""

_DATA_PATH = re.compile(r"^/services/data/v(\d{1,3}\.\d)(/.*)?$")
_SOAP_PATH = re.compile(r"^/services/Soap/m/(\d{1,3}\.\d)(?:/(?:00D[A-Za-z0-9]{12,15})?)?$")
_ID_PATH = re.compile(r"^/id/(00D[A-Za-z0-9]{12,15})/(005[A-Za-z0-9]{12,15})/?$")
_AUTHORIZATION = re.compile(r"^\s*(?:bearer|oauth)\s+(\S+)\s*$", re.IGNORECASE)
_APP_KINDS = {"connected-app": md.CONNECTED_APP, "external-client-app": md.ECA_OAUTH}


@dataclass(frozen=True)
class TokenAttempt:
    """One POST to /services/oauth2/token, as the endpoint saw it.

    `client_id` and `subject` are the assertion's unverified `iss` and `sub` (None when the
    assertion is missing or unreadable). `outcome` is "ok", the OAuth error code, or
    "fault:<kind>" when an injected fault answered instead; `description` is the
    error_description (None on success and on faults).
    """

    at: float
    client_id: str | None
    subject: str | None
    outcome: str
    description: str | None = None


@dataclass(frozen=True)
class MetadataCall:
    """One POST to /services/Soap/m/XX.X, as the endpoint saw it.

    `operation` is readMetadata or updateMetadata (None if the envelope was unusable);
    `username` is the session's user (None if the session was not valid); `outcome` is "ok",
    the fault code (e.g. "sf:INSUFFICIENT_ACCESS"), "fault:<kind>" for an injected fault,
    or, for an update with per-record errors, "partial:<statusCode>,...".
    """

    at: float
    version: str
    operation: str | None
    type_name: str | None
    full_names: tuple[str, ...]
    username: str | None
    outcome: str


@dataclass
class _App:
    client_id: str
    public_key: Any | None
    admin_approved: bool
    users: dict[str, bool] = field(default_factory=dict)
    name: str = ""
    metadata_type: str = md.CONNECTED_APP
    component: md.Tree = field(default_factory=list)
    jwt_access_tokens: bool = False
    session_timeout: float | None = None


@dataclass
class _User:
    username: str
    user_id: str
    permissions: set[str] = field(default_factory=set)


@dataclass
class _Session:
    token: str
    client_id: str
    username: str
    user_id: str
    last_used: float
    revoked: bool = False
    expires_at: float | None = None  # JWT access tokens: their `exp`, never extended


@dataclass
class _Fault:
    kind: str
    remaining: int | None
    status: int
    retry_after: int
    delay: float


class SalesforceEndpoint:
    """One emulated Salesforce org on loopback: OAuth, a sliver of REST, the Metadata CRUD calls.

    One org (`org_id`), one login rate limit, any number of connected apps or External Client
    Apps (`register_app`), each with one certificate and its pre-authorized users; a user
    registry with permissions (`grant_permissions`). Thread safe.

    Switches for the platform's token behaviours:

    ``reuse_sessions=True``
        a new JWT login for the same user and app returns the access token of the session
        that is still active (Salesforce may do so), instead of a new one.
    ``session_timeout`` (seconds, default 7200)
        a session ends this long after its last use (every API call, and a reused login,
        counts as use); its token then answers 401 INVALID_SESSION_ID. An app may set its own
        (``register_app(session_timeout=)``), as a connected app's session policy does.
    ``register_app(..., jwt_access_tokens=True)``
        the app issues JWT-based access tokens (RS256, signed by the emulator, with `exp` =
        issue time + session timeout; the key set is at ``/id/keys``). They end at `exp`
        whatever their use, or earlier when revoked.

    ``reuse_tokens`` and ``session_lifetime`` are the older names of the first two.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        login_rate_limit: int = 3600,
        session_timeout: float | None = None,
        session_lifetime: float | None = None,
        audiences: Iterable[str] | None = None,
        reuse_sessions: bool | None = None,
        reuse_tokens: bool = False,
        clock: Callable[[], float] = time.time,
        tls: bool = False,
        allow_consumer_secrets_via_metadata: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.login_rate_limit = login_rate_limit
        timeout = session_timeout if session_timeout is not None else session_lifetime
        self.session_timeout = float(timeout) if timeout is not None else 7200.0
        self.reuse_sessions = reuse_tokens if reuse_sessions is None else reuse_sessions
        self.clock = clock
        self.tls = tls
        self.allow_consumer_secrets_via_metadata = allow_consumer_secrets_via_metadata
        self._audiences = None if audiences is None else frozenset(audiences)
        self.org_id = salesforce_id("00D")
        self.ca_bundle: str | None = None
        self._secret = secrets.token_bytes(32)
        self._lock = threading.RLock()
        self._apps: dict[str, _App] = {}
        self._users: dict[str, _User] = {}
        self._sessions: dict[str, _Session] = {}
        self._live_by_user: dict[tuple[str, str], str] = {}
        self._logins: deque[float] = deque()
        self._faults: dict[str, _Fault] = {}
        self._token_requests = 0
        self._log: deque[TokenAttempt] = deque(maxlen=MAX_LOG)
        self._metadata_log: deque[MetadataCall] = deque(maxlen=MAX_LOG)
        self._issued: list[str] = []
        self._signer = AccessTokenSigner()
        self._org = OrgData()
        self._rest = RestApi(self._org, lambda user_id: self._id_url(user_id))
        self._org.put("Organization", {
            "Id": self.org_id,
            "Name": "rotator emulated org",
            "InstanceName": "EMU1",
            "IsSandbox": False,
            "OrganizationType": "Developer Edition",
            "NamespacePrefix": None,
            "TrialExpirationDate": None,
            "LanguageLocaleKey": "en_US",
            "TimeZoneSidKey": "GMT",
            "CreatedDate": _sf_datetime(self.clock()),
        })
        self._url: str | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None

    # the older names of two switches, kept for existing tests
    @property
    def reuse_tokens(self) -> bool:
        return self.reuse_sessions

    @reuse_tokens.setter
    def reuse_tokens(self, value: bool) -> None:
        self.reuse_sessions = value

    @property
    def session_lifetime(self) -> float:
        return self.session_timeout

    @session_lifetime.setter
    def session_lifetime(self, value: float) -> None:
        self.session_timeout = value

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321 (no trailing slash); valid after start()."""
        if self._url is None:
            raise RuntimeError("SalesforceEndpoint is not started; call start() first")
        return self._url

    @property
    def token_url(self) -> str:
        return f"{self.url}/services/oauth2/token"

    def start(self) -> SalesforceEndpoint:
        if self._server is not None:
            return self
        self._stopping.clear()
        context = self._tls_context() if self.tls else None
        server = _Server((self.host, self.port), self, context)
        self._url = server.base_url("https" if context else "http")
        self._server = server
        self._thread = server.serve_in_thread(f"salesforce-endpoint-{server.server_address[1]}")
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection (idempotent)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.stop_serving()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None
            self.ca_bundle = None

    def __enter__(self) -> SalesforceEndpoint:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ org setup

    def register_app(
        self,
        client_id: str,
        certificate_pem: str | bytes | None,
        *,
        users: Iterable[str] = (),
        admin_approved: bool = True,
        name: str | None = None,
        kind: str = "connected-app",
        jwt_access_tokens: bool = False,
        session_timeout: float | None = None,
    ) -> None:
        """Create (or replace) an app whose consumer key is `client_id`.

        `certificate_pem` is the X.509 certificate uploaded to the app (a bare public key PEM
        is accepted too); None means none uploaded, so every assertion is an invalid
        assertion. `users` are pre-authorized. admin_approved=False models a policy other
        than "Admin approved users are pre-authorized": every login gets invalid_app_access.

        `name` is the app's API name in the Metadata API (default: ``App_`` + a digest of the
        client id); `kind` is "connected-app" (component type ConnectedApp) or
        "external-client-app" (ExtlClntAppGlobalOauthSettings, whose fullName and
        externalClientApplication are both `name`). `jwt_access_tokens` and
        `session_timeout`: see the class docstring.
        """
        if kind not in _APP_KINDS:
            raise ValueError(f"kind must be one of {sorted(_APP_KINDS)}, not {kind!r}")
        key = _public_key(certificate_pem) if certificate_pem is not None else None
        full_name = name or "App_" + hashlib.sha256(client_id.encode()).hexdigest()[:10]
        type_name = _APP_KINDS[kind]
        component = md.default_component(type_name, full_name, client_id, admin_approved)
        if certificate_pem is not None:
            md.put(component, md.certificate_path(type_name), _text(certificate_pem), after="callbackUrl")
        with self._lock:
            for other in self._apps.values():
                same_name = (other.metadata_type, other.name) == (type_name, full_name)
                if other.client_id != client_id and same_name:
                    raise ValueError(f"another app is already called {full_name!r}")
            app = _App(client_id, key, admin_approved, name=full_name, metadata_type=type_name,
                       component=component, jwt_access_tokens=jwt_access_tokens,
                       session_timeout=session_timeout)
            for username in users:
                app.users[username] = True
                self._user(username)
            self._apps[client_id] = app

    def upload_certificate(self, client_id: str, certificate_pem: str | bytes) -> None:
        """Replace the app's one certificate: the old key stops verifying at once."""
        key = _public_key(certificate_pem)
        with self._lock:
            app = self._app(client_id)
            app.public_key = key
            md.put(app.component, md.certificate_path(app.metadata_type), _text(certificate_pem),
                   after="callbackUrl")

    def certificate(self, client_id: str) -> str | None:
        """The PEM certificate the app holds now (as uploaded or published), or None."""
        with self._lock:
            app = self._app(client_id)
            value = md.get(app.component, *md.certificate_path(app.metadata_type))
            return value.strip() if isinstance(value, str) and value.strip() else None

    def add_user(self, client_id: str, username: str, *, approved: bool = True) -> None:
        """Make `username` a user of the org; approved=True pre-authorizes it for the app."""
        with self._lock:
            self._app(client_id).users[username] = approved
            self._user(username)

    def user_id(self, username: str) -> str:
        """The 18-character User id (005...) the org gives `username`."""
        with self._lock:
            return self._user(username).user_id

    def grant_permissions(self, username: str, *permissions: str) -> None:
        """Give `username` (made a user of the org if new) user permissions.

        The Metadata API needs ``ModifyAllData`` or ``ModifyMetadata``; reading or changing an
        app also needs ``CustomizeApplication`` (or ``ManageConnectedApps``; ``ModifyAllData``
        implies both). Users start with none of them.
        """
        unknown = set(permissions) - md.PERMISSIONS
        if unknown:
            raise ValueError(f"unknown permissions {sorted(unknown)}; known: {sorted(md.PERMISSIONS)}")
        with self._lock:
            self._user(username).permissions.update(permissions)

    def revoke_permissions(self, username: str, *permissions: str) -> None:
        with self._lock:
            self._user(username).permissions.difference_update(permissions)

    def set_org(self, **fields: Any) -> None:
        """Change the Organization record (e.g. ``IsSandbox=True, OrganizationType="Enterprise Edition"``)."""
        with self._lock:
            self._org.put("Organization", {**fields, "Id": self.org_id})

    def add_record(self, sobject: str, **fields: Any) -> str:
        """Add a record (Account, or another User) to the org and return its new Id."""
        from rotator.testing.salesforce._org import SOBJECTS

        spec = SOBJECTS.get(sobject)
        if spec is None or sobject == "Organization":
            raise ValueError(f"records can be added to {sorted(set(SOBJECTS) - {'Organization'})}")
        with self._lock:
            record_id = salesforce_id(spec.key_prefix)
            defaults: dict[str, Any] = {"CreatedDate": _sf_datetime(self.clock())}
            if sobject == "Account":
                defaults["OwnerId"] = next(iter(self._users.values())).user_id if self._users else None
            self._org.put(sobject, {**defaults, **fields, "Id": record_id})
            return record_id

    # ------------------------------------------------------------------ faults

    def set_fault(
        self,
        kind: str,
        *,
        count: int | None = None,
        status: int = 503,
        retry_after: int = 1,
        delay: float = 5.0,
        target: str = "token",
    ) -> None:
        """Answer the next `count` requests to `target` (None: all until cleared) with a fault.

        `target` is "token" (POST /services/oauth2/token), "metadata" (the Metadata API) or
        "rest" (everything under /services/data/vXX.X). Kinds: "5xx" (HTTP `status`; a JSON
        body, or a SOAP fault on the Metadata API), "html" (503 maintenance page), "slow"
        (answer normally after `delay` seconds), "reset" (TCP RST, no reply) on every target;
        token requests also: "429" (Retry-After: `retry_after`), "html200" (200 HTML page),
        "badjson" (200 JSON type, body not JSON), "missing_fields" (200 JSON without
        access_token), "huge" (200, 5 MiB body). One fault per target at a time: a new
        set_fault replaces the previous one for that target.
        """
        if target not in FAULT_TARGETS:
            raise ValueError(f"unknown fault target {target!r}; one of {list(FAULT_TARGETS)}")
        allowed = FAULT_KINDS if target == "token" else SERVICE_FAULT_KINDS
        if kind not in allowed:
            raise ValueError(f"unknown fault kind {kind!r} for {target}; one of {sorted(allowed)}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None for until clear_faults())")
        if kind == "5xx" and not 500 <= status <= 599:
            raise ValueError("a 5xx fault needs a status between 500 and 599")
        with self._lock:
            self._faults[target] = _Fault(kind, count, status, retry_after, delay)

    def clear_faults(self, target: str | None = None) -> None:
        """Clear the fault of `target`, or of every target."""
        with self._lock:
            if target is None:
                self._faults.clear()
            else:
                self._faults.pop(target, None)

    # ------------------------------------------------------------------ sessions

    def revoke(self, access_token: str) -> None:
        """End the session of `access_token` (unknown tokens are ignored)."""
        with self._lock:
            session = self._sessions.get(access_token)
            if session is not None:
                session.revoked = True

    def is_valid(self, access_token: str) -> bool:
        """True if issued here, not revoked and not idle past session_lifetime.

        Asking does not count as use: it does not extend the session.
        """
        with self._lock:
            return self._live(access_token, self.clock()) is not None

    # ------------------------------------------------------------------ counters

    @property
    def token_requests(self) -> int:
        """POSTs to /services/oauth2/token received, faulted or not."""
        with self._lock:
            return self._token_requests

    @property
    def token_log(self) -> list[TokenAttempt]:
        """A copy of the per-request log, oldest first."""
        with self._lock:
            return list(self._log)

    @property
    def metadata_log(self) -> list[MetadataCall]:
        """A copy of the Metadata API call log, oldest first."""
        with self._lock:
            return list(self._metadata_log)

    @property
    def api_requests(self) -> int:
        """Authenticated requests under /services/data/vXX.X (what /limits counts as used)."""
        with self._lock:
            return self._rest.api_requests

    @property
    def issued(self) -> list[str]:
        """Access tokens returned by successful exchanges, in order (a copy).

        With reuse_sessions=True a reused token appears once per exchange that returned it.
        """
        with self._lock:
            return list(self._issued)

    def reset_counters(self) -> None:
        """Zero token_requests and empty token_log, metadata_log and issued (sessions stay valid)."""
        with self._lock:
            self._token_requests = 0
            self._log.clear()
            self._metadata_log.clear()
            self._issued.clear()

    def reset_rate_limit(self) -> None:
        """Forget the logins counted against login_rate_limit."""
        with self._lock:
            self._logins.clear()

    # ------------------------------------------------------------------ internals

    def _app(self, client_id: str) -> _App:
        try:
            return self._apps[client_id]
        except KeyError:
            raise KeyError(f"no connected app with client id {client_id!r}") from None

    def _user(self, username: str) -> _User:
        user = self._users.get(username)
        if user is None:
            if len(self._users) >= MAX_USERS:
                raise ValueError(f"the emulated org holds at most {MAX_USERS} users")
            user = self._users[username] = _User(username, salesforce_id("005"))
            local = username.split("@", 1)[0]
            self._org.put("User", {
                "Id": user.user_id, "Username": username, "Name": local, "LastName": local,
                "Email": username, "IsActive": True, "UserType": "Standard",
                "TimeZoneSidKey": "GMT", "LanguageLocaleKey": "en_US",
                "CreatedDate": _sf_datetime(self.clock()),
            })
        return user

    def _accepted_audiences(self) -> frozenset[str]:
        if self._audiences is not None:
            return self._audiences
        return frozenset((*DEFAULT_AUDIENCES, self.url))

    def _timeout(self, session: _Session) -> float:
        app = self._apps.get(session.client_id)
        if app is not None and app.session_timeout is not None:
            return app.session_timeout
        return self.session_timeout

    def _live(self, token: str, now: float) -> _Session | None:
        session = self._sessions.get(token)
        if session is None or session.revoked:
            return None
        if session.expires_at is not None:
            return session if now < session.expires_at else None
        if now - session.last_used >= self._timeout(session):
            return None
        return session

    def _use(self, token: str | None) -> _Session | None:
        """The live session of `token`, extended by this use; None if not valid."""
        if not token:
            return None
        with self._lock:
            now = self.clock()
            session = self._live(token, now)
            if session is not None:
                session.last_used = now
            return session

    def _id_url(self, user_id: str) -> str:
        return f"{self.url}/id/{self.org_id}/{user_id}"

    def _handle(self, method: str, path: str, query: str, headers: Any, body: bytes) -> Reply:
        try:
            parse_qs(query, max_num_fields=MAX_QUERY_FIELDS)
        except ValueError:
            return json_reply(400, [{"errorCode": "BAD_REQUEST",
                                     "message": f"more than {MAX_QUERY_FIELDS} query parameters"}])
        if path == "/services/oauth2/token":
            if method != "POST":
                return method_not_allowed(method, "POST")
            return self._token_endpoint(headers, body)
        if path == "/services/oauth2/userinfo":
            if method not in ("GET", "POST"):
                return method_not_allowed(method, "GET, POST")
            return self._userinfo(headers)
        if path == "/services/oauth2/revoke":
            if method == "POST":
                return self._revoke_endpoint(_form(headers, body).get("token"))
            if method == "GET":
                return self._revoke_endpoint(_first(parse_qs(query), "token"))
            return method_not_allowed(method, "GET, POST")
        if path in ("/services/data", "/services/data/"):
            # public on Salesforce too: clients ask for the versions before they log in
            if method not in ("GET", "HEAD"):
                return method_not_allowed(method, "GET, HEAD")
            return json_reply(200, versions_list())
        if path == "/id/keys":
            with self._lock:
                return json_reply(200, self._signer.jwks())
        match = _DATA_PATH.match(path)
        if match:
            return self._data(method, match.group(1), match.group(2) or "", query, headers)
        match = _ID_PATH.match(path)
        if match:
            return self._identity(method, match.group(1), match.group(2), query, headers)
        match = _SOAP_PATH.match(path)
        if match:
            return self._metadata(method, match.group(1), body)
        return not_found()

    # ------------------------------------------------------------------ REST API

    def _data(self, method: str, version: str, rest: str, query: str, headers: Any) -> Reply:
        session = self._use(_bearer(headers))
        if session is None:
            return invalid_session()
        if version not in VERSIONS:
            return not_found()
        fault = self._fault_for("rest")
        if fault is not None and fault.kind != "slow":
            return self._service_fault_reply(fault, soap=False)
        if fault is not None:
            self._stopping.wait(fault.delay)
        with self._lock:
            return self._rest.handle(method, version, rest, query, session.user_id)

    def _identity(self, method: str, org_id: str, user_id: str, query: str, headers: Any) -> Reply:
        """GET /id/{orgId}/{userId}: the identity service, with a bearer token (or oauth_token=)."""
        if method not in ("GET", "POST"):
            return method_not_allowed(method, "GET, POST")
        token = _bearer(headers) or _first(parse_qs(query), "oauth_token")
        session = self._use(token)
        if session is None:
            return invalid_session()
        if org_id[:15] != self.org_id[:15] or user_id[:15] != session.user_id[:15]:
            # the identity of another user (or org) is not this token's to read
            return json_reply(403, {"error": "Bad_Id", "error_description": "Bad_Id"})
        with self._lock:
            record = dict(self._org.get("User", session.user_id) or {})
        base = self.url
        local = session.username.split("@", 1)[0]
        return json_reply(200, {
            "id": self._id_url(session.user_id),
            "asserted_user": True,
            "user_id": session.user_id,
            "organization_id": self.org_id,
            "username": session.username,
            "nick_name": local,
            "display_name": record.get("Name") or local,
            "email": record.get("Email") or session.username,
            "email_verified": True,
            "first_name": record.get("FirstName"),
            "last_name": record.get("LastName") or local,
            "timezone": "GMT",
            "photos": {"picture": None, "thumbnail": None},
            "addr_street": None, "addr_city": None, "addr_state": None, "addr_country": None,
            "addr_zip": None, "mobile_phone": None, "mobile_phone_verified": False,
            "is_lightning_login_user": False,
            "status": {"created_date": None, "body": None},
            "urls": {
                "enterprise": f"{base}/services/Soap/c/{{version}}/{self.org_id}",
                "metadata": f"{base}/services/Soap/m/{{version}}/{self.org_id}",
                "partner": f"{base}/services/Soap/u/{{version}}/{self.org_id}",
                "rest": f"{base}/services/data/v{{version}}/",
                "sobjects": f"{base}/services/data/v{{version}}/sobjects/",
                "search": f"{base}/services/data/v{{version}}/search/",
                "query": f"{base}/services/data/v{{version}}/query/",
                "recent": f"{base}/services/data/v{{version}}/recent/",
                "tooling_soap": f"{base}/services/Soap/T/{{version}}/{self.org_id}",
                "tooling_rest": f"{base}/services/data/v{{version}}/tooling/",
                "profile": f"{base}/{session.user_id}",
                "custom_domain": base,
            },
            "active": True,
            "user_type": "STANDARD",
            "language": "en_US",
            "locale": "en_US",
            "utcOffset": 0,
            "last_modified_date": record.get("CreatedDate"),
            "is_app_installed": True,
        })

    # ------------------------------------------------------------------ Metadata API

    def _metadata(self, method: str, version: str, body: bytes) -> Reply:
        if method != "POST":
            return method_not_allowed(method, "POST")
        at = self.clock()
        fault = self._fault_for("metadata")
        if fault is not None and fault.kind != "slow":
            self._record_call(MetadataCall(at, version, None, None, (), None, f"fault:{fault.kind}"))
            return self._service_fault_reply(fault, soap=True)
        if fault is not None:
            self._stopping.wait(fault.delay)
        request: md.SoapRequest | None = None
        username: str | None = None
        try:
            if version not in VERSIONS:
                raise md.SoapFault("sf:UNSUPPORTED_API_VERSION",
                                   "UNSUPPORTED_API_VERSION: Invalid Api version specified on URL")
            request = md.parse_request(body)
            session = self._use(request.session_id)
            if session is None:
                raise md.SoapFault(
                    "sf:INVALID_SESSION_ID",
                    "INVALID_SESSION_ID: Invalid Session ID found in SessionHeader: Illegal Session",
                )
            username = session.username
            with self._lock:
                self._check_metadata_access(username)
                if request.operation == "readMetadata":
                    reply, outcome = self._read_metadata(float(version), username, request), "ok"
                else:
                    reply, outcome = self._update_metadata(float(version), username, request)
        except md.SoapFault as fault_:
            names = _call_names(request)
            self._record_call(MetadataCall(at, version, request.operation if request else None,
                                           names[0], names[1], username, fault_.code))
            return Reply(fault_.status, md.fault_body(fault_.code, fault_.message), XML_TYPE)
        names = _call_names(request)
        self._record_call(MetadataCall(at, version, request.operation, names[0], names[1], username, outcome))
        return reply

    def _record_call(self, call: MetadataCall) -> None:
        with self._lock:
            self._metadata_log.append(call)

    def _check_metadata_access(self, username: str) -> None:
        permissions = self._users[username].permissions
        if not permissions & {md.MODIFY_ALL_DATA, md.MODIFY_METADATA}:
            raise md.SoapFault(
                "sf:INSUFFICIENT_ACCESS",
                "INSUFFICIENT_ACCESS: use of the Metadata API requires a user with the "
                "ModifyAllData or ModifyMetadata permissions",
            )

    def _check_type(self, version: float, username: str, type_name: str | None) -> str:
        if type_name not in md.TYPES or (type_name == md.ECA_OAUTH and version < md.ECA_TYPE_SINCE):
            raise md.SoapFault("sf:INVALID_TYPE",
                               "INVALID_TYPE: This type of metadata is not available for this organization")
        permissions = self._users[username].permissions
        if not permissions & {md.MODIFY_ALL_DATA, md.CUSTOMIZE_APPLICATION, md.MANAGE_CONNECTED_APPS}:
            raise md.SoapFault(
                "sf:INSUFFICIENT_ACCESS",
                f"INSUFFICIENT_ACCESS: {type_name} requires the CustomizeApplication "
                "(or ManageConnectedApps) user permission",
            )
        if type_name == md.ECA_OAUTH and not self.allow_consumer_secrets_via_metadata:
            raise md.SoapFault(
                "sf:INSUFFICIENT_ACCESS",
                "INSUFFICIENT_ACCESS: enable 'Allow Access to OAuth Consumer Secrets via Metadata "
                "API' in Setup to read or change ExtlClntAppGlobalOauthSettings",
            )
        return type_name

    def _app_named(self, type_name: str, full_name: str) -> _App | None:
        return next(
            (a for a in self._apps.values() if a.metadata_type == type_name and a.name == full_name),
            None,
        )

    def _read_metadata(self, version: float, username: str, request: md.SoapRequest) -> Reply:
        type_name = self._check_type(version, username, request.type_name)
        if len(request.full_names) > md.MAX_NAMES:
            raise md.SoapFault("sf:LIMIT_EXCEEDED",
                               f"LIMIT_EXCEEDED: Too many full names: at most {md.MAX_NAMES} per call")
        records: list[md.Tree | None] = []
        for full_name in request.full_names:
            app = self._app_named(type_name, full_name)
            if app is None:
                records.append(None)
                continue
            component = copy.deepcopy(app.component)
            if type_name == md.ECA_OAUTH and version < md.ECA_CERTIFICATE_SINCE:
                md.put(component, md.certificate_path(type_name), None)
            records.append(component)
        return Reply(200, md.read_body(type_name, records), XML_TYPE)

    def _update_metadata(
        self, version: float, username: str, request: md.SoapRequest
    ) -> tuple[Reply, str]:
        if len(request.records) > md.MAX_NAMES:
            raise md.SoapFault("sf:LIMIT_EXCEEDED",
                               f"LIMIT_EXCEEDED: Too many components: at most {md.MAX_NAMES} per call")
        checked: list[tuple[str, md.Tree]] = []
        for xsi_type, component in request.records:  # the whole call is checked before any save
            type_name = self._check_type(version, username, xsi_type)
            if (type_name == md.ECA_OAUTH and version < md.ECA_CERTIFICATE_SINCE
                    and md.get(component, "certificate") is not None):
                raise md.SoapFault(
                    "soapenv:Client",
                    f"Element {{{md.MD}}}certificate invalid at this location in type {type_name}",
                )
            checked.append((type_name, component))
        results = [self._save(type_name, component) for type_name, component in checked]
        errors = sorted({code for r in results for code, _ in r.errors})
        outcome = "ok" if not errors else "partial:" + ",".join(errors)
        return Reply(200, md.update_body(results), XML_TYPE), outcome

    def _save(self, type_name: str, component: md.Tree) -> md.SaveResult:
        """Replace one component (the caller holds the lock): the app's key follows its certificate."""
        full_name = md.get(component, "fullName")
        if not isinstance(full_name, str) or not full_name:
            return md.SaveResult("", (("REQUIRED_FIELD_MISSING", "Required field is missing: fullName"),))
        app = self._app_named(type_name, full_name)
        if app is None:
            message = f"In field: fullName - no {type_name} named {full_name} found"
            return md.SaveResult(full_name, (("INVALID_CROSS_REFERENCE_KEY", message),))
        missing = md.required_fields(type_name, component)
        if missing:
            message = "Required fields are missing: [" + ", ".join(missing) + "]"
            return md.SaveResult(full_name, (("REQUIRED_FIELD_MISSING", message),))
        consumer_key = md.get(component, *md.consumer_key_path(type_name))
        if consumer_key not in (None, "", app.client_id):
            return md.SaveResult(full_name, (("FIELD_INTEGRITY_EXCEPTION",
                                              "consumerKey: the consumer key of an app cannot be changed"),))
        certificate = md.get(component, *md.certificate_path(type_name))
        key = None
        if isinstance(certificate, str) and certificate.strip():
            try:
                key = _public_key(certificate.strip())
            except ValueError:
                return md.SaveResult(full_name, (("FIELD_INTEGRITY_EXCEPTION",
                                                  "certificate: not a valid PEM-encoded X.509 certificate"),))
        md.put(component, md.consumer_key_path(type_name), app.client_id, after="certificate")
        approved = md.get(component, "oauthConfig", "isAdminApproved")
        if type_name == md.CONNECTED_APP and isinstance(approved, str):
            app.admin_approved = approved.strip().lower() == "true"
        app.public_key = key  # None when the component came without a certificate: none uploaded
        app.component = component
        return md.SaveResult(full_name)

    # ------------------------------------------------------------------ faults (internals)

    def _fault_for(self, target: str) -> _Fault | None:
        with self._lock:
            return self._take_fault(target)

    def _take_fault(self, target: str = "token") -> _Fault | None:
        fault = self._faults.get(target)
        if fault is None:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self._faults[target]
        return fault

    def _service_fault_reply(self, fault: _Fault, *, soap: bool) -> Reply:
        if fault.kind == "reset":
            return Reply(0, reset=True)
        if fault.kind == "html":
            return Reply(503, MAINTENANCE_PAGE, HTML_TYPE)
        if soap:  # 5xx
            body = md.fault_body("sf:UNKNOWN_EXCEPTION",
                                 "UNKNOWN_EXCEPTION: An unexpected error occurred. Please try again.")
            return Reply(fault.status, body, XML_TYPE)
        return json_reply(fault.status, [{"errorCode": "SERVER_UNAVAILABLE",
                                          "message": "Server temporarily unavailable; retry your request"}])

    # ------------------------------------------------------------------ OAuth

    def _token_endpoint(self, headers: Any, body: bytes) -> Reply:
        form = _form(headers, body)
        claims = _peek_claims(form.get("assertion"))
        client_id = _str_or_none(claims.get("iss"))
        subject = _str_or_none(claims.get("sub"))
        with self._lock:
            self._token_requests += 1
            received = self.clock()
            fault = self._take_fault("token")
            if fault is not None and fault.kind != "slow":
                self._log.append(TokenAttempt(received, client_id, subject, f"fault:{fault.kind}"))
                return self._fault_reply(fault)
        if fault is not None:  # slow: answer normally, late
            self._stopping.wait(fault.delay)
        with self._lock:
            status, payload = self._exchange(form)
            if status == 200:
                attempt = TokenAttempt(received, client_id, subject, "ok")
                self._issued.append(payload["access_token"])
            else:
                attempt = TokenAttempt(
                    received, client_id, subject, payload["error"], payload["error_description"]
                )
            self._log.append(attempt)
        return json_reply(status, payload, headers=(("Cache-Control", "no-store"),))

    def _fault_reply(self, fault: _Fault) -> Reply:
        kind = fault.kind
        if kind == "5xx":
            body = {"error": "unknown_error", "error_description": "retry your request"}
            return json_reply(fault.status, body, headers=(("Cache-Control", "no-store"),))
        if kind == "429":
            body = {
                "error": "rate_limited",
                "error_description": f"too many requests; retry after {fault.retry_after} s",
            }
            return json_reply(429, body, headers=(("Retry-After", str(fault.retry_after)),))
        if kind == "html":
            return Reply(503, MAINTENANCE_PAGE, HTML_TYPE)
        if kind == "html200":
            return Reply(200, LOGIN_PAGE, HTML_TYPE)
        if kind == "reset":
            return Reply(0, reset=True)
        if kind == "badjson":
            return Reply(200, b'{"access_token":"00D', JSON_TYPE)
        if kind == "missing_fields":
            now_ms = str(int(self.clock() * 1000))
            body = {
                "instance_url": self.url,
                "id": self._id_url(salesforce_id("005")),
                "token_type": "Bearer",
                "scope": "api",
                "issued_at": now_ms,
            }
            return json_reply(200, body, headers=(("Cache-Control", "no-store"),))
        if kind == "huge":
            return Reply(200, _huge_body(), JSON_TYPE)
        raise AssertionError(kind)  # pragma: no cover - set_fault validates kinds

    def _exchange(self, form: dict[str, str]) -> tuple[int, dict[str, str]]:
        """The token exchange proper, in Salesforce's check order. Caller holds the lock."""
        now = self.clock()
        self._logins.append(now)
        while self._logins and self._logins[0] <= now - RATE_WINDOW_SECONDS:
            self._logins.popleft()

        if form.get("grant_type") != JWT_BEARER_GRANT:
            return _error(UNSUPPORTED_GRANT)
        parsed = _parse_jwt(form.get("assertion") or "")
        if parsed is None:
            return _error(INVALID_ASSERTION)
        header, claims, signing_input, signature = parsed
        if header.get("alg") != "RS256":
            return _error(INVALID_ASSERTION)
        iss = claims.get("iss")
        app = self._apps.get(iss) if isinstance(iss, str) else None
        if app is None:
            return _error(INVALID_CLIENT)
        aud = claims.get("aud")
        if not isinstance(aud, str) or not self._audience_ok(aud):
            return _error(INVALID_AUDIENCE)
        if not _verify_rs256(app.public_key, signing_input, signature):
            return _error(INVALID_ASSERTION)
        exp = claims.get("exp")
        if isinstance(exp, str) and exp.isdigit():
            # simple-salesforce sends exp as a digit string, and Salesforce accepts it
            exp = int(exp)
        # exp in milliseconds (some clients send it) is simply far in the future: accepted
        if not isinstance(exp, int) or isinstance(exp, bool) or now > exp + EXP_GRACE_SECONDS:
            return _error(EXPIRED)
        if not app.admin_approved:
            return _error(NOT_ADMIN_APPROVED)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not app.users.get(sub, False):
            return _error(NOT_APPROVED)
        if len(self._logins) > self.login_rate_limit:
            return _error(RATE_EXCEEDED)
        return 200, self._issue(app, sub, now)

    def _audience_ok(self, aud: str) -> bool:
        accepted = self._accepted_audiences()
        # real clients send the login URL with a trailing slash; Salesforce accepts it
        return aud in accepted or (aud.endswith("/") and aud[:-1] in accepted)

    def _issue(self, app: _App, username: str, now: float) -> dict[str, str]:
        client_id = app.client_id
        user_id = self._user(username).user_id
        token = None
        if self.reuse_sessions:
            previous = self._live_by_user.get((client_id, username))
            session = self._live(previous, now) if previous else None
            if session is not None:
                session.last_used = now
                token = session.token
        if token is None:
            expires_at = None
            if app.jwt_access_tokens:
                timeout = app.session_timeout if app.session_timeout is not None else self.session_timeout
                expires_at = now + timeout
                token = self._signer.sign({
                    "iss": self.url, "sub": f"uid:{user_id}", "aud": self.url,
                    "client_id": client_id, "scp": ["api"], "mty": "oauth",
                    "iat": int(now), "nbf": int(now), "exp": int(expires_at),
                    "jti": secrets.token_urlsafe(12),
                }, tenant=f"core/prod/{self.org_id}")
                expires_at = float(int(expires_at))
            else:
                token = f"{self.org_id}!{secrets.token_urlsafe(72)}"
            self._sessions[token] = _Session(token, client_id, username, user_id, now,
                                             expires_at=expires_at)
            self._live_by_user[(client_id, username)] = token
        id_url = self._id_url(user_id)
        issued_at = str(int(now * 1000))
        digest = hmac.new(self._secret, (id_url + issued_at).encode(), hashlib.sha256).digest()
        return {
            "access_token": token,
            "signature": base64.b64encode(digest).decode("ascii"),
            "scope": "api",
            "instance_url": self.url,
            "id": id_url,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }

    def _userinfo(self, headers: Any) -> Reply:
        session = self._use(_bearer(headers))
        if session is None:
            return invalid_session()
        base = f"{self.url}/services/data/v{{version}}"
        local = session.username.split("@", 1)[0]
        body = {
            "sub": self._id_url(session.user_id),
            "user_id": session.user_id,
            "organization_id": self.org_id,
            "preferred_username": session.username,
            "nickname": local,
            "name": local,
            "email": session.username,
            "email_verified": True,
            "zoneinfo": "Etc/UTC",
            "locale": "en_US",
            "language": "en_US",
            "active": True,
            "user_type": "STANDARD",
            "is_app_installed": True,
            "urls": {
                "rest": f"{base}/",
                "query": f"{base}/query/",
                "sobjects": f"{base}/sobjects/",
                "metadata": f"{self.url}/services/Soap/m/{{version}}/{self.org_id}",
                "profile": f"{self.url}/{session.user_id}",
            },
        }
        return json_reply(200, body)

    def _revoke_endpoint(self, token: str | None) -> Reply:
        with self._lock:
            session = self._live(token, self.clock()) if token else None
            if session is None:
                body = {"error": "invalid_token", "error_description": "invalid token"}
                return json_reply(400, body, headers=(("Cache-Control", "no-store"),))
            session.revoked = True
        return Reply(200, headers=(("Cache-Control", "no-store"),))

    def _tls_context(self) -> ssl.SSLContext:
        self._tempdir = tempfile.TemporaryDirectory(prefix="sf-endpoint-")
        directory = Path(self._tempdir.name)
        ca_pem, chain_pem, key_pem = throwaway_tls(self.host)
        (directory / "ca.pem").write_bytes(ca_pem)
        chain, key = directory / "chain.pem", directory / "key.pem"
        chain.write_bytes(chain_pem)
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, key)
        key.unlink()
        chain.unlink()
        self.ca_bundle = str(directory / "ca.pem")
        return context


# ---------------------------------------------------------------------------- HTTP plumbing


class _Server(EmulatorServer):
    def __init__(
        self, address: tuple[str, int], endpoint: SalesforceEndpoint,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.endpoint = endpoint
        self.ssl_context = ssl_context
        super().__init__(address, _Handler)


class _Handler(EmulatorHandler):
    server_version = "rotator-salesforce-emulator"
    max_request_body = MAX_REQUEST_BODY
    body_too_large_message = "request body too large"
    server: _Server

    def setup(self) -> None:
        context = self.server.ssl_context
        if context is not None:
            self.request.settimeout(self.timeout)
            self.request = context.wrap_socket(self.request, server_side=True)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.server.ssl_context is not None:
                # the server only closes the raw socket it accepted, which wrap_socket detached
                self.connection.close()

    def _dispatch(self, body: bytes) -> None:
        parts = urlsplit(self.path)
        reply = self.server.endpoint._handle(
            self.command, parts.path, parts.query, self.headers, body
        )
        if reply.reset:
            self._reset_connection()
            return
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        if reply.content_type is not None:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def _refuse(self, status: int, message: str) -> None:
        self._send(json_reply(status, [{"errorCode": "BAD_REQUEST", "message": message}], close=True))


# ---------------------------------------------------------------------------- helpers


def _error(pair: tuple[str, str]) -> tuple[int, dict[str, str]]:
    return 400, {"error": pair[0], "error_description": pair[1]}


def _first(values: dict[str, list[str]], name: str) -> str | None:
    found = values.get(name)
    return found[0] if found else None


def _form(headers: Any, body: bytes) -> dict[str, str]:
    """The form fields of a urlencoded body (first value of each); other bodies give {}."""
    content_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def _bearer(headers: Any) -> str | None:
    match = _AUTHORIZATION.match(headers.get("Authorization") or "")
    return match.group(1) if match else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _b64url(segment: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", segment):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _parse_jwt(assertion: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes] | None:
    """(header, claims, signing input, signature) of a compact JWS, or None if unreadable."""
    parts = assertion.strip().split(".")
    if len(parts) != 3:
        return None
    try:
        header = json.loads(_b64url(parts[0]))
        claims = json.loads(_b64url(parts[1]))
        signature = _b64url(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


def _peek_claims(assertion: str | None) -> dict[str, Any]:
    parsed = _parse_jwt(assertion or "")
    return parsed[1] if parsed else {}


def _verify_rs256(public_key: Any, signing_input: bytes, signature: bytes) -> bool:
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False  # no certificate uploaded, or not an RSA one
    try:
        public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def _public_key(pem: str | bytes) -> Any:
    """The public key of a PEM certificate (or of a bare PEM public key)."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    if b"PUBLIC KEY-----" in data:
        return serialization.load_pem_public_key(data)
    raise ValueError("expected a PEM certificate (-----BEGIN CERTIFICATE-----)")


_huge: bytes | None = None


def _huge_body() -> bytes:
    global _huge
    if _huge is None:
        head, tail = b'{"padding":"', b'"}'
        _huge = head + b"x" * (HUGE_BODY_BYTES - len(head) - len(tail)) + tail
    return _huge


def _text(pem: str | bytes) -> str:
    return (pem.decode("ascii") if isinstance(pem, bytes) else pem).strip()


def _sf_datetime(epoch: float) -> str:
    """Salesforce's JSON datetime format: 2025-06-15T14:13:20.000+0000."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _call_names(request: md.SoapRequest | None) -> tuple[str | None, tuple[str, ...]]:
    """(type, full names) of a Metadata API call, for the call log."""
    if request is None:
        return None, ()
    if request.operation == "readMetadata":
        return request.type_name, request.full_names
    names = tuple(str(md.get(tree, "fullName") or "") for _, tree in request.records)
    return (request.records[0][0] if request.records else None), names
