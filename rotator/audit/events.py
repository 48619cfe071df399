"""The audit event catalogue: every event rotator emits, its required fields, what it means.

This module is the single source; docs/audit-events.md carries the same table
(`python -m rotator.audit.events` prints it). `validate(event_dict)` checks one event against it —
call it in tests on what `structlog.testing.capture_logs(processors=audit.shared_processors())`
captured, or on the lines of an audit file.

Every line carries the envelope: `ts` (RFC 3339 UTC), `event`, `level` and `actor`
(host, pid, version). Rotation events also carry `rotation_id` and `credential`, bound once
per rotation with `bound_contextvars`. An event whose name ends in `failed` carries
`outcome: "failure"`, `error_class` and `diagnosis`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENVELOPE = ("ts", "event", "level", "actor")
ACTOR_FIELDS = ("host", "pid", "version")
OUTCOMES = ("success", "failure", "skipped")
LEVELS = ("debug", "info", "warning", "error", "critical")
_ROTATION = ("rotation_id", "credential")
_FAILURE = ("outcome", "error_class", "diagnosis")


@dataclass(frozen=True)
class EventSpec:
    name: str
    description: str
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    outcome: str | None = None  # the value `outcome` must have

    @property
    def failure(self) -> bool:
        return self.name.endswith("failed")


def _spec(name: str, description: str, required: tuple[str, ...] = (),
          optional: tuple[str, ...] = (), outcome: str | None = None) -> EventSpec:
    if name.endswith("failed"):
        required = (*[f for f in _FAILURE if f not in required], *required)
        outcome = "failure"
    elif outcome is not None and "outcome" not in required:
        required = ("outcome", *required)
    return EventSpec(name, description, required, optional, outcome)


_KEY_ID = ("key_sha256", "serial", "not_after")

CATALOGUE: dict[str, EventSpec] = {spec.name: spec for spec in (
    _spec("audit.anchor", "Start of a hash chain (prev = 64 zeros, new random chain id) or of a "
          "file after rotation (prev = hash of the old file's last line). Audit file only. "
          "`mac: hmac-sha256` marks a keyed chain (every `prev` from there on is an HMAC under the "
          "installation key); `reason`: new, rotated, continued, restarted, keyed (a legacy file "
          "continued keyed) or tampered.",
          ("chain", "reason"), ("seq", "prev", "mac")),
    _spec("audit.tampered", "The audit file was cut, changed or deleted under the writer (its last "
          "line is not the one this process wrote). Stdout only; the file is moved aside "
          "(`moved_to`) and a new one anchored with reason `tampered`, continuing from `head`.",
          ("file", "reason", "head", "head_seq"), ("moved_to",)),
    _spec("audit.checkpoint", "The audit chain's current head, every 1,000 lines or 5 minutes. "
          "Stdout only, so the journal holds heads for `rotator audit verify --expect-head`.",
          ("file", "chain", "head", "head_seq", "keyed")),
    # -- one rotation
    _spec("rotation.started", "A rotation of one credential begins.",
          (*_ROTATION, "force", "dry_run")),
    _spec("rotation.succeeded", "A new token was issued and written. `reused: true`: the endpoint "
          "returned the stored token again (a reused session; see `token.reused`).",
          (*_ROTATION, "key_sha256", "version", "duration_s"), ("reused",), outcome="success"),
    _spec("rotation.failed", "The rotation stopped; the previous token stays in place.",
          (*_ROTATION, "retryable", "duration_s")),
    _spec("rotation.skipped", "Nothing to do (token fresh, or a dry run).",
          (*_ROTATION, "reason", "duration_s"), outcome="skipped"),
    _spec("rotation.superseded", "Another writer stored a fresh token first; it was kept.",
          (*_ROTATION, "reason", "duration_s"), outcome="skipped"),
    _spec("token.written", "The token record was written (compare-and-set). The token itself "
          "appears only as its keyed fingerprint (`rotator audit hash -`).",
          (*_ROTATION, "store", "path", "version", "key_sha256", "token_fingerprint"),
          ("previous_version", "expires_at")),
    _spec("token.reused", "The endpoint answered with the token already stored (Salesforce "
          "reuses a still-active session). The record was re-written (compare-and-set) with the "
          "same token and the new issued_at / expires_at / key_sha256; nothing was revoked. "
          "`token_fingerprint` equals the one of the `token.written` that stored it first.",
          (*_ROTATION, "store", "path", "version", "key_sha256", "token_fingerprint"),
          ("previous_version", "expires_at")),
    _spec("token.verified", "A new token passed its probe (`verify`: `userinfo` or `query`) before "
          "it was written.", (*_ROTATION, "probe", "status", "duration_s")),
    _spec("token.verification_failed", "A new token failed its probe (`verify`): it was not "
          "written and the stored token stays. `status` is the probe's HTTP status (null when "
          "there was nothing to probe), `error_code` Salesforce's error code when it sent one.",
          (*_ROTATION, "probe", "status"), ("error_code",)),
    _spec("token.unreadable", "The stored token record could not be parsed; it will be replaced.",
          ("credential", "diagnosis"), ("rotation_id",)),
    # -- keys and certificates
    _spec("key.loaded", "A key pair was parsed and checked (once per process and role); "
          "`signer` is `pem`, `vault-transit` or `aws-kms`.",
          ("credential", "role", *_KEY_ID), ("rotation_id", "signer")),
    _spec("key.created", "`keys init` wrote a new key and self-signed certificate.",
          ("credential", "store", "path", "version", *_KEY_ID)),
    _spec("key.imported", "`keys import` stored an operator's key and certificate.",
          ("credential", "store", "path", "version", *_KEY_ID)),
    _spec("key.staged", "A pending key was added next to the current one.",
          ("credential", "key_sha256", "current_sha256", "not_after", "version"),
          ("days", "reason", "via")),
    _spec("key.published", "A certificate was handed to a target (store, file, hook, or the app "
          "itself through the Metadata API: target `metadata`, with `app`, `previous_sha256` = the "
          "certificate it replaced, `role` = pending or current).",
          ("credential", "target", "key_sha256", "ok"),
          ("outcome", "error_class", "diagnosis", "exit_code", "app", "type", "via", "previous_sha256",
           "role", "retryable", "rotation_id")),
    _spec("key.pending_verified", "The token endpoint accepts the pending key.",
          ("credential", "key_sha256")),
    _spec("key.pending_rejected", "The endpoint does not accept the pending key yet.",
          ("credential", "key_sha256", "reason")),
    _spec("key.pending_failed", "Trying the pending key failed for another reason.",
          ("credential", "key_sha256", "retryable")),
    _spec("key.current_rejected", "The endpoint refused the current key; switching to the pending one.",
          ("credential", "key_sha256", "pending_sha256")),
    _spec("key.promoted", "The pending key became current; the old current is kept as previous.",
          ("credential", "key_sha256", "previous_sha256", "not_after", "version"),
          ("reason", "forced", "via")),
    _spec("key.promote_skipped", "Promotion found the pending key changed or already promoted.",
          ("credential", "reason"), ("key_sha256",)),
    _spec("key.remote_created", "A keyless signer's key was made in the key service: `keys init` "
          "created a missing Transit or KMS key, or a rollover ran Transit `rotate` / KMS `CreateKey` "
          "(docs/keyless.md).",
          ("credential", "signer", "key_ref", "via"), ("key_type", "key_version")),
    _spec("key.retired", "`keys retire` scheduled an old KMS key for deletion (never automatic).",
          ("credential", "signer", "key_ref", "days", "deletion_date")),
    _spec("key.discarded", "The pending key was dropped (and its publication withdrawn).",
          ("credential", "key_sha256", "version"), ("via", "withdrawn")),
    _spec("certificate.expiry_warning", "The certificate crossed an expiry threshold (days).",
          ("credential", "key_sha256", "days_left", "threshold", "not_after")),
    _spec("lifecycle.failed", "A key-lifecycle step failed; the current key keeps working.",
          ("credential", "step", "retryable")),
    # -- stores
    _spec("store.auth.login", "Logged in to a secret store.", ("store", "method"),
          ("ttl_s", "renewable")),
    _spec("store.auth.renewed", "The store session was renewed.", ("store", "method"), ("ttl_s",)),
    _spec("store.auth.failed", "Login or renewal was refused or failed.", ("store", "method"),
          ("retry_in_s",)),
    _spec("store.metadata.failed", "The token was written but its metadata update failed.",
          ("store", "path"), ("version",)),
    # -- configuration and daemon
    _spec("config.loaded", "The daemon read its configuration.", ("path", "credentials")),
    _spec("config.reloaded", "A new configuration took effect (SIGHUP).", ("path", "credentials"),
          ("changed",)),
    _spec("config.rejected", "A new configuration was invalid; the running one stays.",
          ("error_class", "diagnosis", "path"), outcome="failure"),
    _spec("config.warning", "The configuration works but deserves attention.", ("warning",)),
    _spec("schedule.warning", "A schedule cannot hold (the warnings `rotator check` prints): "
          "`code` is cap-exceeded (runs come faster than max_requests_per_hour allows: the daemon "
          "will pause the credential), cap-headroom (no room for a rollover's two requests or "
          "retries), org-limit-exceeded or org-limit-near (the credentials of one org, by token "
          "host, near its login limit). The daemon emits one per warning at start-up and after "
          "each accepted reload.", ("code", "credentials", "warning")),
    _spec("daemon.started", "The daemon is scheduling credentials.", (), ("credentials", "listen")),
    _spec("daemon.stopping", "A signal asked the daemon to stop; running rotations finish.", (),
          ("signal", "reason")),
    _spec("daemon.stopped", "The daemon has stopped.", (), ("uptime_s", "exit_code")),
    _spec("library.log", "A warning from a library (stdlib logging), redacted, no traceback.",
          ("logger", "message"), ("suppressed",)),
)}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")
_FORMATS: dict[str, tuple[str, Any]] = {
    "rotation_id": ("32 hex digits", re.compile(r"^[0-9a-f]{32}$")),
    "key_sha256": ("a SHA-256 fingerprint (64 hex digits)", _HEX64),
    "current_sha256": ("a SHA-256 fingerprint (64 hex digits)", _HEX64),
    "previous_sha256": ("a SHA-256 fingerprint (64 hex digits)", _HEX64),
    "pending_sha256": ("a SHA-256 fingerprint (64 hex digits)", _HEX64),
    "token_fingerprint": ("hmac-sha256:<64 hex digits>", re.compile(r"^hmac-sha256:[0-9a-f]{64}$")),
    "serial": ("hex digits", re.compile(r"^[0-9a-f]+$")),
    "not_after": ("an RFC 3339 time", _RFC3339),
    "expires_at": ("an RFC 3339 time", _RFC3339),
    "chain": ("32 hex digits", re.compile(r"^[0-9a-f]{32}$")),
    "head": ("64 hex digits", _HEX64),
}
_NUMBERS = ("duration_s", "days_left", "threshold", "ttl_s", "uptime_s", "retry_in_s")


def spec(name: str) -> EventSpec:
    return CATALOGUE[name]


def validate(event_dict: Mapping[str, Any], *, envelope: bool = True) -> list[str]:
    """Problems with one event (empty: fine). `envelope=False` skips ts/level/actor, for
    events captured without the pipeline's processors."""
    name = event_dict.get("event")
    known = CATALOGUE.get(name) if isinstance(name, str) else None
    if known is None:
        return [f"event {name!r} is not in the catalogue (rotator/audit/events.py)"]
    problems = _envelope(event_dict) if envelope else []
    problems += [f"{name}: missing {f}" for f in known.required if event_dict.get(f) is None]
    outcome = event_dict.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        problems.append(f"{name}: outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    elif known.outcome is not None and outcome is not None and outcome != known.outcome:
        problems.append(f"{name}: outcome is {outcome!r}, expected {known.outcome!r}")
    if outcome == "failure":
        problems += [f"{name}: a failure needs {f}" for f in ("error_class", "diagnosis")
                     if not event_dict.get(f) and f not in known.required]
    problems += _formats(name, event_dict)
    problems += [f"{name}: {where} holds a secret (masked by redaction): log an identifier instead"
                 for where in _redacted(event_dict)]
    return problems


def _envelope(event_dict: Mapping[str, Any]) -> list[str]:
    name, problems = event_dict.get("event"), []
    ts = event_dict.get("ts")
    if not isinstance(ts, str) or not _RFC3339_UTC.match(ts):
        problems.append(f"{name}: ts {ts!r} is not an RFC 3339 UTC time (…Z)")
    if event_dict.get("level") not in LEVELS:
        problems.append(f"{name}: level {event_dict.get('level')!r} is not one of {', '.join(LEVELS)}")
    actor = event_dict.get("actor")
    if not isinstance(actor, Mapping) or not all(actor.get(f) for f in ACTOR_FIELDS):
        problems.append(f"{name}: actor {actor!r} lacks {', '.join(ACTOR_FIELDS)}")
    elif not isinstance(actor["pid"], int):
        problems.append(f"{name}: actor.pid is not an integer")
    return problems


def _formats(name: str, event_dict: Mapping[str, Any]) -> list[str]:
    problems = []
    for field_name, (what, pattern) in _FORMATS.items():
        value = event_dict.get(field_name)
        if value is not None and not (isinstance(value, str) and pattern.match(value)):
            problems.append(f"{name}: {field_name} {value!r} is not {what}")
    for field_name in _NUMBERS:
        value = event_dict.get(field_name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            problems.append(f"{name}: {field_name} {value!r} is not a number")
    duration = event_dict.get("duration_s")
    if isinstance(duration, int | float) and duration < 0:
        problems.append(f"{name}: duration_s is negative")
    return problems


def _redacted(value: Any, where: str = "") -> list[str]:
    if isinstance(value, str):
        return [where or "a value"] if "[REDACTED" in value else []
    if isinstance(value, Mapping):
        return [w for k, v in value.items() for w in _redacted(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, list | tuple):
        return [w for i, v in enumerate(value) for w in _redacted(v, f"{where}[{i}]")]
    return []


def markdown_table() -> str:
    """The catalogue as the table in docs/audit-events.md."""
    rows = ["| event | required fields | optional fields | meaning |", "|---|---|---|---|"]
    for item in CATALOGUE.values():
        required = ", ".join(f"`{f}`" + (f" = `{item.outcome}`" if f == "outcome" else "")
                             for f in item.required) or "—"
        optional = ", ".join(f"`{f}`" for f in item.optional) or "—"
        rows.append(f"| `{item.name}` | {required} | {optional} | {item.description} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
