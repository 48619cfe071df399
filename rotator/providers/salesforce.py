"""Salesforce's OAuth 2.0 JWT bearer flow (see shared SALESFORCE.md).

Each documented error gets its own remediation hint: the person reading the status
line should know what to change in the connected app or the config.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rotator.config import CredentialConfig
from rotator.errors import EndpointProtocolError
from rotator.providers.base import TokenResponse, check_plain_fields, exchange_assertion
from rotator.providers.hosts import check_returned_url
from rotator.providers.lifetime import token_expiry
from rotator.records import MAX_YEAR

MAX_TOKEN_CHARS = 8192

# (error, error_description) -> what to do. Descriptions compared case-insensitively.
HINTS: dict[tuple[str, str], str] = {
    ("invalid_grant", "invalid assertion"): (
        "the signature does not verify: the connected app does not hold the certificate of the "
        "key that signed (key_sha256 in the audit line); upload it — `rotator cert show NAME --pem`"
    ),
    ("invalid_grant", "audience is invalid"): (
        "aud must be https://login.salesforce.com (production), https://test.salesforce.com "
        "(sandbox) or the Experience Cloud site URL; set login_url (or audience)"
    ),
    ("invalid_grant", "expired authorization code"): (
        "exp is already past for Salesforce: this host's clock is off — check NTP/chrony"
    ),
    ("invalid_grant", "user hasn't approved this consumer"): (
        "pre-authorize the user: connected app policy 'Admin approved users are pre-authorized' "
        "plus the user's profile or permission set; check username (sub) and that login_url "
        "is the user's org (production vs sandbox)"
    ),
    ("invalid_client_id", "client identifier invalid"): (
        "client_id (iss) must be the connected app's consumer key"
    ),
    ("invalid_app_access", "user is not admin approved to access this app"): (
        "set the connected app's Permitted Users to 'Admin approved users are pre-authorized' "
        "and assign the user's profile or permission set"
    ),
    ("unsupported_grant_type", "grant type not supported"): (
        "the endpoint does not take the JWT bearer grant; check token_url"
    ),
}
RATE_LIMIT_HINT = (
    "the org's login rate limit (about 3,600 an hour) is exhausted and logins are blocked for "
    "about an hour; rotator slows down — find what else logs in so often"
)


def hint_for(error: str, description: str) -> str | None:
    if "login_rate_exceeded" in description.lower() or "rate" in error.lower():
        return RATE_LIMIT_HINT
    hint = HINTS.get((error, description.strip().lower()))
    if hint is None:
        for (code, _), text in HINTS.items():
            if code == error and error != "invalid_grant":
                return text
    return hint


class SalesforceProvider:
    def __init__(self, name: str, config: CredentialConfig) -> None:
        self.name = name
        self.config = config
        self.token_url = config.effective_token_url
        self.audience = config.effective_audience
        self.timeout = config.timeout

    def claims(self, now: float) -> dict[str, Any]:
        issued = int(now)
        return {
            "iss": self.config.client_id,
            "sub": self.config.username,
            "aud": self.audience,
            "iat": issued,
            "exp": issued + int(self.config.assertion_lifetime),
        }

    def exchange(self, assertion: str) -> TokenResponse:
        hosts = self.config.instance_hosts
        timeout = self.config.session_timeout
        return exchange_assertion(
            self.token_url, assertion, timeout=self.timeout, hint_for=hint_for,
            parse_success=lambda url, data: parse_success(url, data, instance_hosts=hosts,
                                                          session_timeout=timeout),
        )


def parse_success(
    url: str, data: dict[str, Any], *, instance_hosts: tuple[str, ...] = (),
    session_timeout: float | None = None,
) -> TokenResponse:
    """A 200 reply as a TokenResponse; instance_url and id must name a Salesforce host (or one in
    `instance_hosts`), else the reply is refused and the stored token stays. expires_at: a JWT
    access token's `exp`, else issued_at + session_timeout (an estimate), else None."""
    token = data.get("access_token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise EndpointProtocolError(url, "token response has no usable access_token")
    if data.get("instance_url") is None:
        raise EndpointProtocolError(url, "token response has no instance_url")
    for name in ("scope", "id", "token_type"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise EndpointProtocolError(url, f"token response field {name} is not a string")
    check_plain_fields(url, data)
    instance_url = check_returned_url(
        url, "instance_url", data["instance_url"], allowed=instance_hosts, salesforce=True
    )
    identity = data.get("id")
    if identity is not None:
        identity = check_returned_url(
            url, "id", identity, allowed=instance_hosts, salesforce=True, path_prefix="/id/"
        )
    issued_at = _issued_at(data.get("issued_at"))
    return TokenResponse(
        access_token=token,
        token_type=data.get("token_type") or "Bearer",
        issued_at=issued_at,
        # Salesforce gives no lifetime: rotator.providers.lifetime
        expires_at=token_expiry(token, issued_at=issued_at, session_timeout=session_timeout),
        instance_url=instance_url,
        scope=data.get("scope"),
        id=identity,
    )


def _issued_at(value: Any) -> datetime:
    """`issued_at` is epoch milliseconds as a string; fall back to now if absent or odd."""
    try:
        millis = int(str(value))
        moment = datetime.fromtimestamp(millis / 1000, tz=UTC)
        if 2000 <= moment.year <= MAX_YEAR:
            return moment
    except (TypeError, ValueError, OverflowError, OSError):
        pass
    return datetime.now(UTC)
