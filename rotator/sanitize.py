"""Text from the network, made safe to print: bounded, one line, no terminal control codes.

An endpoint's `error_description`, a returned `instance_url`, a store's error message: each
reaches audit lines, `rotator status`, systemd's STATUS=, /readyz and state.json. A 900 KB
value must not become a 900 KB line, and an ANSI escape must not reach an operator's terminal.
`sanitize_remote` is applied where remote text enters an error; `clean_text` (controls only)
runs again over every diagnosis in RotatorError.diagnostics(), the one exit all of them share.
"""

from __future__ import annotations

import re

REMOTE_LIMIT = 100
# C0 controls (ESC among them), DEL, C1 controls, and the Unicode format characters that
# reorder or hide text on a terminal (bidi overrides and isolates, line/paragraph separators,
# zero-width characters, BOM).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean_text(text: str) -> str:
    """Every control or format character replaced by a visible escape (ESC -> \\x1b)."""
    return _CONTROL.sub(_escape, text)


def sanitize_remote(value: object, limit: int = REMOTE_LIMIT) -> str:
    """`value` as at most `limit` printable characters (plus '…' when cut)."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    shown = clean_text(text[:limit])
    if len(shown) > limit:
        shown, cut = shown[:limit], True
    return shown + "…" if cut else shown


def cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
