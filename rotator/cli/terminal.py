"""What a person at a terminal sees: whether a stream is one, colour, aligned tables.

Colour only on a terminal, and never with NO_COLOR set (https://no-color.org) or TERM=dumb.
Every cell is made printable by the caller (rotator.sanitize) before it gets here: a table
must not carry an escape sequence that came from a store or an endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TextIO

RED, YELLOW, GREEN, DIM, BOLD = "31", "33", "32", "2", "1"


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def colour_wanted(stream: TextIO) -> bool:
    return is_terminal(stream) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def paint(text: str, style: str | None, on: bool) -> str:
    return f"\x1b[{style}m{text}\x1b[0m" if on and style and text else text


Cell = tuple[str, str | None]  # text, style


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], *, colour: bool) -> str:
    """Columns aligned on the plain text (the escape codes go around the padded cell)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(text)) for w, (text, _) in zip(widths, row, strict=True)]
    last = len(headers) - 1
    lines = []
    for row in [[(h, BOLD) for h in headers], *rows]:
        cells = [paint(text.ljust(w) if i < last else text, style, colour)
                 for i, ((text, style), w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
