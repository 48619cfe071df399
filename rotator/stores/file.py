"""The embedded default store: one JSON file per record under a root directory.

`PATH "a/b"` -> `<root>/a/b.json` (mode 0600, directories 0700). A write replaces the file
atomically (temp file, fsync, rename, fsync of the directory) after copying the old content
to `b.json.prev`, so a crash at any point leaves a complete current record. Versions are an
HMAC-SHA256 of the file's bytes under the store's own random key (`<root>/.version-key`, 0600),
so a version says nothing about a record's content, and compare-and-set runs under an flock on
`b.json.lock`, which makes two daemons on one host (or one NFS-less shared volume) safe.

Nothing under the root is reached through a symlink: every directory, record, lock and temp
file is opened relative to its parent directory's descriptor with O_NOFOLLOW. The root, every
directory under it and every record must belong to the user rotator runs as and be writable by
nobody else; the root's ancestors must belong to that user or root and be writable by others
only if sticky and root-owned (like /tmp). Anything else is refused (StoreAccessDenied), in
`check` and on every access.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rotator.config import check_store_path
from rotator.errors import (
    RecordError,
    StoreAccessDenied,
    StoreConflict,
    StoreError,
    StoreUnavailable,
)
from rotator.fsutil import dir_problem, file_problem, make_private_dirs, trusted_dir_problem
from rotator.stores.base import Record, WriteResult

MAX_RECORD_BYTES = 1024 * 1024


class FileStore:
    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self._real_root = root.resolve()  # resolved once: below it, no symlink is followed
        self._root_text = str(self._real_root)
        self._root_checked = False
        self._key: bytes | None = None  # for version ids, from <root>/.version-key
        # directories (st_dev, st_ino) whose leftover temp files this process has swept: once
        # each, not on every write (a directory listing per write is O(records) per write)
        self._swept: set[tuple[int, int]] = set()

    # -- interface

    def read(self, path: str) -> Record | None:
        try:
            with self._dir(path, create=False) as (dir_fd, leaf):
                if dir_fd is None:
                    return None
                raw = self._read_at(dir_fd, leaf, path)
        except FileNotFoundError:
            return None
        except StoreError:
            raise
        except OSError as exc:
            raise self._os_error(path, exc, "read") from None
        try:
            data = _parse(raw, f"{self.name}:{path}")
        except RecordError as exc:
            exc.version = self._version(raw)
            raise
        return Record(data, self._version(raw), {"file": f"{self._root_text}/{path}.json"})

    def write(
        self,
        path: str,
        data: dict[str, Any],
        *,
        expected_version: str | None,
        request_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> WriteResult:
        payload = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")
        try:
            with self._dir(path, create=True) as (dir_fd, leaf):
                assert dir_fd is not None
                with _locked(dir_fd, leaf):
                    try:
                        old = self._read_at(dir_fd, leaf, path)
                    except FileNotFoundError:
                        old = None
                    current = self._version(old) if old is not None else None
                    self._sweep_once(dir_fd, leaf)
                    if current != expected_version:
                        raise StoreConflict(
                            self.name,
                            path,
                            "the record changed since it was read "
                            f"(expected version {expected_version or 'none'}, found {current or 'none'})",
                            hint="another writer got there first; re-read and decide again",
                        )
                    _atomic_write(dir_fd, f"{leaf}.json", payload, keep_previous=old is not None)
        except StoreError:
            raise
        except OSError as exc:
            raise self._os_error(path, exc, "write") from None
        return WriteResult(self._version(payload), current)

    def read_previous(self, path: str) -> Record | None:
        try:
            with self._dir(path, create=False) as (dir_fd, leaf):
                if dir_fd is None:
                    return None
                raw = self._read_at(dir_fd, leaf, path, suffix=".json.prev")
        except FileNotFoundError:
            return None
        except StoreError:
            raise
        except OSError as exc:
            raise self._os_error(path, exc, "read") from None
        return Record(_parse(raw, f"{self.name}:{path} (previous)"), self._version(raw))

    def drop_previous(self, path: str) -> bool:
        """Remove the kept previous version of `path` (a discarded pending key must not linger
        in `.prev`). True if there was one."""
        try:
            with self._dir(path, create=False) as (dir_fd, leaf):
                if dir_fd is None:
                    return False
                with _locked(dir_fd, leaf):
                    try:
                        os.unlink(f"{leaf}.json.prev", dir_fd=dir_fd)
                    except FileNotFoundError:
                        return False
                    os.fsync(dir_fd)
                    return True
        except StoreError:
            raise
        except OSError as exc:
            raise self._os_error(path, exc, "write") from None

    def check(self) -> None:
        self._check_root()
        if not self.root.exists():
            # A first run creates it; what matters is that we could.
            parent = self.root.parent
            if not os.access(parent, os.W_OK | os.X_OK):
                raise StoreAccessDenied(
                    self.name, "", f"{self.root} does not exist and {parent} is not writable"
                )
            return
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise StoreAccessDenied(self.name, "", f"{self.root} is not readable and writable")

    def describe(self) -> str:
        return f"file {self.root}"

    def close(self) -> None:
        return None

    # -- helpers

    def _check_root(self) -> None:
        """The root and its ancestors: ours (ancestors may be root's), writable by nobody else."""
        problem = trusted_dir_problem(self._real_root)
        if problem is not None:
            raise StoreAccessDenied(self.name, "", f"refusing an untrusted store directory: {problem}",
                                    hint="another user could swap records or plant symlinks there")
        self._root_checked = True

    @contextlib.contextmanager
    def _dir(self, path: str, *, create: bool) -> Iterator[tuple[int | None, str]]:
        """The record's directory as an fd (None: missing and not created) and the record's
        name in it. Every component is opened relative to its parent with O_NOFOLLOW, and
        checked to be ours and writable by nobody else."""
        try:
            check_store_path(path)
        except ValueError as exc:
            raise StoreError(self.name, path, str(exc)) from None
        if not self._root_checked:
            self._check_root()
        *folders, leaf = path.split("/")
        try:
            fd = os.open(self._real_root, _DIR_FLAGS)
        except FileNotFoundError:
            if not create:
                yield None, leaf
                return
            make_private_dirs(self._real_root)
            fd = os.open(self._real_root, _DIR_FLAGS)
        try:
            self._trust_dir(fd, self._root_text, path)
            if self._key is None:
                self._key = _version_key(fd)
            where = self._root_text  # for messages only: a str, not a Path per component
            for folder in folders:
                where = f"{where}/{folder}"
                try:
                    child = _open_dir(fd, folder, create=create)
                except FileNotFoundError:
                    yield None, leaf
                    return
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise StoreError(self.name, path, f"{where} is a symlink or not a directory; "
                                         "refusing to follow it") from None
                    raise
                os.close(fd)
                fd = child
                self._trust_dir(fd, where, path)
            yield fd, leaf
        finally:
            os.close(fd)

    def _trust_dir(self, fd: int, where: Path | str, path: str) -> None:
        problem = dir_problem(os.fstat(fd), where)
        if problem is not None:
            raise StoreAccessDenied(self.name, path, f"refusing an untrusted store directory: {problem}")

    def _sweep_once(self, dir_fd: int, leaf: str) -> None:
        st = os.fstat(dir_fd)
        where = (st.st_dev, st.st_ino)
        if where in self._swept:
            return
        _sweep_leftovers(dir_fd, leaf)
        self._swept.add(where)

    def _read_at(self, dir_fd: int, leaf: str, path: str, suffix: str = ".json") -> bytes:
        name = leaf + suffix
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreError(self.name, path, f"{name} is a symlink; refusing to follow it") from None
            raise
        try:
            st = os.fstat(fd)
            problem = file_problem(st, name)
            if problem is None:
                return _read_capped(fd, st.st_size)
        finally:
            os.close(fd)
        raise StoreAccessDenied(self.name, path, f"refusing an untrusted record: {problem}")

    def _version(self, raw: bytes) -> str:
        assert self._key is not None  # loaded when the root was opened
        return hmac.new(self._key, raw, hashlib.sha256).hexdigest()[:20]

    def _os_error(self, path: str, exc: OSError, action: str) -> StoreError:
        if exc.errno == errno.ELOOP:
            return StoreError(self.name, path, f"cannot {action}: a symlink under {self.root}; "
                              "refusing to follow it")
        if exc.errno in (errno.EACCES, errno.EPERM):
            return StoreAccessDenied(
                self.name,
                path,
                f"permission denied to {action} under {self.root}",
                hint="run rotator as the user that owns the store directory",
            )
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
            return StoreUnavailable(self.name, path, f"cannot {action}: {exc.strerror}")
        return StoreError(self.name, path, f"cannot {action}: {exc.strerror}")


def _read_capped(fd: int, size: int) -> bytes:
    """Read an opened record, at most one byte past the cap so an oversize one is seen. `size`
    (from fstat) sizes the first read: a buffer of the cap for every small record cost an
    mmap and munmap per read. The file may change under us; reading on to EOF (or the cap)
    keeps the result what a single large read would have returned."""
    limit = MAX_RECORD_BYTES + 1
    chunks: list[bytes] = []
    total = 0
    want = min(max(size, 0) + 1, limit)  # one past the size: EOF is seen in one call
    while total < limit:
        chunk = os.read(fd, min(want, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        want = 64 * 1024
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # b"" when empty


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(parent_fd: int, folder: str, *, create: bool) -> int:
    """Open `folder` under its parent (never through a symlink), made 0700 first if missing
    and `create`. Opened first, made only when missing: an existing directory (nearly always)
    costs no failing mkdir call."""
    try:
        return os.open(folder, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700, dir_fd=parent_fd)
    return os.open(folder, _DIR_FLAGS, dir_fd=parent_fd)


@contextlib.contextmanager
def _locked(dir_fd: int, leaf: str) -> Iterator[None]:
    fd = os.open(f"{leaf}.json.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _parse(raw: bytes, where: str) -> dict[str, Any]:
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError(where, f"record is larger than {MAX_RECORD_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RecordError(where, "record is not valid JSON") from None
    if not isinstance(data, dict):
        raise RecordError(where, "record is not a JSON object")
    return data


VERSION_KEY = ".version-key"


def _version_key(root_fd: int) -> bytes:
    """The store's key for version ids, created (32 random bytes, 0600) on the first write.
    Whoever can read it can read the records beside it anyway."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(VERSION_KEY, flags, dir_fd=root_fd)
    except FileNotFoundError:
        tmp = f".{VERSION_KEY}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=root_fd)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
            os.close(fd)
            with contextlib.suppress(FileExistsError):  # another process won: use theirs
                os.link(tmp, VERSION_KEY, src_dir_fd=root_fd, dst_dir_fd=root_fd, follow_symlinks=False)
        finally:
            os.unlink(tmp, dir_fd=root_fd)
        fd = os.open(VERSION_KEY, flags, dir_fd=root_fd)
    with os.fdopen(fd, "rb") as handle:
        problem = file_problem(os.fstat(handle.fileno()), VERSION_KEY)
        if problem is not None or os.fstat(handle.fileno()).st_mode & 0o077:
            raise OSError(errno.EPERM, f"{VERSION_KEY}: {problem or 'readable by others'}")
        key = handle.read(64)
    if len(key) < 16:
        raise OSError(errno.EIO, f"{VERSION_KEY} is shorter than 16 bytes")
    return key


def _atomic_write(dir_fd: int, target: str, payload: bytes, *, keep_previous: bool = False) -> None:
    """Write temp + fsync, keep the old file as `.prev`, rename over, fsync the directory.

    The previous version is kept by a hard link to the old inode (no copy, no extra fsync:
    its content is already on disk); every step is a rename, so a crash leaves either the
    old or the new record complete. One file fsync and one directory fsync per write.
    Every name is relative to the directory's fd and never follows a symlink.
    """
    tmp = f".{target}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_previous:
            _link_previous(dir_fd, target)
        os.replace(tmp, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def _link_previous(dir_fd: int, target: str) -> None:
    prev = f"{target}.prev"
    link = f".{prev}.{secrets.token_hex(6)}.tmp"
    try:
        os.link(target, link, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        # a file system without hard links: copy instead (costs a second fsync)
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as handle:
            old = handle.read(MAX_RECORD_BYTES + 1)
        _atomic_write(dir_fd, prev, old)
        return
    try:
        os.replace(link, prev, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link, dir_fd=dir_fd)
        raise


_TEMP = re.compile(r"\.(?P<leaf>.+)\.json(?:\.prev)?\.[0-9a-f]{12}\.tmp")


def _sweep_leftovers(dir_fd: int, leaf: str) -> None:
    """Remove temp files killed writers left in this directory: those of `leaf` (we hold its
    lock, so no live writer owns them) and those of any other record whose lock we can take
    without waiting (a live writer holds its record's lock for as long as its temp file
    exists; a record with a busy lock is left for the next sweep)."""
    patterns = (f".{leaf}.json.*.tmp", f".{leaf}.json.prev.*.tmp")
    others: dict[str, list[str]] = {}
    for name in os.listdir(dir_fd):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
        elif (found := _TEMP.fullmatch(name)) is not None:
            others.setdefault(found["leaf"], []).append(name)
    for other, names in others.items():
        try:
            fd = os.open(f"{other}.json.lock", os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            continue  # no lock file (or not ours to open): leave them
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live writer: its temp file is no leftover
        try:
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dir_fd)
        finally:
            os.close(fd)
