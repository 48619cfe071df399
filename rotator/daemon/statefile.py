"""`<state_dir>/state.json`: what the daemon knows, for `rotator status` (rotator.cli.status reads it).

    {"version": 1, "pid": ..., "updated_at": "...Z",
     "credentials": {NAME: {"next_run", "last_error", "last_success", "consecutive_failures",
                            "last_result", "permanent_error", "recent_requests"}}}

Written atomically (temp file, fsync, rename) with mode 0600: a reader never sees half a file.
`recent_requests` (epoch seconds of the token requests of the last hour) lets a restarted
daemon keep honouring max_requests_per_hour. One line per credential, streamed: the file of a
fleet at 1,800 requests an hour per credential holds hundreds of thousands of times, and
encoding it in one piece (indented JSON is encoded in Python, not C) cost a large share of a
core and tens of MB at every write.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from rotator.fsutil import make_private_dirs

STATE_FILE = "state.json"
VERSION = 1


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def write_state(state_dir: Path, data: dict[str, Any]) -> None:
    """Replace state.json atomically; raises OSError (the caller decides how loud to be).
    `data["credentials"]`: a dict, or (name, entry) pairs, written as they come."""
    make_private_dirs(state_dir)
    target = state_path(state_dir)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            _dump({"version": VERSION, **data}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _dump(data: dict[str, Any], handle: TextIO) -> None:
    """The state as JSON: the top-level fields, then one line per credential."""
    credentials = data.get("credentials") or {}
    pairs: Iterable[tuple[str, Any]] = (
        credentials.items() if isinstance(credentials, dict) else credentials
    )
    head = {k: v for k, v in data.items() if k != "credentials"}
    handle.write(json.dumps(head, sort_keys=True)[:-1] + (", " if head else "") + '"credentials": {')
    separator = "\n "
    for name, entry in pairs:
        handle.write(f"{separator}{json.dumps(name)}: {json.dumps(entry, sort_keys=True)}")
        separator = ",\n "
    handle.write("\n}}\n")


def read_recent_requests(state_dir: Path | None) -> dict[str, list[float]]:
    """Per credential, the request times an earlier daemon recorded; {} when there are none."""
    if state_dir is None:
        return {}
    try:
        data = json.loads(state_path(state_dir).read_text(encoding="utf-8"))
        creds = data["credentials"]
        return {
            name: [float(t) for t in entry.get("recent_requests", []) if isinstance(t, int | float)]
            for name, entry in creds.items()
            if isinstance(entry, dict)
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
