"""When a Salesforce access token ends: its own `exp` if it is a JWT, else an estimate.

Salesforce's token response has no `expires_in`. A session ends after the app's (or the
profile's, or the org's) session timeout counted from its *last use*; rotator can only count
from issue, so `issued_at + session_timeout` is an estimate that errs early for a token in use
(docs/salesforce.md "Token lifetime").

External Client Apps can issue access tokens that are themselves JWTs. Their `exp` is a real
end, whatever the use. rotator reads that one claim and nothing else: it does not verify the
signature (it has no reason to trust or distrust the endpoint's key; the token is opaque to
rotator), so the value only ever feeds `expires_at`, bounded to a sane range, and anything odd
about the token makes it count as opaque.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta

# a JWT access token's payload segment is a few hundred characters; refuse to decode more
MAX_PAYLOAD_CHARS = 4096
# an `exp` further than this from issue is not a session's end (Salesforce caps sessions at 24h)
MAX_JWT_LIFETIME = timedelta(days=7)


def jwt_expiry(token: str, *, issued_at: datetime) -> datetime | None:
    """The `exp` of a JWT-shaped token as an aware datetime, or None.

    None unless: three dot-separated segments, a payload of at most MAX_PAYLOAD_CHARS base64url
    characters that decodes to a JSON object, and an integer `exp` after `issued_at` minus a
    minute (clock skew) and at most MAX_JWT_LIFETIME after it."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1] or len(parts[1]) > MAX_PAYLOAD_CHARS:
        return None
    segment = parts[1]
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(claims, dict):
        return None
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        return None
    low = issued_at - timedelta(minutes=1)
    high = issued_at + MAX_JWT_LIFETIME
    if not low.timestamp() < exp <= high.timestamp():
        return None
    return datetime.fromtimestamp(exp, tz=UTC)


def token_expiry(
    token: str, *, issued_at: datetime, session_timeout: float | None
) -> datetime | None:
    """A JWT token's own `exp` if readable (it wins); else issued_at + session_timeout; else None."""
    exact = jwt_expiry(token, issued_at=issued_at)
    if exact is not None:
        return exact
    if session_timeout is None:
        return None
    return issued_at + timedelta(seconds=session_timeout)
