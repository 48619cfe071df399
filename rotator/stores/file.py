"""The embedded default store: one JSON file per record under a root directory.

`PATH "a/b"` -> `<root>/a/b.json` (mode 0600, directories 0700). A write replaces the file
atomically (temp file, fsync, rename, fsync of the directory) after copying the old content
to `b.json.prev`, so a crash at any point leaves a complete current record. Versions are the
SHA-256 of the file's bytes, and compare-and-set runs under an flock on `b.json.lock`, which
makes two daemons on one host (or one NFS-less shared volume) safe.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
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
from rotator.stores.base import Record, WriteResult

MAX_RECORD_BYTES = 1024 * 1024


class FileStore:
    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self._real_root = root.resolve()  # resolved once; each path is still checked below

    # -- interface

    def read(self, path: str) -> Record | None:
        target = self._file(path)
        try:
            raw = _read_capped(target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._os_error(path, exc, "read") from None
        try:
            data = _parse(raw, f"{self.name}:{path}")
        except RecordError as exc:
            exc.version = _version(raw)
            raise
        return Record(data, _version(raw), {"file": str(target)})

    def write(
        self,
        path: str,
        data: dict[str, Any],
        *,
        expected_version: str | None,
        request_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> WriteResult:
        target = self._file(path)
        payload = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")
        try:
            self._make_dirs(target.parent)
            with self._locked(target):
                try:
                    old = _read_capped(target)
                except FileNotFoundError:
                    old = None
                current = _version(old) if old is not None else None
                _sweep_leftovers(target)
                if current != expected_version:
                    raise StoreConflict(
                        self.name,
                        path,
                        "the record changed since it was read "
                        f"(expected version {expected_version or 'none'}, found {current or 'none'})",
                        hint="another writer got there first; re-read and decide again",
                    )
                _atomic_write(target, payload, keep_previous=old is not None)
        except StoreError:
            raise
        except OSError as exc:
            raise self._os_error(path, exc, "write") from None
        return WriteResult(_version(payload), current)

    def read_previous(self, path: str) -> Record | None:
        target = self._file(path)
        prev = target.with_name(target.name + ".prev")
        try:
            raw = _read_capped(prev)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._os_error(path, exc, "read") from None
        return Record(_parse(raw, f"{self.name}:{path} (previous)"), _version(raw))

    def check(self) -> None:
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

    def _file(self, path: str) -> Path:
        try:
            check_store_path(path)
        except ValueError as exc:
            raise StoreError(self.name, path, str(exc)) from None
        target = (self._real_root / f"{path}.json").resolve()
        if self._real_root not in target.parents:
            raise StoreError(self.name, path, "path escapes the store root")
        return target

    def _make_dirs(self, directory: Path) -> None:
        missing = []
        for parent in (directory, *directory.parents):
            if parent.exists():
                break
            missing.append(parent)
        for folder in reversed(missing):
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o700)
            os.chmod(folder, 0o700)

    @contextlib.contextmanager
    def _locked(self, target: Path) -> Iterator[None]:
        lock_path = target.with_name(target.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _os_error(self, path: str, exc: OSError, action: str) -> StoreError:
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


def _read_capped(path: Path) -> bytes:
    with open(path, "rb") as handle:
        raw = handle.read(MAX_RECORD_BYTES + 1)
    return raw


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


def _version(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:20]


def _atomic_write(target: Path, payload: bytes, *, keep_previous: bool = False) -> None:
    """Write temp + fsync, keep the old file as `.prev`, rename over, fsync the directory.

    The previous version is kept by a hard link to the old inode (no copy, no extra fsync:
    its content is already on disk); every step is a rename, so a crash leaves either the
    old or the new record complete. One file fsync and one directory fsync per write.
    """
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_previous:
            _link_previous(target)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _link_previous(target: Path) -> None:
    prev = target.with_name(target.name + ".prev")
    link = target.with_name(f".{prev.name}.{secrets.token_hex(6)}.tmp")
    try:
        os.link(target, link)
    except OSError:
        # a file system without hard links: copy instead (costs a second fsync)
        _atomic_write(prev, target.read_bytes())
        return
    try:
        os.replace(link, prev)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        raise


def _sweep_leftovers(target: Path) -> None:
    """Remove temp files a killed writer of this record left behind (we hold its lock, so
    no live writer owns them)."""
    for pattern in (f".{target.name}.*.tmp", f".{target.name}.prev.*.tmp"):
        for leftover in target.parent.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
