"""Issue 15, item 10 (pure logic): the one place remote text is made printable and bounded."""

from __future__ import annotations

from rotator.errors import EndpointProtocolError, RotatorError, TokenRejected
from rotator.sanitize import clean_text, sanitize_remote


def test_sanitize_remote_caps_and_escapes() -> None:
    assert sanitize_remote("plain") == "plain"
    assert sanitize_remote("\x1b[31mred\x07") == "\\x1b[31mred\\x07"
    assert sanitize_remote("a\u202eb\u200bc") == "a\\u202eb\\u200bc"  # bidi override, zero width
    long = sanitize_remote("x" * 900_000)
    assert len(long) == 101 and long.endswith("…")
    escaped = sanitize_remote("\x1b" * 500)  # escaping must not blow the cap either
    assert len(escaped) <= 101


def test_diagnostics_escape_redact_and_cap() -> None:
    error = RotatorError("boom \x1b[2J " + "y" * 5000, hint="password=hunter2hunter2")
    text = error.diagnostics()
    assert "\x1b" not in text and "\\x1b[2J" in text
    assert len(text) <= 1000
    secret = RotatorError("endpoint said access_token=abcdefghijklmnop ok")
    assert "abcdefghijklmnop" not in secret.diagnostics()


def test_token_rejected_shows_the_remote_words_capped() -> None:
    rejected = TokenRejected("https://x/token", "invalid_grant\x1b[0m", "\x1b]0;t\x07" + "d" * 1000)
    text = rejected.diagnostics()
    assert "\x1b" not in text and "\x07" not in text and len(text) < 400
    assert rejected.description.startswith("\x1b]0;t")  # kept raw for the retry policy's matching


def test_newlines_become_spaces_not_escapes() -> None:
    assert EndpointProtocolError("u", "a\nb\tc").diagnostics() == "u: a b c"
    assert clean_text("tab\there") == "tab\\x09here"
