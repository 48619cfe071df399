"""The audit trail: one structlog pipeline, redaction before rendering, JSON lines.

Every event goes through `emit(event, **fields)`. `bound_contextvars(rotation_id=...)` binds
all lines of one rotation. Redaction runs before any renderer, so a secret that slips into
an event (a PEM block, a JWT, a Vault token, a Salesforce session id) is masked on stdout
and in the audit file alike. Tracebacks are rendered without local variables.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.contextvars import bound_contextvars, merge_contextvars
from structlog.tracebacks import ExceptionDictTransformer

from rotator import __version__

__all__ = ["bound_contextvars", "configure", "emit", "redact_text"]

# What a secret looks like, so that one that slipped into a message is masked anyway.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|$)",
                re.S), "[REDACTED PRIVATE KEY]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "[REDACTED JWT]"),
    (re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{10,}"), "[REDACTED VAULT TOKEN]"),
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "[REDACTED AWS KEY ID]"),
    (re.compile(r"\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9._-]{20,}"), "[REDACTED SESSION ID]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/!-]{16,}=*"), r"\1 [REDACTED]"),
)
# Field names whose values are never logged, whatever they look like.
SECRET_FIELDS = frozenset({
    "access_token", "private_key", "passphrase", "assertion", "token", "secret_id",
    "client_token", "vault_token", "aws_secret_access_key", "password", "jwt",
    "pending_private_key", "previous_private_key", "pending_passphrase", "previous_passphrase",
})


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: ("[REDACTED]" if k in SECRET_FIELDS else _redact_value(v)) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-named fields and secret-looking text everywhere."""
    for key in list(event_dict):
        if key in SECRET_FIELDS:
            event_dict[key] = "[REDACTED]"
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


_ACTOR = {"host": socket.gethostname(), "pid": os.getpid(), "version": __version__}


def add_actor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event_dict.setdefault("actor", {**_ACTOR, "pid": os.getpid()})
    return event_dict


_extra_sinks: list[Any] = []


def shared_processors() -> list[Any]:
    return [
        merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="%Y-%m-%dT%H:%M:%S.%fZ", utc=True, key="ts"),
        add_actor,
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
        redact,
    ]


def configure(*, fmt: str = "json", stream: TextIO | None = None, sinks: list[Any] | None = None) -> None:
    """Set up the pipeline. `sinks` are processors that see each redacted event (the audit file)."""
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    _extra_sinks[:] = sinks or []
    structlog.configure(
        processors=[*shared_processors(), *_extra_sinks, renderer],
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging()


def _route_stdlib_logging() -> None:
    """Libraries log through stdlib logging (APScheduler prints job tracebacks there):
    send their warnings through the same redacting pipeline, and drop their chatter."""
    handler = logging.Handler()

    def _emit(record: logging.LogRecord) -> None:
        # Only the message, never record.exc_info: a dependency's traceback can hold locals.
        structlog.get_logger("rotator").warning(
            "library.log", logger=record.name, message=redact_text(record.getMessage())
        )

    handler.emit = _emit  # type: ignore[method-assign]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def emit(event: str, **fields: Any) -> None:
    """Record one audit event (see docs/audit-events.md for the catalogue)."""
    outcome = fields.pop("level", None)
    logger = structlog.get_logger("rotator")
    if outcome == "warning":
        logger.warning(event, **fields)
    elif outcome == "error":
        logger.error(event, **fields)
    else:
        logger.info(event, **fields)
