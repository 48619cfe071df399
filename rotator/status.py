"""`rotator status`: what the stores say, plus what the daemon recorded (next run, last error)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rotator.config import Config
from rotator.crypto import cert_info, load_certificate
from rotator.durations import format_duration
from rotator.engine import Engine
from rotator.errors import RotatorError
from rotator.policy import renewal_due
from rotator.records import KeyRecord


def read_daemon_state(config: Config) -> dict[str, Any]:
    """The daemon's last-known state per credential (written to state_dir), or {}."""
    if config.daemon.state_dir is None:
        return {}
    path = config.daemon.state_dir / "state.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    creds = data.get("credentials") if isinstance(data, dict) else None
    return creds if isinstance(creds, dict) else {}


def collect_status(config: Config) -> list[dict[str, Any]]:
    engine = Engine(config)
    state = read_daemon_state(config)
    now = datetime.now(UTC)
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
        row["last_error"] = daemon.get("last_error")
        row["last_success"] = daemon.get("last_success")
        row["consecutive_failures"] = daemon.get("consecutive_failures")
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
    lines = []
    for row in rows:
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
        lines.append("  ".join(parts))
    return "\n".join(lines) + ("\n" if lines else "")
