"""What a secret looks like: the patterns and field names that redaction masks.

The bottom of the import graph (stdlib only), so that errors.py can redact a diagnosis and
the audit pipeline can redact an event with the same rules.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "SECRET_FIELDS", "is_secret_field", "redact_text"]

# What a secret looks like, so that one that slipped into a message is masked anyway.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Any PEM block (a truncated one to the end of the text): keys above all, but a log line
    # should carry a certificate's fingerprint and serial, not its body.
    (re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)", re.S),
     r"[REDACTED PEM \1]"),
    # Authorization / X-Vault-Token headers, whatever the scheme (Bearer, OAuth, Basic, ...).
    (re.compile(r"(?i)\b(authorization|proxy-authorization|x-vault-token|x-amz-security-token)"
                r"(\"?\s*[:=]\s*\"?)(?:(?:bearer|oauth|basic|token)\s+)?[^\s\",}]+"),
     r"\1\2[REDACTED]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "[REDACTED JWT]"),
    (re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{10,}"), "[REDACTED VAULT TOKEN]"),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), "[REDACTED AWS KEY ID]"),
    (re.compile(r"\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9._-]{20,}"), "[REDACTED SESSION ID]"),
    (re.compile(r"(?i)\b(bearer|oauth)\s+[A-Za-z0-9._~+/!-]{16,}=*"), r"\1 [REDACTED]"),
    # name=value / "name": "value" for secret-named fields inside free text (form bodies,
    # query strings, a dict's repr in an exception message).
    (re.compile(r"(?i)\b(access_token|refresh_token|client_secret|secret_id|password|passphrase"
                r"|aws_secret_access_key|aws_session_token|assertion)(['\"]?\s*[:=]\s*['\"]?)"
                r"(?!\[REDACTED)[^\s'\"&,}]+"),
     r"\1\2[REDACTED]"),
)
# Field names whose values are never logged, whatever they look like (compared lowercase,
# with "-" read as "_", so an `Authorization` or `X-Vault-Token` header key counts).
SECRET_FIELDS = frozenset({
    "access_token", "refresh_token", "private_key", "passphrase", "assertion", "token",
    "secret_id", "client_secret", "client_token", "vault_token", "x_vault_token",
    "authorization", "aws_secret_access_key", "secret_access_key", "aws_session_token",
    "password", "jwt", "session_id", "sid", "hmac_key",
    "pending_private_key", "previous_private_key", "pending_passphrase", "previous_passphrase",
})
REDACTED = "[REDACTED]"


# Every pattern above needs one of these literals; text without any of them is returned as is
# (most audit values are names, paths and hex fingerprints), which keeps redaction cheap.
_TRIGGER = re.compile(
    r"(?i)-----BEGIN|authorization|x-vault-token|x-amz-security-token|eyJ|hv[sbr]\.|AKIA|ASIA|00D"
    r"|bearer|oauth|access_token|refresh_token|client_secret|secret_id|password|passphrase"
    r"|aws_secret_access_key|aws_session_token|assertion"
)
# The same literals, lowercase, for ASCII text: searching the lowercased text for them is
# about five times faster than the case-insensitive alternation. Only ASCII text takes this
# path: for it, (?i) on ASCII literals means exactly "the lowercased text contains the
# lowercased literal" (non-ASCII text can match under Unicode case folding, e.g. U+017F for
# "s", so it keeps the regex). tests/test_redaction_fastpath.py pins the equivalence.
_TRIGGER_LITERALS = (
    "-----begin", "authorization", "x-vault-token", "x-amz-security-token", "eyj", "hvs.", "hvb.",
    "hvr.", "akia", "asia", "00d", "bearer", "oauth", "access_token", "refresh_token",
    "client_secret", "secret_id", "password", "passphrase", "aws_secret_access_key",
    "aws_session_token", "assertion",
)
_SHORTEST_MATCH = 10  # "password=x"
_TRIGGER_LOWER = re.compile("|".join(re.escape(literal) for literal in _TRIGGER_LITERALS))


def _triggered(text: str) -> bool:
    if text.isascii():
        return _TRIGGER_LOWER.search(text.lower()) is not None
    return _TRIGGER.search(text) is not None


def redact_text(text: str) -> str:
    """Mask everything in `text` that looks like a secret (see _PATTERNS)."""
    if len(text) < _SHORTEST_MATCH or not _triggered(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_secret_names: dict[str, bool] = {}  # field name -> secret? (names come from code: few)


def is_secret_field(name: object) -> bool:
    if not isinstance(name, str):
        return False
    known = _secret_names.get(name)
    if known is None:
        known = name.lower().replace("-", "_") in SECRET_FIELDS
        if len(_secret_names) < 4096:  # remote text can be a key (a reply's dict): bounded
            _secret_names[name] = known
    return known
