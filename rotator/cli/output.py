"""Terminal output helpers shared by the commands (kept apart from the parser so commands
never import back from it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rotator.errors import InputError
from rotator.hardening import secret_env


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


def read_secret_arg(path: Path | None, env: str) -> str | None:
    """Secrets come from files or the environment, never from argv (visible in /proc)."""
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    return secret_env(env) or None
