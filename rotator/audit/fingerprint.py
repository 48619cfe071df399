"""Keyed fingerprints of tokens, like Vault's audit hashing.

The audit trail proves which token rotator issued without holding the token: it records
`hmac-sha256:<hex>` of the token under a per-installation key. An auditor with access to
the key runs `rotator audit hash -` (the token on stdin) and compares.

The key file is, in order: `daemon.audit_hmac_key_file`, `<daemon.state_dir>/audit-hmac.key`,
`<daemon.audit_log>.hmac-key`; it is created (32 random bytes, 0600) on first use. With none of
the three configured the key is random per process: fingerprints still never reveal a token
but only compare within that process, and `rotator audit hash` refuses to run.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from rotator.errors import InputError
from rotator.fsutil import make_private_dirs

if TYPE_CHECKING:
    from rotator.config import DaemonConfig

PREFIX = "hmac-sha256:"
KEY_BYTES = 32
MIN_KEY_BYTES = 16
_lock = threading.Lock()
_key: bytes | None = None
_source: Path | None = None  # the installation key's file; None: per-process key


def key_path_for(daemon: DaemonConfig) -> Path | None:
    """Where this installation's key lives, per the fallback order above (None: nowhere)."""
    if daemon.audit_hmac_key_file is not None:
        return daemon.audit_hmac_key_file
    if daemon.state_dir is not None:
        return daemon.state_dir / "audit-hmac.key"
    if daemon.audit_log is not None:
        return daemon.audit_log.with_name(daemon.audit_log.name + ".hmac-key")
    return None


def use_key_file(path: Path) -> None:
    """Load the installation's HMAC key from `path`, creating it (0600) on first use."""
    global _key, _source
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = _create_key_file(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the audit HMAC key ({exc.strerror})") from None
    if len(data) < MIN_KEY_BYTES:
        raise InputError(f"{path}: audit HMAC key is shorter than {MIN_KEY_BYTES} bytes",
                         hint="delete it to have a new one made, or restore the right file")
    with _lock:
        _key, _source = data, path


def _create_key_file(path: Path) -> bytes:
    """Write the key to a temp file, then link it into place: no reader sees a partial key."""
    data = secrets.token_bytes(KEY_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        make_private_dirs(path.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_bytes()  # another process made it first: use theirs
    except OSError as exc:
        raise InputError(f"{path}: cannot create the audit HMAC key ({exc.strerror})") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return data


def use_ephemeral_key() -> None:
    """Forget any installation key: fingerprints use a random per-process key from now on."""
    global _key, _source
    with _lock:
        _key, _source = None, None


def key_source() -> Path | None:
    with _lock:
        return _source


def _current_key() -> bytes:
    global _key
    with _lock:
        if _key is None:
            _key = secrets.token_bytes(KEY_BYTES)
        return _key


def token_fingerprint(value: str) -> str:
    digest = hmac.new(_current_key(), value.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest


def cli_fingerprint(value: str) -> str:
    """`rotator audit hash`: only meaningful under the installation key, so insist on it."""
    if key_source() is None:
        raise InputError(
            "no audit HMAC key configured: a fingerprint under a random key matches nothing",
            hint="pass the daemon's --config (set daemon.audit_hmac_key_file, daemon.state_dir "
                 "or daemon.audit_log)",
        )
    if not value:
        raise InputError("audit hash: empty value", hint="pass the token, or - to read it from stdin")
    return token_fingerprint(value)
