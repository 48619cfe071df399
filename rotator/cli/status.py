"""`rotator status`: what the stores say, plus what the daemon recorded (next run, last error)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rotator.cli.terminal import GREEN, RED, YELLOW, Cell, paint, table
from rotator.config import Config
from rotator.durations import format_duration
from rotator.engine import Engine
from rotator.errors import RotatorError
from rotator.keys.crypto import cert_info, load_certificate
from rotator.policy import renewal_due
from rotator.records import KeyRecord
from rotator.sanitize import clean_text

MAX_SHOWN = 1000


def read_daemon_state(config: Config) -> dict[str, Any]:
    """The daemon's last-known state per credential (written to state_dir), or {}."""
    creds = _read_state_file(config).get("credentials")
    return creds if isinstance(creds, dict) else {}


def _read_state_file(config: Config) -> dict[str, Any]:
    if config.daemon.state_dir is None:
        return {}
    path = config.daemon.state_dir / "state.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _written_at(data: dict[str, Any], now: datetime) -> tuple[str | None, int | None]:
    """When the daemon last wrote state.json, and how many seconds ago: the daemon rewrites it
    at most every couple of seconds (and on shutdown), so an old one means no daemon runs."""
    stamp = data.get("updated_at")
    if not isinstance(stamp, str):
        return None, None
    try:
        written = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None, None
    if written.tzinfo is None:
        return None, None
    return stamp, max(0, int((now - written).total_seconds()))


def collect_status(config: Config) -> list[dict[str, Any]]:
    engine = Engine(config)
    data = _read_state_file(config)
    creds = data.get("credentials")
    state = creds if isinstance(creds, dict) else {}
    now = datetime.now(UTC)
    written_at, state_age = _written_at(data, now)
    rows = []
    for name in sorted(config.credentials):
        row: dict[str, Any] = {"credential": name}
        try:
            token, _ = engine.read_token(name)
            row["token_issued_at"] = token.issued_at.isoformat() if token else None
            row["token_age_s"] = int(token.age(now)) if token else None
            row["token_expires_at"] = (
                token.expires_at.isoformat() if token and token.expires_at else None
            )
        except RotatorError as exc:
            row["token_error"] = exc.diagnostics()
        try:
            keyrec, _ = engine.read_key_record(name)
            info = cert_info(load_certificate(keyrec.current.certificate))
            row["cert_not_after"] = info.not_after.isoformat()
            row["cert_days_left"] = round(info.days_left(now), 1)
            row["key_sha256"] = info.sha256
            row["pending_key"] = _pending(keyrec)
            cred = config.credential(name)
            row["renew_at"] = renewal_due(
                not_before=info.not_before, not_after=info.not_after, now=now,
                renew_before=cred.renew_before, max_key_age=cred.max_key_age,
            ).at.isoformat()
        except RotatorError as exc:
            row["key_error"] = exc.diagnostics()
        daemon = state.get(name, {})
        row["next_run"] = daemon.get("next_run")
        row["last_error"] = _printable(daemon.get("last_error"))  # state.json is just a file
        row["last_success"] = daemon.get("last_success")
        row["consecutive_failures"] = daemon.get("consecutive_failures")
        row["state_written_at"] = written_at  # how fresh the four daemon fields above are
        row["state_age_s"] = state_age
        rows.append(row)
    engine.stores.close()
    return rows


def exit_code(rows: list[dict[str, Any]]) -> int:
    """`rotator status` exit code: 0 when every credential's token and key record could be
    read (a token not written yet is fine); 1 when any could not (a store unreachable, sealed,
    refusing access, or a broken record). Bad configuration exits 2 before this."""
    return 1 if any(row.get("token_error") or row.get("key_error") for row in rows) else 0


def _pending(keyrec: KeyRecord) -> str | None:
    if keyrec.pending is None:
        return None
    return cert_info(load_certificate(keyrec.pending.certificate)).sha256


def render_status(rows: list[dict[str, Any]]) -> str:
    """One line per credential for a terminal: every text field escaped and capped (state.json
    and store errors may quote what an endpoint said)."""
    lines = []
    for raw in rows:
        row = {key: _printable(value) for key, value in raw.items()}
        age = row.get("token_age_s")
        token = f"token {format_duration(age)} old" if age is not None else "no token"
        if row.get("token_error"):
            token = f"token unreadable: {row['token_error']}"
        if row.get("cert_days_left") is not None:
            cert = f"cert expires {row['cert_not_after'][:10]} ({row['cert_days_left']:.0f} days left)"
        else:
            cert = f"key unreadable: {row.get('key_error')}"
        parts = [row["credential"] + ":", token, cert]
        if row.get("pending_key"):
            parts.append(f"pending key {row['pending_key'][:16]}")
        if row.get("next_run"):
            parts.append(f"next run {row['next_run']}")
        if row.get("consecutive_failures"):
            parts.append(f"{row['consecutive_failures']} consecutive failures")
        if row.get("last_error"):
            parts.append(f"last error: {row['last_error']}")
        if row.get("state_age_s") is not None:
            parts.append(f"(daemon state {format_duration(row['state_age_s'])} old)")
        lines.append("  ".join(parts))
    return "\n".join(lines) + ("\n" if lines else "")


def _printable(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = clean_text(" ".join(value.split()))
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


# ---------------------------------------------------------------------------- the terminal table

STATE_STALE_S = 60  # the daemon rewrites state.json within seconds of a change and on exit
CELL_MAX = 60


def render_status_table(rows: list[dict[str, Any]], config: Config, *, colour: bool) -> str:
    """`rotator status` at a terminal: one aligned row per credential, problems in colour,
    then the full text of every error (cut short in the table)."""
    now = datetime.now(UTC)
    cells, notes = [], []
    for raw in rows:
        row = {key: _printable(value) for key, value in raw.items()}
        cred = config.credentials.get(row["credential"])
        every = cred.every if cred else None
        warn_days = max(cred.expiry_warnings) if cred and cred.expiry_warnings else 30
        cells.append([
            (row["credential"], None),
            _age_cell(row, every, RED, YELLOW),
            _next_run_cell(row.get("next_run"), now, RED),
            _cert_cell(row, warn_days, RED, YELLOW),
            _result_cell(row, now, RED, GREEN),
        ])
        for field, what in (("token_error", "token"), ("key_error", "key"), ("last_error", "last error")):
            if row.get(field):
                notes.append(paint(f"{row['credential']}: {what}: {row[field]}", RED, colour))
    text = table(("CREDENTIAL", "TOKEN AGE", "NEXT RUN", "CERT DAYS LEFT", "LAST RESULT"), cells,
                 colour=colour)
    state_age = next((r.get("state_age_s") for r in rows if r.get("state_age_s") is not None), None)
    if rows and state_age is not None:
        line = f"daemon state written {format_duration(state_age)} ago"
        stale = state_age > STATE_STALE_S
        notes.append(paint(line + (": is the daemon running?" if stale else ""),
                           YELLOW if stale else None, colour))
    elif rows:
        notes.append("no daemon state (daemon.state_dir unset, or the daemon has not run): "
                     "next run and last result unknown")
    return text + "".join(f"{note}\n" for note in notes)


def _age_cell(row: dict[str, Any], every: float | None, red: str, yellow: str) -> Cell:
    if row.get("token_error"):
        return "unreadable", red
    age = row.get("token_age_s")
    if age is None:
        return "no token", yellow
    # policy.refresh_deadline: a token older than two intervals means rotations are not landing
    late = every is not None and age > 2 * every
    return format_duration(age), red if late else None


def _next_run_cell(next_run: Any, now: datetime, red: str) -> Cell:
    when = _parse_time(next_run)
    if when is None:
        return "-", None
    delta = (when - now).total_seconds()
    if delta >= 0:
        return f"in {format_duration(delta)}", None
    return f"{format_duration(-delta)} overdue", red if -delta > 60 else None


def _cert_cell(row: dict[str, Any], warn_days: int, red: str, yellow: str) -> Cell:
    if row.get("key_error"):
        return "unreadable", red
    days = row.get("cert_days_left")
    if days is None:
        return "-", None
    text = f"{days:.0f}" + (" (+ pending key)" if row.get("pending_key") else "")
    if days <= 7:
        return text, red
    return text, yellow if days <= warn_days else None


def _result_cell(row: dict[str, Any], now: datetime, red: str, green: str) -> Cell:
    failures = row.get("consecutive_failures")
    if failures:
        error = row.get("last_error") or "see the audit log"
        text = f"failed x{failures}: {error}"
        return (text if len(text) <= CELL_MAX else text[: CELL_MAX - 1] + "…"), red
    success = _parse_time(row.get("last_success"))
    if success is not None:
        return f"ok, {format_duration(max(0.0, (now - success).total_seconds()))} ago", green
    return "-", None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None
