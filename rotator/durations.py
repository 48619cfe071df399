"""Durations as operators write them: `90s`, `30m`, `12h`, `7d` (and combinations like `1h30m`)."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_MAX_SECONDS = 10 * 365 * 86400.0


def parse_duration(text: str) -> float:
    """Seconds in `text`; raises ValueError with a message fit for an operator."""
    if not isinstance(text, str):
        raise ValueError("expected a duration string such as '90s', '30m', '12h' or '7d'")
    raw = text.strip().lower()
    if not raw:
        raise ValueError("empty duration; write e.g. '30m'")
    pos = 0
    total = 0.0
    for match in _PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or pos == 0:
        raise ValueError(f"{text!r} is not a duration; write e.g. '90s', '30m', '12h' or '7d'")
    if total > _MAX_SECONDS:
        raise ValueError(f"{text!r} is longer than 10 years")
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact spelling, for messages and status output."""
    seconds = round(seconds)
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
