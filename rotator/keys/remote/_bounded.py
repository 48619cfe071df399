"""Bounded HTTP replies for a requests session (what hvac uses underneath).

A response hook runs before requests reads the body, so it can read at most ``max_bytes`` and
stop at a wall-clock deadline: a server that answers a signing call with megabytes, or drips
its reply a byte every few seconds (each read within the socket timeout), fails fast instead of
holding a mint — and the daemon's lock — for hours.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import requests

CHUNK = 16 * 1024


class ReplyTooLarge(requests.exceptions.RequestException):
    """The reply was longer than the bound (raised from the hook; callers convert it)."""


class ReplyTooSlow(requests.exceptions.Timeout):
    """The reply did not finish within the wall-clock bound."""


def bound_replies(
    session: requests.Session, *, max_bytes: int, max_seconds: float, path_prefix: str | None = None
) -> None:
    """Make every reply on `session` at most `max_bytes` long and `max_seconds` in the reading;
    with `path_prefix`, only replies to URLs whose path starts with it (a session shared with
    a store keeps the store's own rules for the store's requests)."""

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("stream"):
            return response  # a caller that streams bounds its own reads
        if path_prefix is not None and not urlsplit(response.url or "").path.startswith(path_prefix):
            return response
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            response.close()
            raise ReplyTooLarge(f"reply of {declared} bytes (limit {max_bytes})")
        deadline = time.monotonic() + max_seconds
        parts: list[bytes] = []
        size = 0
        raw = response.raw
        try:
            while True:
                if time.monotonic() > deadline:
                    raise ReplyTooSlow(f"reply not complete after {max_seconds:g} s")
                # read1: returns what is there (at most CHUNK) instead of waiting for a full
                # chunk, so the deadline is checked between small reads of a slow reply.
                chunk = raw.read1(CHUNK, decode_content=True)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise ReplyTooLarge(f"reply longer than {max_bytes} bytes")
                parts.append(chunk)
        except (ReplyTooLarge, ReplyTooSlow):
            response.close()  # never hand a half-read connection back to the pool
            raise
        response._content = b"".join(parts)
        response._content_consumed = True
        return response

    hook._rotator_bound = path_prefix or True  # type: ignore[attr-defined]
    hooks = [h for h in session.hooks.setdefault("response", [])
             if getattr(h, "_rotator_bound", None) != hook._rotator_bound]  # type: ignore[attr-defined]
    session.hooks["response"] = [*hooks, hook]  # one bound per session and prefix, the latest wins
