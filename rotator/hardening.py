"""Process hardening at start-up: no core dumps, no same-user peeking, no secrets in the environment.

Every `rotator` command starts with `harden_process()`:

* prctl(PR_SET_DUMPABLE, 0) (Linux): another process of the same user can no longer read this
  one's /proc/PID/environ or /proc/PID/mem, nor ptrace it (the kernel then treats the process
  like a set-uid one), and the kernel writes no core dump of it.
* RLIMIT_CORE 0: no core file either, wherever dumpable is not available. Under the systemd
  units' seccomp filter (~@resources) setrlimit is refused; LimitCORE=0 in the units does it.

and runs inside `withheld(SECRET_ENV)`: the secret variables (VAULT_TOKEN, AWS keys, the key
passphrase, and a Vault store's token_env when the store is built) are moved out of
os.environ into this module, so no child process inherits them and nothing reads them by
accident. Their values in the process's original environment block — what /proc/PID/environ
shows, which unsetenv does not touch — are overwritten with NULs first. Code that needs one
asks `secret_env(NAME)` (or gets `environ()` as its mapping).

`withheld` puts the variables back when it exits, so that in-process callers (tests) see their
environment unchanged; a real command exits right after.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections import ChainMap
from collections.abc import Iterable, Iterator, Mapping

SECRET_ENV = (
    "VAULT_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "ROTATOR_KEY_PASSPHRASE",
)
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3

_captured: dict[str, str] = {}


def harden_process() -> list[str]:
    """Non-dumpable and no core files; returns what could not be done (never raises)."""
    problems = []
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
                problems.append(f"prctl(PR_SET_DUMPABLE): errno {ctypes.get_errno()}")
        except (OSError, AttributeError) as exc:
            problems.append(f"prctl: {exc}")
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, OSError, ValueError) as exc:
        problems.append(f"RLIMIT_CORE: {exc}")
    return problems


def is_dumpable() -> bool | None:
    """This process's PR_GET_DUMPABLE (None off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    return bool(ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def withhold(names: Iterable[str]) -> None:
    """Move `names` from os.environ (and the C environment) into this module."""
    for name in names:
        if name in os.environ:
            _scrub_initial(name)
            _captured[name] = os.environ.pop(name)


def secret_env(name: str) -> str | None:
    """A secret variable's value, whether or not it was withheld."""
    return _captured.get(name) or os.environ.get(name)


def environ() -> Mapping[str, str]:
    """os.environ with the withheld variables still visible (a live view)."""
    return ChainMap(_captured, os.environ)  # type: ignore[arg-type]


def aws_credentials(profile: str | None) -> dict[str, str]:
    """Explicit keys for boto3 when the environment held them (withheld, botocore cannot see
    them there): the same credentials its environment provider would have used. None when a
    profile is named, as botocore then skips the environment too."""
    secret = _captured.get("AWS_SECRET_ACCESS_KEY")
    key_id = os.environ.get("AWS_ACCESS_KEY_ID")
    if profile is not None or not secret or not key_id:
        return {}
    found = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
    session = _captured.get("AWS_SESSION_TOKEN") or _captured.get("AWS_SECURITY_TOKEN")
    if session:
        found["aws_session_token"] = session
    return found


@contextlib.contextmanager
def withheld(names: Iterable[str] = SECRET_ENV) -> Iterator[None]:
    before = dict(_captured)
    withhold(names)
    try:
        yield
    finally:
        for name, value in _captured.items():
            if name not in before:
                os.environ[name] = value
        _captured.clear()
        _captured.update(before)


def _scrub_initial(name: str) -> None:
    """Overwrite NAME's value in the C environment block with NULs before unsetenv drops the
    pointer: /proc/PID/environ shows the process's initial block, not the current one."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        env = ctypes.POINTER(ctypes.c_void_p).in_dll(libc, "environ")
        prefix = name.encode() + b"="
        index = 0
        while env[index]:
            address = env[index]
            entry = ctypes.string_at(address)
            if entry.startswith(prefix):
                ctypes.memset(address + len(prefix), 0, len(entry) - len(prefix))
            index += 1
    except (OSError, ValueError, AttributeError):
        return
