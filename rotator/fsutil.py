"""Directories rotator creates sit next to secrets: every one it makes is 0700, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def make_private_dirs(directory: Path) -> None:
    """`mkdir -p` where each directory created is 0700. (`Path.mkdir(parents=True, mode=...)`
    gives the missing parents the umask's default mode instead: 0777 under `umask 000`.)
    Directories that exist already are left as they are."""
    make_dirs(directory, 0o700)


def make_dirs(directory: Path, mode: int) -> None:
    """`mkdir -p` where each directory created gets exactly `mode`, whatever the umask."""
    missing = []
    for folder in (directory, *directory.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=mode)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs
        os.chmod(folder, mode)  # mkdir's mode is filtered by the umask


# ---------------------------------------------------------------------------- trust
# Another local user must not be able to swap a record, a lock or an audit file under us.
# A directory we keep secrets in must be ours and writable by nobody else; its ancestors must
# be ours or root's, and writable by others only if sticky and root-owned (like /tmp, where
# others cannot rename or delete our entries).


def dir_problem(st: os.stat_result, where: Path | str, *, ancestor: bool = False) -> str | None:
    """Why a directory with this stat cannot hold rotator's files, or None if it can."""
    uid = os.geteuid()
    shared = bool(st.st_mode & 0o022)
    if ancestor:
        if st.st_uid not in (uid, 0):
            return f"{where} is owned by uid {st.st_uid} (not this user or root)"
        if shared and not (st.st_mode & stat.S_ISVTX and st.st_uid == 0):
            return f"{where} is group/world-writable (chmod go-w, or use a sticky root-owned dir)"
        return None
    if st.st_uid != uid:
        return f"{where} is owned by uid {st.st_uid}, not this user ({uid})"
    if shared:
        return f"{where} is group/world-writable (chmod 700 it)"
    return None


def file_problem(st: os.stat_result, where: Path | str) -> str | None:
    """Why a file rotator opened (record, audit log) is not one to trust, or None."""
    if not stat.S_ISREG(st.st_mode):
        return f"{where} is not a regular file"
    if st.st_uid != os.geteuid():
        return f"{where} is owned by uid {st.st_uid}, not this user ({os.geteuid()})"
    return None


def trusted_dir_problem(directory: Path) -> str | None:
    """Check `directory` (if it exists) and every ancestor, following the rules above."""
    directory = Path(os.path.abspath(directory))
    for index, folder in enumerate((directory, *directory.parents)):
        try:
            st = os.stat(folder)
        except FileNotFoundError:
            continue  # created later by rotator itself: 0700, ours
        except OSError as exc:
            return f"{folder}: cannot stat ({exc.strerror})"
        problem = dir_problem(st, folder, ancestor=index > 0)  # the directory itself: strict
        if problem is not None:
            return problem
    return None
