"""Keyed fingerprints of tokens, like Vault's audit hashing.

The audit trail proves which token rotator issued without holding the token: it records
`hmac-sha256:<hex>` of the token under a per-installation key. An auditor with access to
the key runs `rotator audit hash VALUE` and compares.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

from rotator.errors import InputError

PREFIX = "hmac-sha256:"
_lock = threading.Lock()
_key: bytes | None = None


def use_key_file(path: Path) -> None:
    """Load the installation's HMAC key from `path`, creating it (0600) on first use."""
    global _key
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = secrets.token_bytes(32)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = -1
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        except FileExistsError:
            data = path.read_bytes()  # another process created it first: use theirs
        except OSError as exc:
            raise InputError(f"{path}: cannot create the audit HMAC key ({exc.strerror})") from None
        finally:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the audit HMAC key ({exc.strerror})") from None
    if len(data) < 16:
        raise InputError(f"{path}: audit HMAC key is shorter than 16 bytes")
    with _lock:
        _key = data


def _current_key() -> bytes:
    global _key
    with _lock:
        if _key is None:
            # No key file configured: fingerprints still never reveal the token, but only
            # compare within this process. Configure daemon.audit_hmac_key_file to keep them.
            _key = secrets.token_bytes(32)
        return _key


def token_fingerprint(value: str) -> str:
    digest = hmac.new(_current_key(), value.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest
