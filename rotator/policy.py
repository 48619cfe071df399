"""Pure decisions: is a token due, how long to back off. No I/O here; unit-tested alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from rotator.errors import RotatorError, StoreConflict, TokenRejected
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


# -- key and certificate lifecycle (see docs/key-rotation.md)

# certbot's and cert-manager's default: renew once 2/3 of the lifetime has passed;
# certificates shorter than SHORT_LIFETIME renew at half-life, as certbot does.
RENEW_FRACTION = 2 / 3
SHORT_LIFETIME = timedelta(days=10)
SHORT_RENEW_FRACTION = 1 / 2


@dataclass(frozen=True)
class Renewal:
    due: bool
    at: datetime
    reason: str


def renewal_due(
    *,
    not_before: datetime,
    not_after: datetime,
    now: datetime,
    renew_before: float | None = None,
    max_key_age: float | None = None,
) -> Renewal:
    """When the next key should be staged: renew_before ahead of expiry if set, else at 2/3 of
    the certificate's lifetime; never later than max_key_age after not_before (the key's age)."""
    lifetime = not_after - not_before
    if renew_before is not None:
        at = not_after - timedelta(seconds=renew_before)
        why = f"the certificate expires within renew_before ({int(renew_before // 86400)}d)"
    else:
        fraction = SHORT_RENEW_FRACTION if lifetime < SHORT_LIFETIME else RENEW_FRACTION
        at = not_before + lifetime * fraction
        share = "1/2" if fraction == SHORT_RENEW_FRACTION else "2/3"
        why = f"{share} of the certificate's lifetime has passed"
    if max_key_age is not None and not_before + timedelta(seconds=max_key_age) < at:
        at = not_before + timedelta(seconds=max_key_age)
        why = f"the key is older than max_key_age ({int(max_key_age // 86400)}d)"
    if now >= at:
        return Renewal(True, at, why)
    return Renewal(False, at, f"renewal due at {at.isoformat()}")


def expiry_warnings_due(
    *,
    not_before: datetime,
    not_after: datetime,
    now: datetime,
    thresholds: tuple[int, ...],
    already: frozenset[int] = frozenset(),
) -> tuple[int, ...]:
    """Thresholds (days left) crossed and not yet warned, largest first.

    A threshold as long as the certificate's whole lifetime is skipped: a 7-day certificate
    says nothing useful at "30 days left".
    """
    days_left = (not_after - now).total_seconds() / 86400
    lifetime_days = (not_after - not_before).total_seconds() / 86400
    crossed = {t for t in thresholds if days_left <= t < lifetime_days and t not in already}
    return tuple(sorted(crossed, reverse=True))


# -- the daemon's failure policy: when to try again, and how often the endpoint may be asked

# The sliding window of the per-credential token-request cap (max_requests_per_hour).
REQUEST_WINDOW_SECONDS = 3600.0


def due_at(token: TokenRecord, *, every: float, jitter: float) -> datetime:
    """The moment `token_due` first says this token is due: when the daemon's next run goes."""
    margin = max(jitter, every * DUE_MARGIN_FRACTION)
    at = token.issued_at + timedelta(seconds=every - margin)
    if token.expires_at is not None:
        at = min(at, token.expires_at - max(MIN_REMAINING_LIFETIME, timedelta(seconds=margin)))
    return at


LOGIN_BLOCK_SECONDS = 3600.0


def is_login_rate_exceeded(error: BaseException) -> bool:
    """Salesforce's LOGIN_RATE_EXCEEDED (about 3,600 logins an hour per org)."""
    return isinstance(error, TokenRejected) and "login_rate_exceeded" in (
        f"{error.error} {error.description}".lower()
    )


def is_retryable(error: BaseException) -> bool:
    """Worth a quick retry: the endpoint or a store is briefly unwell (5xx, 429, timeouts,
    resets, HTML pages, throttling, a sealed Vault), or another writer raced us (StoreConflict).
    Everything else (TokenRejected, StoreAccessDenied, KeyMaterialError, RecordError, bugs) is
    permanent: the same request will fail the same way until someone changes something."""
    if isinstance(error, StoreConflict):
        return True
    return isinstance(error, RotatorError) and error.retryable


def backoff_delay(attempt: int, *, retry_min: float, retry_max: float, rand: float) -> float:
    """Exponential backoff with full jitter, never below retry_min: uniform in
    [retry_min, min(retry_max, retry_min * 2**attempt)]. `attempt` counts failures (1 = first);
    `rand` is a uniform number in [0, 1) (the caller's random source keeps this function pure)."""
    ceiling = min(retry_max, retry_min * 2.0 ** min(max(attempt, 1), 60))
    return retry_min + min(max(rand, 0.0), 1.0) * (ceiling - retry_min)


@dataclass(frozen=True)
class Retry:
    delay: float  # seconds until the next attempt
    permanent: bool
    reason: str


def retry_after_failure(
    error: BaseException, *, attempt: int, retry_min: float, retry_max: float, rand: float
) -> Retry:
    """When to try again after the `attempt`-th consecutive failure with `error`.

    Permanent errors are not hammered: one slow retry every retry_max (someone may fix the
    connected app or the policy meanwhile). Retryable ones back off (`backoff_delay`), and a
    server's Retry-After (429, 503, store throttling) is honoured when it asks for longer.
    """
    if is_login_rate_exceeded(error):
        # Salesforce blocks the org's logins for about an hour: every attempt before then
        # is wasted and may extend the block.
        wait = max(retry_max, LOGIN_BLOCK_SECONDS)
        return Retry(wait, True, "the org's login rate limit is exhausted: waiting an hour")
    if not is_retryable(error):
        return Retry(retry_max, True, "permanent error: retrying slowly (retry_max)")
    delay = backoff_delay(attempt, retry_min=retry_min, retry_max=retry_max, rand=rand)
    asked = getattr(error, "retry_after", None)
    if isinstance(asked, int | float) and asked > delay:
        return Retry(float(asked), False, f"the server asked to retry after {asked:g}s")
    return Retry(delay, False, f"retryable error: backing off (attempt {attempt})")


def request_wait(
    history: Sequence[float], *, now: float, limit: int, window: float = REQUEST_WINDOW_SECONDS
) -> float:
    """Seconds until one more token request fits `limit` requests per sliding `window`
    (0: go ahead). `history` holds the epoch times of earlier requests, oldest first."""
    recent = [moment for moment in history if moment > now - window]
    if len(recent) < limit:
        return 0.0
    return max(0.0, recent[len(recent) - limit] + window - now)
