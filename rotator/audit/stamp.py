"""Who wrote an audit line and when: shared by the pipeline and the audit file's anchors."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

from rotator import __version__

_HOST = socket.gethostname()
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def actor() -> dict[str, Any]:
    """Who wrote the line: host, pid (read per call: forks), rotator version."""
    return {"host": _HOST, "pid": os.getpid(), "version": __version__}


def timestamp() -> str:
    """Now as RFC 3339 UTC with microseconds: the `ts` of every line."""
    return datetime.now(tz=UTC).strftime(TS_FORMAT)
