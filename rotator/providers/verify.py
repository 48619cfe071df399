"""Verify before write: probe a new token at its instance before it replaces the stored one.

`verify = "userinfo"` asks `GET {instance_url}/services/oauth2/userinfo`; `verify = "query"`
runs `SELECT Id FROM Organization LIMIT 1` through the REST API. Either catches an app whose
scopes or policies changed so that it still issues tokens that cannot do anything: such a
token is not written, the stored one stays, and the audit line says why.

The request goes only to the token response's `instance_url`, which the provider has already
checked against Salesforce's domains and `instance_hosts` (rotator.providers.hosts): a token is
never sent anywhere else. Bounded in time (the credential's `timeout`, for the whole exchange)
and size; no redirects are followed; the answer's body is read only for Salesforce's error code.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from urllib.parse import quote

from rotator.deadline import DeadlineExceeded, deadline_scope, read_body
from rotator.errors import EndpointUnavailable, TokenVerificationFailed
from rotator.providers.base import CONNECT_TIMEOUT, HttpReply, shared_session, unavailable_for
from rotator.sanitize import sanitize_remote

# the REST API version of the query probe: any version the org serves answers it the same
QUERY_API_VERSION = "62.0"
QUERY = "SELECT Id FROM Organization LIMIT 1"
MAX_PROBE_BYTES = 64 * 1024
ERROR_CODE_CHARS = 80


@dataclass(frozen=True)
class ProbeResult:
    probe: str
    status: int
    duration_s: float


def probe_url(kind: str, instance_url: str) -> str:
    base = instance_url.rstrip("/")
    if kind == "userinfo":
        return f"{base}/services/oauth2/userinfo"
    if kind == "query":
        return f"{base}/services/data/v{QUERY_API_VERSION}/query?q={quote(QUERY)}"
    raise ValueError(f"unknown probe {kind!r}")


def verify_token(kind: str, instance_url: str | None, token: str, *, timeout: float) -> ProbeResult:
    """Probe `token`; ProbeResult on 200, else TokenVerificationFailed (4xx: the token cannot
    be used) or EndpointUnavailable (5xx, 429, network: try again later)."""
    if not instance_url:
        raise TokenVerificationFailed("(no instance_url)", kind, None, None,
                                      "the token response has no instance_url to probe")
    import requests  # only a credential with `verify` needs it (through the shared session)

    url = probe_url(kind, instance_url)
    shown = url.split("?", 1)[0]  # never the query string in messages
    started = time.monotonic()
    with deadline_scope(timeout) as deadline:
        try:
            response = shared_session().get(
                url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=deadline.timeouts(connect=CONNECT_TIMEOUT), allow_redirects=False, stream=True,
            )
            try:
                body = read_body(response, deadline, limit=MAX_PROBE_BYTES)
            except ValueError:
                body = b""  # too large to be an error document: judged by the status alone
            finally:
                response.close()
        except (requests.exceptions.RequestException, DeadlineExceeded):
            reason = f"no reply within {timeout:g}s" if deadline.expired else "probe request failed"
            raise EndpointUnavailable(shown, f"verify={kind}: {reason}") from None
    headers = {k.lower(): v for k, v in response.headers.items()}
    reply = HttpReply(response.status_code, headers, body)
    trouble = unavailable_for(shown, reply)
    if trouble is not None:
        raise trouble
    if reply.status != 200:
        code = _error_code(body)
        raise TokenVerificationFailed(
            shown, kind, reply.status, code,
            "the new token was refused by its own instance; it was not written",
        )
    return ProbeResult(kind, reply.status, round(time.monotonic() - started, 4))


def _error_code(body: bytes) -> str | None:
    """Salesforce's error code: `[{"errorCode": ...}]` (REST) or `{"error": ...}` (OAuth)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]
    if not isinstance(data, dict):
        return None
    code = data.get("errorCode", data.get("error"))
    return sanitize_remote(code, ERROR_CODE_CHARS) if isinstance(code, str) else None
