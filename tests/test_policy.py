"""The daemon's pure decisions: when a token is due, how long to back off, how often to ask."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rotator import policy
from rotator.errors import (
    EndpointProtocolError,
    EndpointUnavailable,
    InternalError,
    KeyMaterialError,
    RecordError,
    StoreAccessDenied,
    StoreAuthError,
    StoreConflict,
    StoreUnavailable,
    TokenRejected,
)
from rotator.records import TokenRecord

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
URL = "https://login.salesforce.com/services/oauth2/token"


def token(age: float, *, expires_in: float | None = None, key: str = "k" * 64) -> TokenRecord:
    return TokenRecord(
        access_token="00Dtest!not-a-real-token-value", instance_url="https://x.my.salesforce.com",
        token_type="Bearer", scope="api", id=None, issued_at=NOW - timedelta(seconds=age),
        expires_at=NOW + timedelta(seconds=expires_in) if expires_in is not None else None,
        credential="sf", key_sha256=key,
    )


# ---------------------------------------------------------------------------- token_due / due_at


@pytest.mark.parametrize(
    ("tok", "kwargs", "due", "words"),
    [
        (None, {}, True, "no token"),
        (token(60), {}, False, "fresh"),
        (token(1620), {}, True, "old"),  # every 30m, margin 3m: due from 27m
        (token(1619), {}, False, "fresh"),
        (token(-600), {}, True, "future"),
        (token(60, expires_in=120), {}, True, "expire"),
        (token(60), {"key_sha256": "z" * 64}, True, "signing key changed"),
    ],
)
def test_token_due_cases(tok, kwargs, due, words) -> None:
    """token_due: missing, stale, future-dated, expiring and wrong-key tokens are due; a fresh one is not."""
    decision = policy.token_due(tok, every=1800, jitter=60, now=NOW, **kwargs)
    assert decision.due is due
    assert words in decision.reason


@pytest.mark.parametrize("expires_in", [None, 600.0, 7200.0])
def test_due_at_is_where_token_due_flips(expires_in) -> None:
    """due_at names the first moment token_due says yes, with and without an expiry."""
    tok = token(0, expires_in=expires_in)
    at = policy.due_at(tok, every=1800, jitter=60)
    before = policy.token_due(tok, every=1800, jitter=60, now=at - timedelta(seconds=1))
    after = policy.token_due(tok, every=1800, jitter=60, now=at)
    assert not before.due and after.due
    assert at > tok.issued_at


# ---------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    "error",
    [
        EndpointUnavailable(URL, "server error (HTTP 503)", status=503),
        EndpointUnavailable(URL, "rate limited (HTTP 429)", status=429, retry_after=5),
        EndpointUnavailable(URL, "no reply within 20s"),
        EndpointUnavailable(URL, "connection failed (connection reset)"),
        EndpointProtocolError(URL, "HTTP 503 reply is not JSON (text/html)"),
        StoreUnavailable("vault", "sf/token", "Vault is sealed"),
        StoreUnavailable("aws", "sf/token", "throttled", retry_after=2),
        StoreAuthError("vault", "", "login refused"),
        StoreConflict("local", "sf/token", "changed since read"),
    ],
)
def test_retryable_errors(error) -> None:
    """5xx, 429, timeouts, resets, HTML pages, throttling, sealed Vault and CAS races retry soon."""
    assert policy.is_retryable(error)
    retry = policy.retry_after_failure(error, attempt=1, retry_min=10, retry_max=900, rand=0.5)
    assert not retry.permanent and retry.delay < 900


@pytest.mark.parametrize(
    "error",
    [
        TokenRejected(URL, "invalid_grant", "invalid assertion"),
        TokenRejected(URL, "invalid_client_id", "client identifier invalid"),
        StoreAccessDenied("vault", "sf/token", "permission denied"),
        KeyMaterialError("key does not match the certificate"),
        RecordError("local:sf/key", "key record is not a JSON object"),
        InternalError(TypeError("boom")),
        ValueError("not even a RotatorError"),
    ],
)
def test_permanent_errors_retry_slowly(error) -> None:
    """Rejections, access denied, bad keys, bad records and bugs are not hammered: retry_max."""
    assert not policy.is_retryable(error)
    for attempt in (1, 2, 10):
        retry = policy.retry_after_failure(error, attempt=attempt, retry_min=10, retry_max=900, rand=0.0)
        assert retry.permanent and retry.delay == 900


# ---------------------------------------------------------------------------- backoff


def test_backoff_bounds_grow_then_cap() -> None:
    """Full jitter: attempt n lies in [retry_min, min(retry_max, retry_min * 2**n)], then caps."""
    for attempt, ceiling in ((1, 20), (2, 40), (3, 80), (5, 320), (6, 640), (7, 900), (50, 900)):
        low = policy.backoff_delay(attempt, retry_min=10, retry_max=900, rand=0.0)
        high = policy.backoff_delay(attempt, retry_min=10, retry_max=900, rand=0.999999)
        assert low == 10
        assert high == pytest.approx(ceiling, rel=1e-4)


def test_backoff_is_jittered_across_its_range() -> None:
    """Different random draws give different delays spread over the whole window."""
    delays = [policy.backoff_delay(4, retry_min=1, retry_max=60, rand=r / 10) for r in range(10)]
    assert delays == sorted(delays) and len(set(delays)) == 10
    assert delays[0] == 1 and 14 < delays[-1] < 16


def test_backoff_survives_absurd_attempts_and_rand() -> None:
    """A huge failure count or an out-of-range random number stays within [retry_min, retry_max]."""
    assert policy.backoff_delay(10_000, retry_min=1, retry_max=30, rand=2.0) == 30
    assert policy.backoff_delay(0, retry_min=1, retry_max=30, rand=-1.0) == 1


def test_retry_after_is_honoured_when_longer() -> None:
    """A 429's Retry-After wins over a shorter backoff, even past retry_max; a shorter one does not."""
    slow = EndpointUnavailable(URL, "rate limited (HTTP 429)", status=429, retry_after=1200)
    retry = policy.retry_after_failure(slow, attempt=1, retry_min=10, retry_max=900, rand=0.0)
    assert retry.delay == 1200 and "asked" in retry.reason
    quick = EndpointUnavailable(URL, "rate limited (HTTP 429)", status=429, retry_after=1)
    retry = policy.retry_after_failure(quick, attempt=3, retry_min=10, retry_max=900, rand=0.5)
    assert retry.delay == policy.backoff_delay(3, retry_min=10, retry_max=900, rand=0.5)
    throttled = StoreUnavailable("aws", "sf/token", "throttled", retry_after=45)
    assert policy.retry_after_failure(throttled, attempt=1, retry_min=10, retry_max=900,
                                      rand=0.0).delay == 45


# ---------------------------------------------------------------------------- per-hour cap


def test_request_cap_allows_up_to_the_limit() -> None:
    """Below the cap a request goes at once; requests older than the window do not count."""
    now = 10_000.0
    assert policy.request_wait([], now=now, limit=3) == 0
    assert policy.request_wait([now - 10, now - 5], now=now, limit=3) == 0
    old = [now - 4000, now - 3900, now - 3700]
    assert policy.request_wait(old, now=now, limit=3) == 0


def test_request_cap_waits_for_the_oldest_to_leave_the_window() -> None:
    """At the cap, the wait ends when the oldest counted request is an hour old (sliding window)."""
    now = 10_000.0
    history = [now - 3000, now - 100, now - 50]
    assert policy.request_wait(history, now=now, limit=3) == pytest.approx(600)
    assert policy.request_wait(history, now=now + 600, limit=3) == 0
    assert policy.request_wait([*history, now - 1], now=now, limit=3) == pytest.approx(3500)


def test_request_cap_bounds_a_storm() -> None:
    """However often a caller asks, at most `limit` requests fit in any one-hour window."""
    sent: list[float] = []
    now = 0.0
    while now < 7200:
        if policy.request_wait(sent, now=now, limit=60) == 0:
            sent.append(now)
        now += 1.0
    for start in range(0, 3600, 60):
        assert sum(1 for t in sent if start <= t < start + 3600) <= 60
    assert len(sent) == 120


def test_login_rate_exceeded_waits_an_hour() -> None:
    """LOGIN_RATE_EXCEEDED blocks an org for about an hour: the next try waits at least that."""
    from rotator.errors import TokenRejected
    from rotator.policy import retry_after_failure

    error = TokenRejected("u", "invalid_grant", "LOGIN_RATE_EXCEEDED")
    retry = retry_after_failure(error, attempt=1, retry_min=10, retry_max=900, rand=0.5)
    assert retry.delay >= 3600
    other = TokenRejected("u", "invalid_grant", "invalid assertion")
    assert retry_after_failure(other, attempt=1, retry_min=10, retry_max=900, rand=0.5).delay == 900


# ---------------------------------------------------------------------------- what each decision says
# The reasons are what `rotator rotate`, the start-up plan and rotation.failed events show an
# operator; each is asserted whole, and each boundary from both sides.


@pytest.mark.parametrize(
    ("tok", "kwargs", "reason"),
    [
        (None, {}, "no token in the store"),
        (token(60), {}, "token is 60s old, fresh until 1620s"),
        (token(1620), {}, "token is 1620s old (every 1800s)"),
        (token(-600), {}, "token issued in the future (clock skew?)"),
        (token(60, expires_in=120), {}, "token is about to expire"),
        (token(60), {"key_sha256": "z" * 64}, "the signing key changed since the token was minted"),
    ],
)
def test_token_due_reasons(tok, kwargs, reason) -> None:
    assert policy.token_due(tok, every=1800, jitter=60, now=NOW, **kwargs).reason == reason


def test_clock_skew_tolerance_is_exactly_five_minutes() -> None:
    """A token stamped up to 300 s in the future is a clock difference, not a broken token."""
    at_edge = policy.token_due(token(-300), every=1800, jitter=60, now=NOW)
    assert not at_edge.due and at_edge.reason == "token is -300s old, fresh until 1620s"
    past_edge = policy.token_due(token(-301), every=1800, jitter=60, now=NOW)
    assert past_edge.due and past_edge.reason == "token issued in the future (clock skew?)"
    just_past = policy.token_due(token(-300.5), every=1800, jitter=60, now=NOW)
    assert just_past.due


def test_refresh_deadline_is_two_intervals_after_issue() -> None:
    """/readyz turns not-ready one whole interval after the token should have been refreshed."""
    tok = token(0)
    assert policy.refresh_deadline(tok, every=1800) == NOW + timedelta(seconds=3600)
    assert policy.refresh_deadline(token(100), every=60) == NOW - timedelta(seconds=100) + timedelta(
        seconds=120)


def test_refresh_deadline_never_passes_the_token_expiry() -> None:
    """A token that expires before 2 x every is not ready once it has expired."""
    short = token(0, expires_in=1000)
    assert policy.refresh_deadline(short, every=1800) == NOW + timedelta(seconds=1000)
    long = token(0, expires_in=7200)
    assert policy.refresh_deadline(long, every=1800) == NOW + timedelta(seconds=3600)
    exact = token(0, expires_in=3600)
    assert policy.refresh_deadline(exact, every=1800) == NOW + timedelta(seconds=3600)


def test_retry_after_retry_is_not_permanent() -> None:
    """A 429 or throttled store that names its wait is retried at that wait, as a transient
    failure (a permanent one would be reported as broken and retried only every retry_max)."""
    slow = EndpointUnavailable(URL, "rate limited (HTTP 429)", status=429, retry_after=1200)
    retry = policy.retry_after_failure(slow, attempt=1, retry_min=10, retry_max=900, rand=0.0)
    assert retry == policy.Retry(1200.0, False, "the server asked to retry after 1200s")
    throttled = StoreUnavailable("aws", "sf/token", "throttled", retry_after=2.5)
    retry = policy.retry_after_failure(throttled, attempt=1, retry_min=1, retry_max=900, rand=0.0)
    assert retry == policy.Retry(2.5, False, "the server asked to retry after 2.5s")


def test_retry_after_equal_to_the_backoff_is_plain_backoff() -> None:
    """Retry-After only wins when it asks for longer than the backoff would wait anyway."""
    error = EndpointUnavailable(URL, "rate limited (HTTP 429)", status=429, retry_after=10)
    retry = policy.retry_after_failure(error, attempt=2, retry_min=10, retry_max=900, rand=0.0)
    assert retry == policy.Retry(10.0, False, "retryable error: backing off (attempt 2)")


def test_backoff_retry_is_not_permanent_and_says_which_attempt() -> None:
    error = EndpointUnavailable(URL, "server error (HTTP 503)", status=503)
    retry = policy.retry_after_failure(error, attempt=3, retry_min=10, retry_max=900, rand=0.0)
    assert retry == policy.Retry(10.0, False, "retryable error: backing off (attempt 3)")


def test_permanent_retry_says_so() -> None:
    error = TokenRejected(URL, "invalid_grant", "invalid assertion")
    retry = policy.retry_after_failure(error, attempt=1, retry_min=10, retry_max=900, rand=0.0)
    assert retry == policy.Retry(900, True, "permanent error: retrying slowly (retry_max)")


def test_login_rate_exceeded_is_permanent_for_the_hour() -> None:
    error = TokenRejected("u", "invalid_grant", "LOGIN_RATE_EXCEEDED")
    retry = policy.retry_after_failure(error, attempt=1, retry_min=10, retry_max=900, rand=0.5)
    assert retry == policy.Retry(3600.0, True, "the org's login rate limit is exhausted: waiting an hour")
    longer = policy.retry_after_failure(error, attempt=1, retry_min=10, retry_max=7200, rand=0.5)
    assert longer.delay == 7200


def test_request_cap_wait_can_be_under_a_second() -> None:
    """The wait is exactly until the oldest counted request leaves the window, however short."""
    now = 10_000.0
    assert policy.request_wait([now - 3599.5], now=now, limit=1) == pytest.approx(0.5)
    assert policy.request_wait([now - 3599.5, now - 1], now=now, limit=2) == pytest.approx(0.5)
