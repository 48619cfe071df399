"""The file store: layout, modes, atomic replace, previous version, CAS, path safety."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from rotator.errors import RecordError, StoreAccessDenied, StoreConflict, StoreError
from rotator.stores.file import FileStore


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore("local", tmp_path / "root")


def test_write_then_read(store: FileStore, tmp_path: Path) -> None:
    """PATH a/b lands in <root>/a/b.json, 0600 in 0700 directories; the version matches."""
    result = store.write("a/b", {"x": 1}, expected_version=None)
    target = tmp_path / "root" / "a" / "b.json"
    assert json.loads(target.read_text()) == {"x": 1}
    assert target.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "root" / "a").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "root").stat().st_mode & 0o777 == 0o700
    record = store.read("a/b")
    assert record is not None and record.data == {"x": 1} and record.version == result.version
    assert store.read("a/missing") is None


def test_previous_version_kept(store: FileStore) -> None:
    """A replace keeps the previous content beside the current one."""
    first = store.write("t", {"n": 1}, expected_version=None)
    second = store.write("t", {"n": 2}, expected_version=first.version)
    assert second.previous_version == first.version
    previous = store.read_previous("t")
    assert previous is not None and previous.data == {"n": 1}
    assert store.read("t").data == {"n": 2}  # type: ignore[union-attr]


def test_compare_and_set(store: FileStore) -> None:
    """A stale expected version, or None for an existing record, is a conflict; nothing changes."""
    first = store.write("t", {"n": 1}, expected_version=None)
    with pytest.raises(StoreConflict) as info:
        store.write("t", {"n": 9}, expected_version=None)
    assert "another writer got there first" in info.value.diagnostics()
    store.write("t", {"n": 2}, expected_version=first.version)
    with pytest.raises(StoreConflict):
        store.write("t", {"n": 3}, expected_version=first.version)
    assert store.read("t").data == {"n": 2}  # type: ignore[union-attr]


def test_racing_writers_one_wins(store: FileStore) -> None:
    """Eight threads with the same expected version: exactly one write lands."""
    base = store.write("t", {"n": 0}, expected_version=None)
    wins, conflicts = [], []

    def writer(i: int) -> None:
        try:
            store.write("t", {"n": i}, expected_version=base.version)
            wins.append(i)
        except StoreConflict:
            conflicts.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(conflicts) == 7
    assert store.read("t").data == {"n": wins[0]}  # type: ignore[union-attr]


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "a//b", "", "a/./b"])
def test_paths_cannot_escape(store: FileStore, path: str) -> None:
    """Traversal and absolute paths are refused before touching the disk."""
    with pytest.raises(StoreError):
        store.write(path, {"x": 1}, expected_version=None)
    with pytest.raises(StoreError):
        store.read(path)


def test_symlink_escape_refused(store: FileStore, tmp_path: Path) -> None:
    """A symlinked directory pointing outside the root cannot be used to escape it."""
    (tmp_path / "root").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "root" / "link")
    with pytest.raises(StoreError, match="symlink"):
        store.write("link/x", {"x": 1}, expected_version=None)
    assert not (outside / "x.json").exists()


def test_malformed_record(store: FileStore, tmp_path: Path) -> None:
    """Non-JSON and non-object records are RecordErrors that carry the version for replacement."""
    store.write("t", {"x": 1}, expected_version=None)
    target = tmp_path / "root" / "t.json"
    target.write_text("[1, 2]")
    with pytest.raises(RecordError, match="not a JSON object") as info:
        store.read("t")
    assert info.value.version
    store.write("t", {"x": 2}, expected_version=info.value.version)
    assert store.read("t").data == {"x": 2}  # type: ignore[union-attr]


def test_permission_denied_is_diagnosed(store: FileStore, monkeypatch) -> None:
    """EACCES from the file system becomes StoreAccessDenied naming the directory and the fix."""
    import rotator.stores.file as file_mod

    def denied(*_args: object, **_kwargs: object) -> bytes:
        raise PermissionError(13, "Permission denied")

    store.write("t", {"x": 1}, expected_version=None)
    monkeypatch.setattr(file_mod.FileStore, "_read_at", denied)
    with pytest.raises(StoreAccessDenied) as info:
        store.read("t")
    assert "permission denied to read under" in info.value.diagnostics()
    assert "run rotator as the user that owns the store directory" in info.value.diagnostics()


def test_crash_leaves_no_partial_file(store: FileStore, tmp_path: Path, monkeypatch) -> None:
    """If the process dies mid-write (simulated at fsync), the current record is intact."""
    first = store.write("t", {"n": 1}, expected_version=None)

    def boom(_fd: int) -> None:
        raise OSError(5, "simulated crash")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(StoreError):
        store.write("t", {"n": 2}, expected_version=first.version)
    monkeypatch.undo()
    assert store.read("t").data == {"n": 1}  # type: ignore[union-attr]
    leftovers = [p.name for p in (tmp_path / "root").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_leftover_temp_files_are_swept(store: FileStore, tmp_path: Path) -> None:
    """Temp files a killed writer left beside a record are removed by the next process's first
    write in that directory: its own record's, and another record's unless a live writer holds
    that record's lock. Later writes of the same process do not list the directory again."""
    import fcntl

    first = store.write("t", {"n": 1}, expected_version=None)
    store.write("u", {"n": 1}, expected_version=None)
    store.write("v", {"n": 1}, expected_version=None)
    root = tmp_path / "root"
    leftover = root / ".t.json.0123456789ab.tmp"
    prev_leftover = root / ".t.json.prev.0123456789ab.tmp"
    other = root / ".u.json.abcdefabcdef.tmp"
    busy = root / ".v.json.abcdefabcdef.tmp"
    for path in (leftover, prev_leftover, other, busy):
        path.write_text("partial")
    store.write("t", {"n": 2}, expected_version=first.version)
    assert leftover.exists()  # this process swept the directory already
    fd = os.open(root / "v.json.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a live writer of v
        next_process = FileStore("local", root)
        latest = next_process.read("t")
        assert latest is not None
        next_process.write("t", {"n": 3}, expected_version=latest.version)
    finally:
        os.close(fd)
    assert not leftover.exists() and not prev_leftover.exists()
    assert not other.exists()  # u's lock was free: nobody owns that temp file
    assert busy.exists()  # v's writer is alive: its temp file is not a leftover
