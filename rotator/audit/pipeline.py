"""The audit trail: one structlog pipeline, redaction before rendering, JSON lines.

Every event goes through `emit(event, **fields)`; the catalogue of names and their fields is
`rotator.audit.events` (docs/audit-events.md). `bound_contextvars(rotation_id=...)` binds all lines
of one rotation. Redaction runs before any renderer and before the audit file, so a secret
that slips into an event (a PEM block, a JWT, a Vault token, a Salesforce session id) is
masked on stdout and in the file alike. Tracebacks are rendered without local variables.

    merge_contextvars -> level -> ts -> actor -> duration -> exception (no locals) -> redact
        -> key order (ts, event, level first) -> [audit file: JSON + hash chain] -> renderer

Tests see exactly what the renderer sees with
`structlog.testing.capture_logs(processors=audit.shared_processors())`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

# structlog, imported without rich: see rotator.audit._lean
from rotator.audit._lean import ExceptionDictTransformer, bound_contextvars, merge_contextvars, structlog
from rotator.audit.stamp import TS_FORMAT, actor

# re-exported: the audit API has always named these
from rotator.redaction import REDACTED, SECRET_FIELDS, is_secret_field, redact_text

if TYPE_CHECKING:
    from rotator.audit.chain import AuditFile
    from rotator.config import DaemonConfig

__all__ = [
    "SECRET_FIELDS",
    "bound_contextvars",
    "configure",
    "emit",
    "redact",
    "redact_text",
    "shared_processors",
    "use_audit_file",
    "use_settings",
    "use_stream",
]

EventDict = MutableMapping[str, Any]



def _redact_value(value: Any) -> Any:
    """A JSON-safe, redacted copy: the renderer never sees an object whose repr could leak."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): (REDACTED if is_secret_field(k) else _redact_value(v)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"  # raw bytes are key material more often than not
    if isinstance(value, Path):
        return str(value)
    return redact_text(str(value))


_PLAIN = (bool, int, float, type(None))


def redact(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secret-named fields and secret-looking text everywhere."""
    for key in list(event_dict):
        value = event_dict[key]
        if is_secret_field(key):
            event_dict[key] = REDACTED
        elif type(value) is str:  # the common case, without _redact_value's dispatch
            event_dict[key] = redact_text(value)
        elif type(value) not in _PLAIN:
            event_dict[key] = _redact_value(value)
    return event_dict


def add_actor(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    event_dict.setdefault("actor", actor())
    return event_dict


_ROTATION_ENDS = frozenset({"rotation.succeeded", "rotation.failed", "rotation.skipped",
                            "rotation.superseded"})
_started: dict[str, float] = {}  # rotation_id -> monotonic start


def add_duration(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Give every rotation's closing event `duration_s`, measured from its rotation.started."""
    rotation_id, event = event_dict.get("rotation_id"), event_dict.get("event")
    if not isinstance(rotation_id, str):
        return event_dict
    if event == "rotation.started":
        if len(_started) > 10_000:  # starts whose end never came (a crash): forget the oldest
            _started.pop(next(iter(_started)), None)
        _started[rotation_id] = time.monotonic()
    elif event in _ROTATION_ENDS:
        began = _started.pop(rotation_id, None)
        if began is not None:
            event_dict.setdefault("duration_s", round(time.monotonic() - began, 4))
    return event_dict


_FIRST_KEYS = ("ts", "event", "level")


def order_keys(_logger: Any, _method: str, event_dict: EventDict) -> dict[str, Any]:
    """Rendered lines start with ts, event and level, for humans reading them."""
    ordered = {key: event_dict[key] for key in _FIRST_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


def shared_processors() -> list[Any]:
    """Everything before the sinks and the renderer: what an event line is made of."""
    return [
        merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt=TS_FORMAT, utc=True, key="ts"),
        add_actor,
        add_duration,
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
        redact,
        order_keys,
    ]


@dataclass
class _Pipeline:
    fmt: str = "json"
    colours: bool = False
    stream: TextIO | None = None
    sinks: list[Any] = field(default_factory=list)
    file: AuditFile | None = None


_pipeline = _Pipeline()
_pipeline_lock = threading.Lock()


def configure(*, fmt: str = "json", stream: TextIO | None = None, sinks: list[Any] | None = None,
              colours: bool = False) -> None:
    """Set up the pipeline. `sinks` are processors that see each redacted event. `fmt`:
    "json" (one object a line) or "console" (short aligned lines for a person; `colours`
    for a terminal that wants them). Redaction runs before either.

    Resets the audit file: attach it (again) with `use_settings` or `use_audit_file`.
    """
    with _pipeline_lock:
        _pipeline.fmt, _pipeline.stream, _pipeline.sinks = fmt, stream, list(sinks or [])
        _pipeline.colours = colours
        _pipeline.file = None
        _apply()
    _route_stdlib_logging()


def use_stream(stream: TextIO) -> None:
    """Send rendered events to `stream` from now on; format, sinks and audit file stay."""
    with _pipeline_lock:
        _pipeline.stream = stream
        _apply()


def exception_text(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """For the console renderer: the structured traceback (no locals) as plain text."""
    stacks = event_dict.get("exception")
    if isinstance(stacks, list):
        lines = []
        for stack in stacks:
            lines.append("Traceback (most recent call last):")
            lines += [f'  File "{f.get("filename")}", line {f.get("lineno")}, in {f.get("name")}'
                      for f in stack.get("frames", [])]
            lines.append(f"{stack.get('exc_type')}: {stack.get('exc_value')}")
        event_dict["exception"] = "\n".join(lines)
    return event_dict


def for_a_person(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Console lines only (after the audit file has its full copy): what a person at a
    terminal does not need is left out — the actor (this host, this pid), microseconds — and
    a rotation id and fingerprints are cut to what tells one from another."""
    event_dict.pop("actor", None)
    ts = event_dict.get("ts")
    if isinstance(ts, str) and len(ts) > 20 and ts.endswith("Z"):
        event_dict["ts"] = ts[:19] + "Z"  # whole seconds
    rotation_id = event_dict.get("rotation_id")
    if isinstance(rotation_id, str) and len(rotation_id) > 8:
        event_dict["rotation_id"] = rotation_id[:8]
    for key, value in event_dict.items():  # 16 hex digits of a fingerprint tell keys apart
        if key.endswith("_sha256") and isinstance(value, str) and len(value) == 64:
            event_dict[key] = value[:16] + "…"
    return event_dict


def _apply() -> None:
    renderer: list[Any]
    if _pipeline.fmt == "console":
        renderer = [exception_text, for_a_person, structlog.dev.ConsoleRenderer(
            colors=_pipeline.colours, timestamp_key="ts", pad_event_to=26,
            exception_formatter=structlog.dev.plain_traceback)]
    else:
        renderer = [structlog.processors.JSONRenderer(sort_keys=False)]
    file_sink = [_pipeline.file] if _pipeline.file is not None else []
    structlog.configure(
        processors=[*shared_processors(), *_pipeline.sinks, *file_sink, *renderer],
        # WriteLogger: the line and its newline in one write (PrintLogger's print() makes two,
        # and the forked `rotate --all` children then interleave lines on a shared stderr)
        logger_factory=structlog.WriteLoggerFactory(_pipeline.stream or sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=False,
    )


def use_audit_file(path: Path | None, *, max_bytes: int = 100 * 1024 * 1024, key: bytes | None = None,
                   **options: Any) -> AuditFile | None:
    """Append every event to `path` as a hash-chained JSON line (None: stdout/stderr only).

    `key`: the installation key, which makes the chain keyed (HMAC); `options` go to AuditFile
    (checkpoint_lines, checkpoint_seconds). Raises InputError (exit 2) if the file cannot be
    opened: better than rotating unaudited.
    """
    from rotator.audit.chain import AuditFile

    audit_file = None
    if path is not None:
        audit_file = AuditFile(path, max_bytes=max_bytes, key=key, notify=emit_unfiled, **options)
    if audit_file is not None:
        audit_file.check()
    with _pipeline_lock:
        _pipeline.file = audit_file
        _apply()
    return audit_file


def emit_unfiled(event: str, fields: dict[str, Any]) -> None:
    """An event for stdout/stderr only, not the audit file: what the audit file says about
    itself (`audit.tampered`, `audit.checkpoint`) must reach the journal even when the file
    is what is being attacked, and must not change the chain it reports on."""
    file_sink = _pipeline.file
    processors = [p for p in structlog.get_config()["processors"] if p is not file_sink]
    logger = structlog.wrap_logger(structlog.WriteLogger(_pipeline.stream or sys.stderr),
                                   processors=processors)
    level = "warning" if event.endswith("tampered") else "info"
    getattr(logger, level)(event, **fields)


def use_settings(daemon: DaemonConfig) -> None:
    """Apply `[daemon]` audit settings: the installation key (token fingerprints and the
    audit chain's HMAC), then the audit file."""
    from rotator.audit import fingerprint as audit_hash

    key_file = audit_hash.key_path_for(daemon)
    if key_file is None:
        audit_hash.use_ephemeral_key()
    else:
        audit_hash.use_key_file(key_file, daemon)
    use_audit_file(daemon.audit_log, max_bytes=daemon.audit_max_bytes, key=audit_hash.installation_key())


LIBRARY_LOG_INTERVAL = 60.0


def _route_stdlib_logging() -> None:
    """Libraries log through stdlib logging (APScheduler prints job tracebacks there):
    send their warnings through the same redacting pipeline, and drop their chatter."""
    handler = logging.Handler()
    last_seen: dict[tuple[str, str], list[float]] = {}  # (logger, format) -> [time, suppressed]

    def _emit(record: logging.LogRecord) -> None:
        # An overloaded scheduler says "skipped: maximum number of running instances" for
        # every missed run: one line per kind a minute, with how many were held back.
        kind = (record.name, str(record.msg))
        now = time.monotonic()
        seen = last_seen.get(kind)
        if seen is not None and now - seen[0] < LIBRARY_LOG_INTERVAL:
            seen[1] += 1
            return
        suppressed = int(seen[1]) if seen is not None else 0
        last_seen[kind] = [now, 0]
        # Only the message, never record.exc_info: a dependency's traceback can hold locals.
        structlog.get_logger("rotator").warning(
            "library.log", logger=record.name, message=redact_text(record.getMessage()),
            suppressed=suppressed or None,
        )

    handler.emit = _emit  # type: ignore[method-assign]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


_bound: tuple[tuple[Any, ...], Any] | None = None  # (the structlog config it was made for, logger)


def _logger() -> Any:
    """The "rotator" logger, bound once per structlog configuration (get_logger builds a new
    proxy and binds it on every call). Keyed on the configuration's objects themselves, which
    the cache keeps alive, so a reconfiguration (capture_logs in tests) is always noticed."""
    global _bound
    config = structlog.get_config()
    key = (config["processors"], config["logger_factory"], config["wrapper_class"],
           config["context_class"])
    cached = _bound
    if cached is not None and len(cached[0]) == len(key) and all(
            a is b for a, b in zip(cached[0], key, strict=True)):
        return cached[1]
    logger = structlog.get_logger("rotator").bind()
    _bound = (key, logger)
    return logger


def emit(event: str, **fields: Any) -> None:
    """Record one audit event (see rotator.audit.events / docs/audit-events.md for the catalogue)."""
    level = fields.pop("level", None)
    logger = _logger()
    if level == "warning":
        logger.warning(event, **fields)
    elif level == "error":
        logger.error(event, **fields)
    else:
        logger.info(event, **fields)
