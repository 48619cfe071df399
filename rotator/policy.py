"""Pure decisions: is a token due, how long to back off. No I/O here; unit-tested alone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from rotator.records import TokenRecord

# A token is refreshed a little before `every` has passed, so that a timer or a scheduler
# with jitter never lets it run a whole extra interval.
DUE_MARGIN_FRACTION = 0.1
# Where the endpoint gives a lifetime, keep at least this much of it in hand.
MIN_REMAINING_LIFETIME = timedelta(minutes=5)


@dataclass(frozen=True)
class Due:
    due: bool
    reason: str


def token_due(
    token: TokenRecord | None,
    *,
    every: float,
    jitter: float,
    now: datetime,
    key_sha256: str | None = None,
) -> Due:
    """Whether a credential needs a new token now, and why (for `rotate` and start-up)."""
    if token is None:
        return Due(True, "no token in the store")
    age = token.age(now)
    if age < -300:
        return Due(True, "token issued in the future (clock skew?)")
    margin = max(jitter, every * DUE_MARGIN_FRACTION)
    if age >= every - margin:
        return Due(True, f"token is {int(age)}s old (every {int(every)}s)")
    if token.expires_at is not None and token.expires_at - now <= max(
        MIN_REMAINING_LIFETIME, timedelta(seconds=margin)
    ):
        return Due(True, "token is about to expire")
    if key_sha256 and token.key_sha256 and token.key_sha256 != key_sha256:
        return Due(True, "the signing key changed since the token was minted")
    return Due(False, f"token is {int(age)}s old, fresh until {int(every - margin)}s")


def refresh_deadline(token: TokenRecord, *, every: float) -> datetime:
    """After this the credential is not ready: one whole interval late (readyz, alerts)."""
    deadline = token.issued_at + timedelta(seconds=2 * every)
    if token.expires_at is not None:
        deadline = min(deadline, token.expires_at)
    return deadline
