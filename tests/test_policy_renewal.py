"""The pure renewal and expiry-warning decisions of rotator.policy (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rotator.policy import expiry_warnings_due, renewal_due

T0 = datetime(2025, 1, 1, tzinfo=UTC)
DAY = 86400.0


def days(n: float) -> timedelta:
    return timedelta(days=n)


def test_default_renewal_at_two_thirds_of_lifetime() -> None:
    """Without renew_before a 90-day certificate renews at day 60, not a second earlier."""
    before = renewal_due(not_before=T0, not_after=T0 + days(90), now=T0 + days(60) - timedelta(seconds=1))
    at = renewal_due(not_before=T0, not_after=T0 + days(90), now=T0 + days(60))
    assert not before.due and at.due
    assert at.at == T0 + days(60)
    assert "2/3" in at.reason


def test_short_certificate_renews_at_half_life() -> None:
    """Under 10 days of lifetime the renewal moves to 1/2, as certbot does."""
    decision = renewal_due(not_before=T0, not_after=T0 + days(6), now=T0 + days(3))
    assert decision.due and decision.at == T0 + days(3)
    assert not renewal_due(not_before=T0, not_after=T0 + days(6), now=T0 + days(2.9)).due


def test_renew_before_overrides_the_fraction() -> None:
    """renew_before = 30d renews a 365-day certificate 30 days before not_after."""
    kwargs = {"not_before": T0, "not_after": T0 + days(365), "renew_before": 30 * DAY}
    assert renewal_due(now=T0 + days(334), **kwargs).due is False
    decision = renewal_due(now=T0 + days(335), **kwargs)
    assert decision.due and decision.at == T0 + days(335)
    assert "renew_before" in decision.reason


def test_renew_before_longer_than_lifetime_is_due_at_once() -> None:
    """A renew_before beyond the whole lifetime means: stage the next key right away."""
    assert renewal_due(not_before=T0, not_after=T0 + days(30), now=T0, renew_before=400 * DAY).due


def test_max_key_age_brings_renewal_forward() -> None:
    """max_key_age (now - not_before) wins when it comes before the lifetime rule."""
    kwargs = {"not_before": T0, "not_after": T0 + days(3650), "max_key_age": 90 * DAY}
    assert not renewal_due(now=T0 + days(89), **kwargs).due
    decision = renewal_due(now=T0 + days(90), **kwargs)
    assert decision.due and decision.at == T0 + days(90)
    assert "max_key_age" in decision.reason


def test_max_key_age_later_than_renewal_changes_nothing() -> None:
    """A max_key_age past the 2/3 point leaves the 2/3 point in charge."""
    decision = renewal_due(not_before=T0, not_after=T0 + days(90), now=T0,
                           max_key_age=365 * DAY)
    assert decision.at == T0 + days(60) and not decision.due


def test_expired_certificate_is_due() -> None:
    """An expired certificate (Salesforce still accepts it) is always due for renewal."""
    assert renewal_due(not_before=T0, not_after=T0 + days(30), now=T0 + days(400)).due


def test_warnings_crossed_largest_first() -> None:
    """At 6.5 days left of a year-long certificate, 30, 14 and 7 are crossed; 3 and 1 are not."""
    due = expiry_warnings_due(not_before=T0, not_after=T0 + days(365), now=T0 + days(358.5),
                              thresholds=(30, 14, 7, 3, 1))
    assert due == (30, 14, 7)


def test_warnings_already_given_are_not_repeated() -> None:
    """Thresholds remembered as warned are left out; the rest still fire."""
    due = expiry_warnings_due(not_before=T0, not_after=T0 + days(365), now=T0 + days(358.5),
                              thresholds=(30, 14, 7, 3, 1), already=frozenset({30, 14}))
    assert due == (7,)


def test_threshold_boundary_is_inclusive() -> None:
    """Exactly 14 days left crosses the 14-day threshold; a second more does not."""
    end = T0 + days(365)
    assert expiry_warnings_due(not_before=T0, not_after=end, now=end - days(14),
                               thresholds=(14,)) == (14,)
    assert expiry_warnings_due(not_before=T0, not_after=end,
                               now=end - days(14) - timedelta(seconds=1), thresholds=(14,)) == ()


def test_threshold_beyond_lifetime_is_skipped() -> None:
    """A 7-day certificate never warns at 30 or 14 days; it does at 3."""
    due = expiry_warnings_due(not_before=T0, not_after=T0 + days(7), now=T0 + days(4.5),
                              thresholds=(30, 14, 7, 3, 1))
    assert due == (3,)


def test_expired_certificate_crosses_every_threshold() -> None:
    """Past not_after every threshold (within the lifetime) is crossed."""
    due = expiry_warnings_due(not_before=T0, not_after=T0 + days(365), now=T0 + days(400),
                              thresholds=(1, 30, 3))
    assert due == (30, 3, 1)


def test_ten_day_certificate_is_not_short() -> None:
    """SHORT_LIFETIME is exclusive: a certificate of exactly 10 days renews at 2/3, a shorter one at 1/2."""
    ten = renewal_due(not_before=T0, not_after=T0 + days(10), now=T0 + days(7))
    assert ten.at == T0 + days(10) * 2 / 3
    assert ten.due and ten.reason == "2/3 of the certificate's lifetime has passed"
    shorter = renewal_due(not_before=T0, not_after=T0 + days(10) - timedelta(seconds=1), now=T0 + days(7))
    assert shorter.at == T0 + (days(10) - timedelta(seconds=1)) / 2
    assert shorter.due and shorter.reason == "1/2 of the certificate's lifetime has passed"


def test_renewal_reasons_name_the_rule() -> None:
    """Each reason says which rule set the time (the operator sees it in key.renewal_due)."""
    ahead = renewal_due(not_before=T0, not_after=T0 + days(90), now=T0 + days(85), renew_before=7 * DAY)
    assert ahead.due and ahead.reason == "the certificate expires within renew_before (7d)"
    aged = renewal_due(not_before=T0, not_after=T0 + days(90), now=T0 + days(31), max_key_age=30 * DAY)
    assert aged.due and aged.reason == "the key is older than max_key_age (30d)"
    assert aged.at == T0 + days(30)
    waiting = renewal_due(not_before=T0, not_after=T0 + days(90), now=T0 + days(1))
    assert not waiting.due and waiting.reason == f"renewal due at {(T0 + days(60)).isoformat()}"


def test_max_key_age_equal_to_the_renewal_time_leaves_the_fraction_in_charge() -> None:
    decision = renewal_due(not_before=T0, not_after=T0 + days(90), now=T0 + days(60), max_key_age=60 * DAY)
    assert decision.at == T0 + days(60)
    assert decision.reason == "2/3 of the certificate's lifetime has passed"


def test_threshold_just_inside_the_lifetime_warns() -> None:
    """A 30-day-and-one-second certificate does warn at 30 days left (the lifetime is longer)."""
    not_after = T0 + days(30) + timedelta(seconds=1)
    assert expiry_warnings_due(not_before=T0, not_after=not_after, now=T0 + timedelta(seconds=1),
                               thresholds=(30,)) == (30,)
    exact = T0 + days(30)
    assert expiry_warnings_due(not_before=T0, not_after=exact, now=T0, thresholds=(30,)) == ()
