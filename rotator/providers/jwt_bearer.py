"""Generic RFC 7523 JWT bearer grant: any token_url, audience, scope and extra claims.

Works for e.g. a Google service account (aud and token_url https://oauth2.googleapis.com/token,
scope as a claim) or any authorization server that takes the jwt-bearer grant.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from rotator.config import CredentialConfig
from rotator.errors import EndpointProtocolError
from rotator.providers.base import TokenResponse, check_plain_fields, exchange_assertion
from rotator.providers.hosts import check_returned_url

MAX_TOKEN_CHARS = 16384
OAUTH_HINTS = {
    "invalid_grant": "the server refused the assertion: check the key registered for client_id, "
    "iss/sub/aud, and this host's clock",
    "invalid_client": "client_id (iss) is not known to the server",
    "unauthorized_client": "the client may not use the jwt-bearer grant; enable it on the server",
    "invalid_scope": "the requested scope is not allowed for this client",
    "unsupported_grant_type": "the server does not support the jwt-bearer grant; check token_url",
}


class JwtBearerProvider:
    def __init__(self, name: str, config: CredentialConfig) -> None:
        self.name = name
        self.config = config
        self.token_url = config.effective_token_url
        self.audience = config.effective_audience
        self.timeout = config.timeout

    def claims(self, now: float) -> dict[str, Any]:
        issued = int(now)
        claims: dict[str, Any] = dict(self.config.extra_claims)
        claims.update(
            iss=self.config.client_id,
            sub=self.config.username or self.config.client_id,
            aud=self.audience,
            iat=issued,
            exp=issued + int(self.config.assertion_lifetime),
            jti=secrets.token_urlsafe(16),  # some servers refuse a replayed assertion
        )
        if self.config.scope:
            claims["scope"] = self.config.scope
        return claims

    def exchange(self, assertion: str) -> TokenResponse:
        hosts = self.config.instance_hosts
        return exchange_assertion(
            self.token_url, assertion, timeout=self.timeout,
            hint_for=lambda error, _description: OAUTH_HINTS.get(error),
            parse_success=lambda url, data: parse_oauth_success(url, data, instance_hosts=hosts),
        )


def parse_oauth_success(
    url: str, data: dict[str, Any], *, instance_hosts: tuple[str, ...] = ()
) -> TokenResponse:
    """instance_url and id are optional for generic servers; when given, the https-or-loopback
    rule (plus `instance_hosts`, when the operator lists any)."""
    token = data.get("access_token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise EndpointProtocolError(url, "token response has no usable access_token")
    check_plain_fields(url, data)
    now = datetime.now(UTC)
    expires_in = data.get("expires_in")
    expires_at = None
    if expires_in is not None:
        try:
            seconds = int(expires_in)
        except (TypeError, ValueError, OverflowError):
            raise EndpointProtocolError(url, "expires_in is not a number") from None
        if not 0 < seconds <= 366 * 86400:
            raise EndpointProtocolError(url, f"expires_in {seconds} is out of range")
        expires_at = now + timedelta(seconds=seconds)
    scope = data.get("scope")
    return TokenResponse(
        access_token=token,
        token_type=str(data.get("token_type") or "Bearer"),
        issued_at=now,
        expires_at=expires_at,
        instance_url=_returned(url, "instance_url", data.get("instance_url"), instance_hosts),
        scope=scope if isinstance(scope, str) else None,
        id=_identity(url, data.get("id"), instance_hosts),
    )


def _identity(url: str, value: Any, hosts: tuple[str, ...]) -> str | None:
    """A generic server's `id` is not standardised: kept only when it is a URL that passes the
    same rule as instance_url (a `javascript:` or non-URL value is dropped, not stored)."""
    if not isinstance(value, str):
        return None
    try:
        return check_returned_url(url, "id", value, allowed=hosts, salesforce=False)
    except EndpointProtocolError:
        return None


def _returned(url: str, field: str, value: Any, hosts: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    return check_returned_url(url, field, value, allowed=hosts, salesforce=False)

