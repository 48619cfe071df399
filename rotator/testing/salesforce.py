"""A Salesforce-compatible OAuth 2.0 JWT-bearer endpoint on loopback, for tests.

A real HTTP/1.1 server (keep-alive, one thread per connection) that checks assertions the
way Salesforce does (``docs``: shared SALESFORCE.md): the same check order, the same
``{"error", "error_description"}`` strings, the 3-minute ``exp`` grace, one certificate per
connected app, the login rate limit, idle session expiry, revocation — plus injectable
faults (5xx, 429, HTML pages, resets, slow or malformed replies) to test a client's retries.

Use it in your own tests::

    import time, jwt, requests
    from rotator.testing.salesforce import SalesforceEndpoint

    def test_my_client(rsa_key, certificate_pem):
        with SalesforceEndpoint() as sf:                      # serves on 127.0.0.1:<free port>
            sf.register_app("CONSUMER_KEY", certificate_pem, users=["bot@example.com"])
            assertion = jwt.encode(
                {"iss": "CONSUMER_KEY", "sub": "bot@example.com",
                 "aud": "https://login.salesforce.com", "exp": int(time.time()) + 180},
                rsa_key, algorithm="RS256")
            reply = requests.post(sf.token_url, data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion})
            token = reply.json()["access_token"]
            assert sf.is_valid(token)
            sf.set_fault("5xx", count=1)                      # the next token request gets a 503
            assert sf.token_requests == 1

Post assertions to ``sf.token_url`` (``sf.url + "/services/oauth2/token"``); ``aud`` may be
``https://login.salesforce.com``, ``https://test.salesforce.com`` or ``sf.url`` unless you pass
``audiences``. Pass ``clock=`` (a callable returning epoch seconds) to move time in tests:
it drives ``exp`` checks, idle expiry, the rate-limit window and ``issued_at``.

``SalesforceEndpoint(tls=True)`` serves https with a throwaway CA whose certificate is at
``sf.ca_bundle`` (give it to ``requests`` as ``verify=``); clients that hard-code https, like
simple-salesforce, need that::

    s = requests.Session()
    s.verify = sf.ca_bundle
    s.trust_env = False  # otherwise REQUESTS_CA_BUNDLE, if set, overrides s.verify
    Salesforce(instance_url=sf.url, session_id=token, session=s).query("SELECT Id FROM User")

From a shell: ``python -m rotator.testing.salesforce --port 8080 --client-id ID --cert app.crt
--user bot@example.com`` serves until Ctrl-C and prints its URL.

Only the standard library and cryptography are used (clients usually sign with PyJWT).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import ssl
import string
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from rotator.testing._http import EmulatorHandler, EmulatorServer

__all__ = [
    "DEFAULT_AUDIENCES",
    "FAULT_KINDS",
    "JWT_BEARER_GRANT",
    "SalesforceEndpoint",
    "TokenAttempt",
]

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")
EXP_GRACE_SECONDS = 180
RATE_WINDOW_SECONDS = 3600.0
API_VERSION = "62.0"
VERSIONS = (
    ("Winter '24", "59.0"),
    ("Spring '24", "60.0"),
    ("Summer '24", "61.0"),
    ("Winter '25", "62.0"),
)
FAULT_KINDS = frozenset(
    {"5xx", "429", "html", "html200", "slow", "reset", "badjson", "missing_fields", "huge"}
)
HUGE_BODY_BYTES = 5 * 1024 * 1024
MAX_REQUEST_BODY = 1024 * 1024

# (error, error_description), exactly as Salesforce sends them
UNSUPPORTED_GRANT = ("unsupported_grant_type", "grant type not supported")
INVALID_ASSERTION = ("invalid_grant", "invalid assertion")
INVALID_CLIENT = ("invalid_client_id", "client identifier invalid")
INVALID_AUDIENCE = ("invalid_grant", "audience is invalid")
EXPIRED = ("invalid_grant", "expired authorization code")
NOT_ADMIN_APPROVED = ("invalid_app_access", "user is not admin approved to access this app")
NOT_APPROVED = ("invalid_grant", "user hasn't approved this consumer")
RATE_EXCEEDED = ("invalid_grant", "LOGIN_RATE_EXCEEDED")

INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]

JSON_TYPE = "application/json;charset=UTF-8"
HTML_TYPE = "text/html;charset=UTF-8"
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

_ID_CHARS = string.ascii_letters + string.digits
_ID_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_QUERY_PATH = re.compile(r"^/services/data/v(\d+\.\d+)/query/?$")
_AUTHORIZATION = re.compile(r"^\s*(?:bearer|oauth)\s+(\S+)\s*$", re.IGNORECASE)


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


@dataclass
class _App:
    client_id: str
    public_key: Any | None
    admin_approved: bool
    users: dict[str, bool] = field(default_factory=dict)


@dataclass
class _Session:
    token: str
    client_id: str
    username: str
    user_id: str
    last_used: float
    revoked: bool = False


@dataclass
class _Fault:
    kind: str
    remaining: int | None
    status: int
    retry_after: int
    delay: float


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    reset: bool = False
    close: bool = False


class SalesforceEndpoint:
    """Salesforce's OAuth token, userinfo and revoke endpoints plus a sliver of the REST API.

    One emulated org: `org_id`, one login rate limit, any number of connected apps
    (`register_app`), each with one certificate and its pre-authorized users. Thread safe.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        login_rate_limit: int = 3600,
        session_lifetime: float = 7200.0,
        audiences: Iterable[str] | None = None,
        reuse_tokens: bool = False,
        clock: Callable[[], float] = time.time,
        tls: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.login_rate_limit = login_rate_limit
        self.session_lifetime = session_lifetime
        self.reuse_tokens = reuse_tokens
        self.clock = clock
        self.tls = tls
        self._audiences = None if audiences is None else frozenset(audiences)
        self.org_id = _salesforce_id("00D")
        self.ca_bundle: str | None = None
        self._secret = secrets.token_bytes(32)
        self._lock = threading.RLock()
        self._apps: dict[str, _App] = {}
        self._user_ids: dict[str, str] = {}
        self._sessions: dict[str, _Session] = {}
        self._live_by_user: dict[tuple[str, str], str] = {}
        self._logins: deque[float] = deque()
        self._fault: _Fault | None = None
        self._token_requests = 0
        self._log: list[TokenAttempt] = []
        self._issued: list[str] = []
        self._url: str | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None

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
    ) -> None:
        """Create (or replace) a connected app whose consumer key is `client_id`.

        `certificate_pem` is the X.509 certificate uploaded to the app (a bare public key PEM
        is accepted too); None means none uploaded, so every assertion is an invalid
        assertion. `users` are pre-authorized. admin_approved=False models a policy other
        than "Admin approved users are pre-authorized": every login gets invalid_app_access.
        """
        key = _public_key(certificate_pem) if certificate_pem is not None else None
        with self._lock:
            app = _App(client_id, key, admin_approved)
            for username in users:
                app.users[username] = True
                self._user_id(username)
            self._apps[client_id] = app

    def upload_certificate(self, client_id: str, certificate_pem: str | bytes) -> None:
        """Replace the app's one certificate: the old key stops verifying at once."""
        key = _public_key(certificate_pem)
        with self._lock:
            self._app(client_id).public_key = key

    def add_user(self, client_id: str, username: str, *, approved: bool = True) -> None:
        """Make `username` a user of the org; approved=True pre-authorizes it for the app."""
        with self._lock:
            self._app(client_id).users[username] = approved
            self._user_id(username)

    def user_id(self, username: str) -> str:
        """The 18-character User id (005...) the org gives `username`."""
        with self._lock:
            return self._user_id(username)

    # ------------------------------------------------------------------ faults

    def set_fault(
        self,
        kind: str,
        *,
        count: int | None = None,
        status: int = 503,
        retry_after: int = 1,
        delay: float = 5.0,
    ) -> None:
        """Answer the next `count` token requests (None: all until clear_faults) with a fault.

        Kinds: "5xx" (HTTP `status`, JSON body), "429" (Retry-After: `retry_after`),
        "html" (503 maintenance page), "html200" (200 HTML page), "slow" (answer normally
        after `delay` seconds), "reset" (TCP RST, no reply), "badjson" (200 JSON type, body not
        JSON), "missing_fields" (200 JSON without access_token), "huge" (200, 5 MiB body).
        One fault at a time: a new set_fault replaces the previous one.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None for until clear_faults())")
        if kind == "5xx" and not 500 <= status <= 599:
            raise ValueError("a 5xx fault needs a status between 500 and 599")
        with self._lock:
            self._fault = _Fault(kind, count, status, retry_after, delay)

    def clear_faults(self) -> None:
        with self._lock:
            self._fault = None

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
    def issued(self) -> list[str]:
        """Access tokens returned by successful exchanges, in order (a copy).

        With reuse_tokens=True a reused token appears once per exchange that returned it.
        """
        with self._lock:
            return list(self._issued)

    def reset_counters(self) -> None:
        """Zero token_requests and empty token_log and issued (sessions stay valid)."""
        with self._lock:
            self._token_requests = 0
            self._log.clear()
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

    def _user_id(self, username: str) -> str:
        uid = self._user_ids.get(username)
        if uid is None:
            uid = self._user_ids[username] = _salesforce_id("005")
        return uid

    def _accepted_audiences(self) -> frozenset[str]:
        if self._audiences is not None:
            return self._audiences
        return frozenset((*DEFAULT_AUDIENCES, self.url))

    def _live(self, token: str, now: float) -> _Session | None:
        session = self._sessions.get(token)
        if session is None or session.revoked:
            return None
        if now - session.last_used >= self.session_lifetime:
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

    def _handle(self, method: str, path: str, query: str, headers: Any, body: bytes) -> _Reply:
        if path == "/services/oauth2/token":
            if method != "POST":
                return _method_not_allowed(method, "POST")
            return self._token_endpoint(headers, body)
        if path == "/services/oauth2/userinfo":
            if method not in ("GET", "POST"):
                return _method_not_allowed(method, "GET, POST")
            return self._userinfo(headers)
        if path == "/services/oauth2/revoke":
            if method == "POST":
                return self._revoke_endpoint(_form(headers, body).get("token"))
            if method == "GET":
                return self._revoke_endpoint(_first(parse_qs(query), "token"))
            return _method_not_allowed(method, "GET, POST")
        if path in ("/services/data", "/services/data/"):
            if method != "GET":
                return _method_not_allowed(method, "GET")
            versions = [
                {"label": label, "url": f"/services/data/v{v}", "version": v}
                for label, v in VERSIONS
            ]
            return _json(200, versions)
        match = _QUERY_PATH.match(path)
        if match:
            if method != "GET":
                return _method_not_allowed(method, "GET")
            return self._query(match.group(1), query, headers)
        return _json(404, NOT_FOUND)

    def _token_endpoint(self, headers: Any, body: bytes) -> _Reply:
        form = _form(headers, body)
        claims = _peek_claims(form.get("assertion"))
        client_id = _str_or_none(claims.get("iss"))
        subject = _str_or_none(claims.get("sub"))
        with self._lock:
            self._token_requests += 1
            received = self.clock()
            fault = self._take_fault()
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
        return _json(status, payload, headers=(("Cache-Control", "no-store"),))

    def _take_fault(self) -> _Fault | None:
        fault = self._fault
        if fault is None:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._fault = None
        return fault

    def _fault_reply(self, fault: _Fault) -> _Reply:
        kind = fault.kind
        if kind == "5xx":
            body = {"error": "unknown_error", "error_description": "retry your request"}
            return _json(fault.status, body, headers=(("Cache-Control", "no-store"),))
        if kind == "429":
            body = {
                "error": "rate_limited",
                "error_description": f"too many requests; retry after {fault.retry_after} s",
            }
            return _json(429, body, headers=(("Retry-After", str(fault.retry_after)),))
        if kind == "html":
            return _Reply(503, MAINTENANCE_PAGE, HTML_TYPE)
        if kind == "html200":
            return _Reply(200, LOGIN_PAGE, HTML_TYPE)
        if kind == "reset":
            return _Reply(0, reset=True)
        if kind == "badjson":
            return _Reply(200, b'{"access_token":"00D', JSON_TYPE)
        if kind == "missing_fields":
            now_ms = str(int(self.clock() * 1000))
            body = {
                "instance_url": self.url,
                "id": self._id_url(_salesforce_id("005")),
                "token_type": "Bearer",
                "scope": "api",
                "issued_at": now_ms,
            }
            return _json(200, body, headers=(("Cache-Control", "no-store"),))
        if kind == "huge":
            return _Reply(200, _huge_body(), JSON_TYPE)
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
        if not isinstance(aud, str) or aud not in self._accepted_audiences():
            return _error(INVALID_AUDIENCE)
        if not _verify_rs256(app.public_key, signing_input, signature):
            return _error(INVALID_ASSERTION)
        exp = claims.get("exp")
        if isinstance(exp, str) and exp.isdigit():
            # simple-salesforce sends exp as a digit string, and Salesforce accepts it
            exp = int(exp)
        if not isinstance(exp, int) or isinstance(exp, bool) or now > exp + EXP_GRACE_SECONDS:
            return _error(EXPIRED)
        if not app.admin_approved:
            return _error(NOT_ADMIN_APPROVED)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not app.users.get(sub, False):
            return _error(NOT_APPROVED)
        if len(self._logins) > self.login_rate_limit:
            return _error(RATE_EXCEEDED)
        return 200, self._issue(app.client_id, sub, now)

    def _issue(self, client_id: str, username: str, now: float) -> dict[str, str]:
        user_id = self._user_id(username)
        token = None
        if self.reuse_tokens:
            previous = self._live_by_user.get((client_id, username))
            session = self._live(previous, now) if previous else None
            if session is not None:
                session.last_used = now
                token = session.token
        if token is None:
            token = f"{self.org_id}!{secrets.token_urlsafe(72)}"
            self._sessions[token] = _Session(token, client_id, username, user_id, now)
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

    def _userinfo(self, headers: Any) -> _Reply:
        session = self._use(_bearer(headers))
        if session is None:
            return _invalid_session()
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
                "profile": f"{self.url}/{session.user_id}",
            },
        }
        return _json(200, body)

    def _revoke_endpoint(self, token: str | None) -> _Reply:
        with self._lock:
            session = self._live(token, self.clock()) if token else None
            if session is None:
                body = {"error": "invalid_token", "error_description": "invalid token"}
                return _json(400, body, headers=(("Cache-Control", "no-store"),))
            session.revoked = True
        return _Reply(200, headers=(("Cache-Control", "no-store"),))

    def _query(self, version: str, query: str, headers: Any) -> _Reply:
        if self._use(_bearer(headers)) is None:
            return _invalid_session()
        soql = _first(parse_qs(query), "q")
        if not soql or not soql.strip():
            problem = [{"message": "A query string has to be specified",
                        "errorCode": "MALFORMED_QUERY"}]
            return _json(400, problem)
        record = {
            "attributes": {
                "type": "Organization",
                "url": f"/services/data/v{version}/sobjects/Organization/{self.org_id}",
            },
            "Id": self.org_id,
            "Name": "rotator emulated org",
        }
        return _json(200, {"totalSize": 1, "done": True, "records": [record]})

    def _tls_context(self) -> ssl.SSLContext:
        self._tempdir = tempfile.TemporaryDirectory(prefix="sf-endpoint-")
        directory = Path(self._tempdir.name)
        ca_pem, chain_pem, key_pem = _throwaway_tls(self.host)
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

    def _send(self, reply: _Reply) -> None:
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
        self._send(_json(status, [{"errorCode": "BAD_REQUEST", "message": message}], close=True))


# ---------------------------------------------------------------------------- helpers


def _json(
    status: int, body: Any, *, headers: tuple[tuple[str, str], ...] = (), close: bool = False
) -> _Reply:
    data = json.dumps(body, separators=(",", ":")).encode()
    return _Reply(status, data, JSON_TYPE, headers, close=close)


def _error(pair: tuple[str, str]) -> tuple[int, dict[str, str]]:
    return 400, {"error": pair[0], "error_description": pair[1]}


def _invalid_session() -> _Reply:
    return _json(401, INVALID_SESSION, headers=(("WWW-Authenticate", "Token"),))


def _method_not_allowed(method: str, allowed: str) -> _Reply:
    body = [{
        "errorCode": "METHOD_NOT_ALLOWED",
        "message": f"HTTP Method '{method}' not allowed. Allowed are {allowed}",
    }]
    return _json(405, body, headers=(("Allow", allowed),))


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


def _salesforce_id(prefix: str) -> str:
    """A random 18-character, case-safe Salesforce id starting with the 3-character `prefix`."""
    short = prefix + "".join(secrets.choice(_ID_CHARS) for _ in range(15 - len(prefix)))
    suffix = ""
    for start in range(0, 15, 5):
        bits = sum(1 << i for i, char in enumerate(short[start:start + 5]) if char.isupper())
        suffix += _ID_SUFFIX[bits]
    return short + suffix


_huge: bytes | None = None


def _huge_body() -> bytes:
    global _huge
    if _huge is None:
        head, tail = b'{"padding":"', b'"}'
        _huge = head + b"x" * (HUGE_BODY_BYTES - len(head) - len(tail)) + tail
    return _huge


def _throwaway_tls(host: str) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, server certificate + CA chain, server key) as PEM, valid one day."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rotator test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    try:
        address = ipaddress.ip_address(host)
        if str(address) not in ("127.0.0.1", "::1"):
            names.append(x509.IPAddress(address))
    except ValueError:
        if host != "localhost":
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca_cert.public_bytes(pem)
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca_pem, cert.public_bytes(pem) + ca_pem, key_pem


# ---------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rotator.testing.salesforce",
        description="Serve an emulated Salesforce OAuth endpoint until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--client-id", help="consumer key of the connected app")
    parser.add_argument("--cert", type=Path, help="PEM certificate uploaded to the app")
    parser.add_argument(
        "--user", action="append", default=[], help="pre-authorized username (repeatable)"
    )
    parser.add_argument(
        "--audience", action="append", help="accepted aud (repeatable; default login/test/self)"
    )
    parser.add_argument("--session-lifetime", type=float, default=7200.0)
    parser.add_argument("--login-rate-limit", type=int, default=3600)
    parser.add_argument("--reuse-tokens", action="store_true")
    parser.add_argument("--tls", action="store_true", help="serve https with a throwaway CA")
    args = parser.parse_args(argv)
    if (args.cert or args.user) and not args.client_id:
        parser.error("--cert and --user need --client-id")
    endpoint = SalesforceEndpoint(
        host=args.host,
        port=args.port,
        login_rate_limit=args.login_rate_limit,
        session_lifetime=args.session_lifetime,
        audiences=args.audience,
        reuse_tokens=args.reuse_tokens,
        tls=args.tls,
    )
    if args.client_id:
        certificate = args.cert.read_bytes() if args.cert else None
        endpoint.register_app(args.client_id, certificate, users=args.user)
    endpoint.start()
    # Ctrl-C may come as soon as the URL is out (a script that got its answer): the handler
    # must already be in place when it is printed, or the interrupt escapes as a traceback.
    try:
        print(endpoint.url, flush=True)
        if endpoint.ca_bundle:
            print(f"CA bundle: {endpoint.ca_bundle}", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        endpoint.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
