"""Issue 15 item 9: the file store and the audit file trust nothing another user could plant.

Tests run as root in CI; `os.chown(..., 65534)` stands in for "another user".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rotator.audit.chain import AuditFile
from rotator.config import load_config
from rotator.errors import InputError, StoreError
from rotator.stores.file import FileStore
from tests.conftest import write_config

NOBODY = 65534


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir(mode=0o700)
    return path


def test_planted_lock_symlink_creates_nothing_outside(root: Path, tmp_path: Path) -> None:
    """Attack: <record>.json.lock -> a path outside the store made rotator create that file."""
    (root / "a").mkdir(mode=0o700)
    outside = tmp_path / "outside-created"
    (root / "a" / "b.json.lock").symlink_to(outside)
    with pytest.raises(StoreError):
        FileStore("local", root).write("a/b", {"x": 1}, expected_version=None)
    assert not outside.exists()
    assert not (root / "a" / "b.json").exists()


def test_planted_record_symlink_is_neither_read_nor_written(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "theirs.json"
    outside.write_text(json.dumps({"access_token": "planted"}))
    (root / "t.json").symlink_to(outside)
    store = FileStore("local", root)
    with pytest.raises(StoreError):
        store.read("t")
    with pytest.raises(StoreError):
        store.write("t", {"x": 1}, expected_version=None)
    assert json.loads(outside.read_text()) == {"access_token": "planted"}


def test_planted_directory_symlink_is_not_followed(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (root / "a").symlink_to(elsewhere)
    with pytest.raises(StoreError):
        FileStore("local", root).write("a/b", {"x": 1}, expected_version=None)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_group_or_world_writable_root_is_refused(root: Path, mode: int) -> None:
    """Attack: with a world-writable root another user swapped in a record of their own."""
    store = FileStore("local", root)
    store.write("t", {"x": 1}, expected_version=None)
    os.chmod(root, mode)
    with pytest.raises(StoreError) as err:
        store.check()
    assert str(root) in err.value.diagnostics() and "writable" in err.value.diagnostics()
    with pytest.raises(StoreError):
        store.read("t")


def test_root_owned_by_another_user_is_refused(root: Path) -> None:
    os.chown(root, NOBODY, NOBODY)
    with pytest.raises(StoreError) as err:
        FileStore("local", root).check()
    assert "owned by uid 65534" in err.value.diagnostics()


def test_world_writable_parent_is_refused_unless_sticky_and_root_owned(tmp_path: Path) -> None:
    parent = tmp_path / "shared"
    parent.mkdir()
    os.chmod(parent, 0o777)  # noqa: S103 - the attack under test
    store = FileStore("local", parent / "root")
    with pytest.raises(StoreError) as err:
        store.check()
    assert str(parent) in err.value.diagnostics()
    os.chmod(parent, 0o1777)  # noqa: S103 - like /tmp: others cannot rename or delete our entries
    store.check()
    store.write("t", {"x": 1}, expected_version=None)


def test_record_owned_by_another_user_is_refused(root: Path) -> None:
    store = FileStore("local", root)
    store.write("t", {"x": 1}, expected_version=None)
    os.chown(root / "t.json", NOBODY, NOBODY)
    with pytest.raises(StoreError) as err:
        store.read("t")
    assert "owned by uid 65534" in err.value.diagnostics()


def test_audit_lock_symlink_is_refused(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    outside = tmp_path / "outside-lock"
    (logs / "audit.jsonl.lock").symlink_to(outside)
    with pytest.raises(InputError):
        AuditFile(logs / "audit.jsonl", max_bytes=1 << 20).check()
    assert not outside.exists()


def test_audit_file_symlink_is_refused(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    outside = tmp_path / "outside.jsonl"
    (logs / "audit.jsonl").symlink_to(outside)
    with pytest.raises(InputError):
        AuditFile(logs / "audit.jsonl", max_bytes=1 << 20).check()
    assert not outside.exists()


def test_audit_directory_writable_by_others_is_refused(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    os.chmod(logs, 0o777)  # noqa: S103 - the attack under test
    with pytest.raises(InputError) as err:
        AuditFile(logs / "audit.jsonl", max_bytes=1 << 20).check()
    assert str(logs) in str(err.value)


def test_audit_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    AuditFile(logs / "audit.jsonl", max_bytes=1 << 20).check()
    os.chown(logs / "audit.jsonl", NOBODY, NOBODY)
    with pytest.raises(InputError) as err:
        AuditFile(logs / "audit.jsonl", max_bytes=1 << 20).check()
    assert "owned by uid 65534" in str(err.value)


def test_config_writable_by_others_warns(tmp_path: Path) -> None:
    path = write_config(tmp_path / "r.toml", login_url="http://127.0.0.1:1")
    os.chmod(path, 0o600)
    assert not [w for w in load_config(path).warnings if "writable" in w]
    os.chmod(path, 0o666)  # noqa: S103 - the attack under test
    warnings = [w for w in load_config(path).warnings if "writable" in w]
    assert len(warnings) == 1 and str(path) in warnings[0] and "\n" not in warnings[0]
