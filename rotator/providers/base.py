"""What a token endpoint provider is, and the HTTP exchange they share.

A provider turns a credential's settings into JWT claims and a signed assertion into a
TokenResponse. HTTP errors, timeouts and unusable replies are converted here into
rotator's endpoint errors; requests' and urllib3's exceptions never travel past this module.

The token request goes straight to urllib3 (one pool per endpoint, kept alive) unless a proxy
is configured in the environment: requests' Session adds about a millisecond of CPU per call
(merging settings, preparing, hooks, cookies), as much as the RSA signature itself.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

import urllib3

from rotator import __version__
from rotator.deadline import POOL_CLASSES, Deadline, DeadlineExceeded, deadline_scope, read_body
from rotator.errors import EndpointProtocolError, EndpointUnavailable, TokenRejected
from rotator.sanitize import sanitize_remote

if TYPE_CHECKING:
    import requests

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_RESPONSE_BYTES = 1024 * 1024
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class TokenResponse:
    access_token: str = field(repr=False)
    token_type: str
    issued_at: datetime
    expires_at: datetime | None
    instance_url: str | None = None
    scope: str | None = None
    id: str | None = None


class Provider(Protocol):
    token_url: str

    def claims(self, now: float) -> dict[str, Any]:
        """The assertion's claims at epoch time `now`."""
        ...

    def exchange(self, assertion: str) -> TokenResponse:
        """POST the assertion; raise TokenRejected, EndpointUnavailable or EndpointProtocolError."""
        ...


_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")
_session_lock = threading.Lock()
_session: requests.Session | None = None  # made on first use: requests is imported only then


_pools: urllib3.PoolManager | None = None


def reset_shared_session() -> None:
    """Forget the session and pools (in a forked child: never reuse the parent's connections)."""
    global _session, _pools
    with _session_lock:
        _session = None
        _pools = None


def _proxied() -> bool:
    return any(name.lower() in _PROXY_VARS for name in os.environ)


def _ca_bundle() -> str | bool:
    """What requests would verify against: REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, else certifi's."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


_PROXIED = object()  # _pools when a proxy is configured


def shared_pools() -> urllib3.PoolManager | None:
    """The token request's connection pools (None when a proxy is configured: then requests,
    which knows no_proxy and the rest, sends it). Same TLS trust as the shared session; like
    it, the environment is read once (reset_shared_session reads it again)."""
    global _pools
    made = _pools
    if made is not None:
        return None if made is _PROXIED else made  # type: ignore[return-value]
    with _session_lock:
        if _pools is None and _proxied():
            _pools = _PROXIED  # type: ignore[assignment]
        if _pools is None:
            bundle = _ca_bundle()
            if bundle is True:
                from requests.utils import DEFAULT_CA_BUNDLE_PATH

                bundle = DEFAULT_CA_BUNDLE_PATH
            where = {"ca_cert_dir": bundle} if os.path.isdir(str(bundle)) else {"ca_certs": bundle}
            pools = urllib3.PoolManager(num_pools=16, maxsize=64, block=False,
                                        cert_reqs="CERT_REQUIRED", **where)
            pools.pool_classes_by_scheme = dict(POOL_CLASSES)  # deadline_scope watches them
            _pools = pools
        return None if _pools is _PROXIED else _pools  # type: ignore[return-value]


def shared_session() -> requests.Session:
    """One HTTP session per process: connection reuse to each endpoint, no hidden retries."""
    global _session
    import requests

    from rotator.deadline import DeadlineAdapter

    with _session_lock:
        if _session is None:
            session = requests.Session()
            # DeadlineAdapter: post_form's deadline_scope bounds the whole exchange
            adapter = DeadlineAdapter(pool_connections=16, pool_maxsize=64, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.headers["User-Agent"] = f"rotator/{__version__}"
            if not _proxied():
                # No proxy configured: read the CA-bundle variables once here instead of
                # letting requests re-read the environment (and .netrc) on every request.
                session.trust_env = False
                session.verify = _ca_bundle()
            _session = session
        return _session


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def is_json(self) -> bool:
        return "json" in self.headers.get("content-type", "").lower()


def post_form(
    url: str,
    form: dict[str, str],
    *,
    timeout: float,
    session_factory: Callable[[], requests.Session] = shared_session,
) -> HttpReply:
    """POST a form; network trouble becomes EndpointUnavailable naming the address.

    `timeout` bounds the whole exchange (connect, send, headers, body): see rotator.deadline."""
    with deadline_scope(timeout) as deadline:
        pools = shared_pools() if session_factory is shared_session else None
        try:
            if pools is not None:
                return _post_form_direct(url, form, deadline, pools)
            return _post_form(url, form, deadline, session_factory)
        except EndpointUnavailable:
            raise
        except (urllib3.exceptions.HTTPError, OSError, DeadlineExceeded) as exc:
            # (requests' RequestException is an OSError)
            if deadline.expired:
                raise EndpointUnavailable(url, f"no reply within {timeout:g}s") from None
            raise EndpointUnavailable(url, f"reply cut off ({_reason(exc)})") from None


_FORM_HEADERS = {
    "User-Agent": f"rotator/{__version__}",
    "Accept": "application/json",
    # what requests sent; the body limit counts decoded bytes, and urllib3>=2.6 decodes a bounded
    # piece at a time (a decompression bomb is refused without being inflated)
    "Accept-Encoding": "gzip, deflate",
    "Content-Type": "application/x-www-form-urlencoded",
}


def _post_form_direct(url: str, form: dict[str, str], deadline: Deadline,
                      pools: urllib3.PoolManager) -> HttpReply:
    """The same exchange as _post_form, through urllib3 alone (no redirects, no retries)."""
    connect, read = deadline.timeouts(connect=CONNECT_TIMEOUT)
    try:
        response = pools.urlopen(
            "POST", url, body=urlencode(form).encode("ascii"), headers=_FORM_HEADERS,
            timeout=urllib3.Timeout(connect=connect, read=read), retries=False, redirect=False,
            preload_content=False,
        )
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise _unavailable(url, exc, deadline) from None
    complete = False
    try:
        chunks: list[bytes] = []
        size = 0
        for piece in response.stream(64 * 1024, decode_content=True):
            if deadline.expired:
                raise DeadlineExceeded
            size += len(piece)
            if size > MAX_RESPONSE_BYTES:
                raise EndpointProtocolError(
                    url, f"reply larger than {MAX_RESPONSE_BYTES} bytes; refusing to read it")
            chunks.append(piece)
        if deadline.expired:  # the watchdog may have cut a body that has no Content-Length
            raise DeadlineExceeded
        complete = True
    finally:
        if not complete:
            response.close()  # a half-read connection must not go back to the pool
        response.release_conn()
    headers = {k.lower(): v for k, v in response.headers.itermerged()}
    return HttpReply(response.status, headers, b"".join(chunks))


def _post_form(
    url: str, form: dict[str, str], deadline: Deadline, session_factory: Callable[[], requests.Session]
) -> HttpReply:
    import requests

    try:
        response = session_factory().post(
            url,
            data=form,
            headers={"Accept": "application/json"},
            timeout=deadline.timeouts(connect=CONNECT_TIMEOUT),
            allow_redirects=False,
            stream=True,
        )
    except requests.exceptions.RequestException as exc:
        raise _unavailable(url, exc, deadline) from None
    try:
        body = read_body(response, deadline, limit=MAX_RESPONSE_BYTES, chunk=64 * 1024)
    except ValueError:
        raise EndpointProtocolError(
            url, f"reply larger than {MAX_RESPONSE_BYTES} bytes; refusing to read it"
        ) from None
    finally:
        response.close()
    headers = {k.lower(): v for k, v in response.headers.items()}
    return HttpReply(response.status_code, headers, body)


def _unavailable(url: str, exc: Exception, deadline: Deadline) -> EndpointUnavailable:
    timeout = deadline.seconds
    if deadline.expired:  # the watchdog cut the connection, whatever requests made of that
        return EndpointUnavailable(url, f"no reply within {timeout:g}s")
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError subclass
        return EndpointUnavailable(url, f"connection failed ({_reason(exc)})")
    # requests' errors when it sent the request (it was imported then); urllib3's otherwise
    loaded = sys.modules.get("requests.exceptions")
    errors: Any = loaded if loaded is not None else _NoRequests
    if isinstance(exc, errors.ConnectTimeout | urllib3.exceptions.ConnectTimeoutError):
        return EndpointUnavailable(url, "connection timed out", hint="is the host reachable?")
    if isinstance(exc, errors.Timeout | urllib3.exceptions.TimeoutError):
        return EndpointUnavailable(url, f"no reply within {timeout:g}s")
    if isinstance(exc, errors.SSLError | urllib3.exceptions.SSLError):
        return EndpointUnavailable(
            url, "TLS handshake failed", hint="check the server certificate and the CA bundle"
        )
    if isinstance(exc, errors.ConnectionError | urllib3.exceptions.ProtocolError | OSError):
        return EndpointUnavailable(url, f"connection failed ({_reason(exc)})")
    return EndpointUnavailable(url, f"request failed ({type(exc).__name__})")


class _Never(Exception):
    """Matches nothing: stands in for requests' exception classes while requests is not loaded."""


class _NoRequests:
    ConnectTimeout = Timeout = SSLError = ConnectionError = _Never


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "Name or service not known",
                   "timed out", "Remote end closed", "Connection aborted"):
        if marker.lower() in text.lower():
            return marker.lower()
    return type(exc).__name__


def retry_after_seconds(headers: dict[str, str]) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), capped at one hour."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - datetime.now(when.tzinfo).timestamp()
    return max(0.0, min(seconds, 3600.0))


def unavailable_for(url: str, reply: HttpReply) -> EndpointUnavailable | None:
    """5xx and 429 are the endpoint's trouble, not ours: retry later (honouring Retry-After)."""
    if reply.status == 429:
        return EndpointUnavailable(
            url,
            "rate limited (HTTP 429)",
            retry_after=retry_after_seconds(reply.headers),
            status=429,
        )
    if reply.status >= 500:
        return EndpointUnavailable(
            url,
            f"server error (HTTP {reply.status})",
            retry_after=retry_after_seconds(reply.headers),
            status=reply.status,
        )
    return None


def exchange_assertion(
    url: str,
    assertion: str,
    *,
    timeout: float,
    hint_for: Callable[[str, str], str | None],
    parse_success: Callable[[str, dict[str, Any]], TokenResponse],
) -> TokenResponse:
    """The RFC 7523 exchange every provider shares: POST the grant, classify the reply.

    5xx/429 -> EndpointUnavailable; an OAuth error -> TokenRejected with the provider's hint;
    anything unusable -> EndpointProtocolError; a 200 -> the provider's `parse_success`.
    """
    reply = post_form(url, {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}, timeout=timeout)
    trouble = unavailable_for(url, reply)
    if trouble is not None:
        raise trouble
    data = parse_json_object(url, reply)
    if reply.status != 200:
        error = data.get("error")
        if not isinstance(error, str):
            raise EndpointProtocolError(url, f"HTTP {reply.status} without an OAuth error")
        description = str(data.get("error_description") or "")[:200]
        raise TokenRejected(url, error[:100], description, hint=hint_for(error, description))
    return parse_success(url, data)


# token_type and scope are stored for consumers and shown by nobody; still bounded, printable.
PLAIN_FIELD_LIMITS = {"token_type": 64, "scope": 4096}


def check_plain_fields(url: str, data: dict[str, Any]) -> None:
    """token_type and scope, when strings: short and free of control characters."""
    for name, limit in PLAIN_FIELD_LIMITS.items():
        value = data.get(name)
        if isinstance(value, str) and (len(value) > limit or not value.isprintable()):
            raise EndpointProtocolError(
                url, f"token response field {name} is longer than {limit} characters or not printable"
            )


def parse_json_object(url: str, reply: HttpReply) -> dict[str, Any]:
    try:
        data = reply.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        kind = sanitize_remote(reply.headers.get("content-type", "no content type").split(";")[0], 60)
        raise EndpointProtocolError(
            url,
            f"HTTP {reply.status} reply is not JSON ({kind})",
            hint="often a maintenance page or a proxy; will retry",
        ) from None
    if not isinstance(data, dict):
        raise EndpointProtocolError(url, f"HTTP {reply.status} reply is not a JSON object")
    return data
