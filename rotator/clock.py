"""One aware UTC clock for the whole process; tests replace it with an offset."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

# A clock is anything that returns epoch seconds. Using time.time() (not a naive
# utcnow() + mktime round trip) is what keeps `exp` right in every time zone.
Clock = Callable[[], float]


def utc_now(clock: Clock = time.time) -> datetime:
    return datetime.fromtimestamp(clock(), tz=UTC)


def rfc3339(moment: datetime) -> str:
    """`2026-11-28T12:00:00Z` — seconds precision, always UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment.astimezone(UTC)
