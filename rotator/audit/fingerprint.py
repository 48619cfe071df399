"""Keyed fingerprints of tokens, like Vault's audit hashing.

The audit trail proves which token rotator issued without holding the token: it records
`hmac-sha256:<hex>` of the token under a per-installation key. An auditor with access to
the key runs `rotator audit hash -` (the token on stdin) and compares.

The same key makes the audit file's hash chain an HMAC chain (rotator.audit.chain), so
forging or re-chaining the file needs it.

The key file is, in order: `daemon.audit_hmac_key_file`, `<daemon.state_dir>/audit-hmac.key`,
`<audit_log's directory>/<audit_log stem>-hmac.key` (outside the `audit.jsonl*` glob, so log
shipping and `rm audit.jsonl*` never take it; a key at the old place `<audit_log>.hmac-key` is
moved there). It is created (32 random bytes, 0600) on first use; a key file readable by group
or others is refused. With none of the three configured the key is random per process:
fingerprints still never reveal a token but only compare within that process, and `rotator
audit hash` refuses to run.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
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
        return _beside_log(daemon.audit_log)
    return None


def _beside_log(audit_log: Path) -> Path:
    """`audit.jsonl` -> `audit-hmac.key`: next to the log, but not matched by `audit.jsonl*`."""
    name = f"{audit_log.stem}-hmac.key"
    if name.startswith(audit_log.name):  # a log named without a suffix
        name = f".{name}"
    return audit_log.with_name(name)


def _migrate_legacy(daemon: DaemonConfig, path: Path) -> None:
    """Move a key from its old place `<audit_log>.hmac-key` (inside the log's glob)."""
    if daemon.audit_log is None or path != _beside_log(daemon.audit_log):
        return
    legacy = daemon.audit_log.with_name(daemon.audit_log.name + ".hmac-key")
    if legacy.exists() and not path.exists():
        try:
            os.link(legacy, path)
            os.unlink(legacy)
        except OSError as exc:
            raise InputError(f"{legacy}: cannot move the audit HMAC key to {path} ({exc.strerror})") from None


def installation_key() -> bytes | None:
    """The installation key if one is loaded from a file (None: per-process key only)."""
    with _lock:
        return _key if _source is not None else None


def read_key_file(path: Path) -> bytes:
    """Read an existing key file (never create one): for `audit verify`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{path}: no audit HMAC key there",
                         hint="pass the daemon's --config, or --key-file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the audit HMAC key ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        _refuse_shared(path, os.fstat(handle.fileno()))
        data = handle.read(4096)
    if len(data) < MIN_KEY_BYTES:
        raise InputError(f"{path}: audit HMAC key is shorter than {MIN_KEY_BYTES} bytes",
                         hint="delete it to have a new one made, or restore the right file")
    return data


def _refuse_shared(path: Path, st: os.stat_result) -> None:
    """Whoever can read the key can forge the audit chain: it is the owner's alone."""
    if st.st_mode & 0o077:
        raise InputError(f"{path}: the audit HMAC key is readable or writable by group/others "
                         f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    if st.st_uid != os.geteuid():
        raise InputError(f"{path}: the audit HMAC key is owned by uid {st.st_uid}, not this user")


def use_key_file(path: Path, daemon: DaemonConfig | None = None) -> None:
    """Load the installation's HMAC key from `path`, creating it (0600) on first use."""
    global _key, _source
    if daemon is not None:
        _migrate_legacy(daemon, path)
    if not path.exists():
        _create_key_file(path)
    data = read_key_file(path)
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
