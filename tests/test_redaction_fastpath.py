"""The redaction fast path (skip text without any trigger literal) never changes the result."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rotator import redaction as audit

PIECES = ["-----BEGIN RSA PRIVATE KEY-----\nMIIE\n", "eyJhbGciOi.eyJzdWIiOi.sig", "hvs.CAESIabcdefghijk",
          "AKIAABCDEFGHIJKLMNOP", "00D000000000001!AQ4AQ" + "x" * 30, "Bearer abcdefghijklmnopq",
          "password=hunter22", "authorization: Basic abc", " ", "a", "=", "\n"]


def full_redaction(text: str) -> str:
    for pattern, replacement in audit._PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=8))
def test_fast_path_equals_full_redaction(parts: list[str]) -> None:
    """For any text, redact_text gives exactly what running every pattern gives."""
    text = "".join(parts)
    assert audit.redact_text(text) == full_redaction(text)


TRIGGER_PIECES = ["BeGiN", "-----", "AUTHORIZATION", "x-Vault-Token", "EYj", "HVS.", "hvR.", "aKiA",
                  "00d", "OAuth", "Access_Token", "PASSPHRASE", "assertioN", "\u017f", "\u212a", "."]


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.lists(st.one_of(st.sampled_from(TRIGGER_PIECES + PIECES), st.text(max_size=6)), max_size=8))
def test_the_literal_trigger_equals_the_regex(parts: list[str]) -> None:
    """The ASCII substring check says "maybe a secret" exactly when the trigger regex does."""
    text = "".join(parts)
    assert audit._triggered(text) == (audit._TRIGGER.search(text) is not None)
