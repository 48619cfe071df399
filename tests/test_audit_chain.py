"""The audit file's hash chain: appending under a lock, rotation, and `rotator audit verify`.

Every chain here is keyed (HMAC under KEY), as a configured daemon writes it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from rotator.audit import pipeline as audit
from rotator.audit.chain import GENESIS, AuditFile, line_mac, verify, verify_files
from tests.conftest import rotator_subprocess_env

KEY = b"test-installation-key-0123456789"


def line_hash(line: bytes) -> str:
    """The keyed chain's link to `line`."""
    return line_mac(KEY, line)


WRITER = """
import os, sys, time
from pathlib import Path
from rotator.audit import pipeline as audit
path, max_bytes, count, tag, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
audit.configure(stream=open(os.devnull, "w"))
audit.use_audit_file(Path(path), max_bytes=max_bytes, key=b"test-installation-key-0123456789")
Path(go + "." + tag).touch()
while not os.path.exists(go):
    time.sleep(0.001)
for i in range(count):
    audit.emit("library.log", logger=tag, message=str(i))
"""


@pytest.fixture(autouse=True)
def _fresh_pipeline() -> Iterator[None]:
    """No audit file stays attached to the pipeline after a test."""
    audit.configure(stream=io.StringIO())
    yield
    audit.configure(stream=io.StringIO())


def write_events(path: Path, count: int, *, max_bytes: int = 1 << 20) -> list[bytes]:
    """`count` events through the real pipeline into `path`; returns the file's lines."""
    audit.use_audit_file(path, max_bytes=max_bytes, key=KEY)
    for index in range(count):
        audit.emit("config.warning", level="warning", warning=f"warning number {index}")
    audit.configure(stream=io.StringIO())
    return path.read_bytes().splitlines()


def key_file(directory: Path) -> Path:
    """KEY as an installation key file (0600), for `rotator audit verify --key-file`."""
    path = directory / "test-hmac.key"
    if not path.exists():
        path.write_bytes(KEY)
        path.chmod(0o600)
    return path


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def rotated(path: Path) -> list[Path]:
    """The rotated files and the live one, oldest first."""
    numbered = sorted(path.parent.glob(path.name + ".[0-9]*"), key=lambda p: -int(p.suffix[1:]))
    return [*numbered, path]


def check(paths: list[Path]) -> tuple[int, str]:
    out = io.StringIO()
    code = verify_files(paths, out=out, key=KEY)
    return code, out.getvalue().strip()


# ---------------------------------------------------------------------------- writing


def test_fresh_file_starts_with_a_genesis_anchor(tmp_path: Path) -> None:
    """Line 1 is audit.anchor with prev = 64 zeros and a chain id; each line hashes the last."""
    path = tmp_path / "audit.jsonl"
    lines = write_events(path, 3)
    anchor = json.loads(lines[0])
    assert anchor["event"] == "audit.anchor" and anchor["prev"] == GENESIS
    assert anchor["reason"] == "new" and len(anchor["chain"]) == 32 and anchor["seq"] == 0
    for before, line in pairwise(lines):
        assert json.loads(line)["prev"] == line_hash(before)
    assert [json.loads(line)["seq"] for line in lines] == [0, 1, 2, 3]
    assert path.stat().st_mode & 0o777 == 0o600


def test_restart_continues_the_chain_from_the_last_line(tmp_path: Path) -> None:
    """A new writer on an existing file adds no anchor and chains onto its last line."""
    path = tmp_path / "audit.jsonl"
    first = write_events(path, 2)
    lines = write_events(path, 2)
    assert sum(b'"audit.anchor"' in line for line in lines) == 1
    assert json.loads(lines[len(first)])["prev"] == line_hash(first[-1])
    assert check([path]) == (0, f"ok: 5 lines, chain {json.loads(first[0])['chain']}, "
                                f"head {line_hash(lines[-1])}, keyed")


def test_rotation_keeps_five_files_and_chains_across_them(tmp_path: Path) -> None:
    """Past audit_max_bytes files shift to .1 .. .5, each new file anchored to the old one's end."""
    path = tmp_path / "audit.jsonl"
    write_events(path, 120, max_bytes=4096)
    files = rotated(path)
    assert [p.name for p in files] == [f"audit.jsonl.{n}" for n in (5, 4, 3, 2, 1)] + ["audit.jsonl"]
    for older, newer in pairwise(files):
        anchor = json.loads(newer.read_bytes().splitlines()[0])
        assert anchor["event"] == "audit.anchor" and anchor["reason"] == "rotated"
        assert anchor["prev"] == line_hash(older.read_bytes().splitlines()[-1])
        assert older.stat().st_size <= 4096
    code, report = check(files)
    assert code == 0 and report.startswith("ok: ") and "continues an older one" in report
    assert check(files[-2:])[0] == 0


def test_external_move_continues_the_chain(tmp_path: Path) -> None:
    """A file moved away by logrotate is followed by one whose anchor continues the chain."""
    path = tmp_path / "audit.jsonl"
    audit.use_audit_file(path, max_bytes=1 << 20, key=KEY)
    audit.emit("config.warning", warning="one")
    path.rename(tmp_path / "audit.jsonl.1")
    audit.emit("config.warning", warning="two")
    anchor = json.loads(path.read_bytes().splitlines()[0])
    assert anchor["reason"] == "continued"
    assert check([tmp_path / "audit.jsonl.1", path])[0] == 0


def test_torn_last_line_is_moved_aside_and_reported(tmp_path: Path) -> None:
    """A half-written last line: the writer starts a new file chained to it; verify names it."""
    path = tmp_path / "audit.jsonl"
    lines = write_events(path, 3)
    path.write_bytes(b"\n".join(lines) + b'\n{"ts":"2026-')
    write_events(path, 1)
    anchor = json.loads(path.read_bytes().splitlines()[0])
    assert anchor["reason"] == "restarted" and anchor["prev"] == line_hash(b'{"ts":"2026-')
    old = tmp_path / "audit.jsonl.1"
    assert check([old, path]) == (1, f"{old}:5: incomplete last line (no newline: a torn write, or cut)")


def test_threads_share_one_chain(tmp_path: Path) -> None:
    """Eight threads emitting at once leave one unbroken chain with every line in it."""
    path = tmp_path / "audit.jsonl"
    audit.use_audit_file(path, max_bytes=1 << 20, key=KEY)

    def work(tag: int) -> None:
        for index in range(25):
            audit.emit("library.log", logger=f"t{tag}", message=str(index))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert check([path])[1].startswith("ok: 201 lines")


def _run_writers(path: Path, tmp_path: Path, *, count: int, max_bytes: int) -> None:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(max_bytes), str(count),
                               tag, str(go)], env=rotator_subprocess_env(), stderr=subprocess.PIPE)
             for tag in ("a", "b")]
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"go.{tag}").exists() for tag in ("a", "b")):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.005)
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()


def test_two_processes_append_one_valid_chain(tmp_path: Path) -> None:
    """Two processes writing at once: every line present, in order per writer, one chain."""
    path = tmp_path / "audit.jsonl"
    _run_writers(path, tmp_path, count=150, max_bytes=1 << 20)
    code, report = check([path])
    assert (code, report.split(",")[0]) == (0, "ok: 301 lines")
    lines = [json.loads(line) for line in path.read_bytes().splitlines()[1:]]
    for tag in ("a", "b"):
        assert [int(line["message"]) for line in lines if line["logger"] == tag] == list(range(150))
    switches = sum(a["logger"] != b["logger"] for a, b in pairwise(lines))
    assert switches >= 2  # the writers really interleaved
    assert len({line["actor"]["pid"] for line in lines}) == 2


def test_two_processes_with_rotation_keep_the_chain(tmp_path: Path) -> None:
    """Concurrent writers that rotate the file under each other still leave a verifiable chain."""
    path = tmp_path / "audit.jsonl"
    _run_writers(path, tmp_path, count=100, max_bytes=8192)
    files = rotated(path)
    assert len(files) >= 3
    assert check(files)[0] == 0
    assert not (tmp_path / "audit.jsonl.6").exists()


# ---------------------------------------------------------------------------- verifying


@pytest.fixture
def chained(tmp_path: Path) -> tuple[Path, list[bytes]]:
    path = tmp_path / "audit.jsonl"
    return path, write_events(path, 9)  # anchor + 9 lines


def test_verify_passes_an_untouched_file(run_cli, chained: tuple[Path, list[bytes]]) -> None:
    """`rotator audit verify FILE` on the file as written: exit 0, `ok: N lines, chain <id>`."""
    path, lines = chained
    result = run_cli("audit", "verify", "--key-file", key_file(path.parent), path)
    chain = json.loads(lines[0])["chain"]
    assert result.code == 0
    assert result.out.startswith(f"ok: 10 lines, chain {chain}, head {line_hash(lines[-1])}")


def test_verify_pinpoints_an_edited_line(run_cli, chained: tuple[Path, list[bytes]]) -> None:
    """Changing one byte of line 5 is reported as FILE:5, exit 1."""
    path, lines = chained
    lines[4] = lines[4].replace(b"warning number 3", b"warning number 8")
    rewrite(path, lines)
    result = run_cli("audit", "verify", "--key-file", key_file(path.parent), path)
    assert result.code == 1
    assert result.out.strip() == f"{path}:5: changed (its hash no longer matches the next line's prev)"


def test_verify_pinpoints_an_edited_prev(chained: tuple[Path, list[bytes]]) -> None:
    """Rewriting line 5's own prev field is reported at line 5, not at its neighbour."""
    path, lines = chained
    record = json.loads(lines[4])
    record["prev"] = "1" * 64
    lines[4] = json.dumps(record, separators=(",", ":")).encode()
    rewrite(path, lines)
    assert check([path]) == (1, f"{path}:5: changed (its prev no longer matches {path}:4)")


def test_verify_pinpoints_a_deleted_line(run_cli, chained: tuple[Path, list[bytes]]) -> None:
    """Removing line 5 is reported at line 5 (where the gap now is), exit 1."""
    path, lines = chained
    del lines[4]
    rewrite(path, lines)
    result = run_cli("audit", "verify", "--key-file", key_file(path.parent), path)
    assert (result.code, result.out.strip()) == (1, f"{path}:5: 1 line removed before this line")


def test_verify_pinpoints_swapped_lines(run_cli, chained: tuple[Path, list[bytes]]) -> None:
    """Swapping lines 5 and 6 is reported at line 5 as out of order, exit 1."""
    path, lines = chained
    lines[4], lines[5] = lines[5], lines[4]
    rewrite(path, lines)
    result = run_cli("audit", "verify", "--key-file", key_file(path.parent), path)
    assert (result.code, result.out.strip()) == (1, f"{path}:5: out of order (it belongs after {path}:6)")


def test_verify_catches_a_removed_anchor(chained: tuple[Path, list[bytes]]) -> None:
    """Cutting the first lines (with the anchor) is caught at the new first line."""
    path, lines = chained
    rewrite(path, lines[2:])
    assert check([path]) == (1, f"{path}:1: does not start with an audit.anchor line (lines removed?)")


def test_cut_tail_changes_only_the_head(chained: tuple[Path, list[bytes]]) -> None:
    """Lines cut from the end leave a valid chain: only the recorded head shows it (documented)."""
    path, lines = chained
    head = verify([path], key=KEY).head
    rewrite(path, lines[:-2])
    verdict = verify([path], key=KEY)
    assert verdict.ok and verdict.head != head and verdict.head == line_hash(lines[-3])


def test_verify_wants_rotated_files_oldest_first(tmp_path: Path) -> None:
    """Files given newest first, or with one missing in between, fail with a pointed message."""
    path = tmp_path / "audit.jsonl"
    write_events(path, 60, max_bytes=4096)
    files = rotated(path)
    code, report = check(list(reversed(files)))
    assert code == 1 and "give the files oldest first" in report
    code, report = check([files[0], *files[2:]])
    assert code == 1 and report.startswith(f"{files[2]}:1: does not continue {files[0]}")


def test_verify_a_file_from_another_chain(tmp_path: Path) -> None:
    """A second genesis anchor after lines of another chain is reported where it starts."""
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    write_events(one, 2)
    write_events(two, 2)
    assert check([one, two]) == (1, f"{two}:1: a new chain starts here; the lines before it belong "
                                    "to another chain (log replaced, or files of two installations?)")


def test_verify_refuses_a_non_audit_file(run_cli, tmp_path: Path) -> None:
    """A file with no chained lines is bad input: one line on stderr, exit 2; a missing one too."""
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"event": "x"}\nplain text\n')
    result = run_cli("audit", "verify", "--key-file", key_file(tmp_path), notes)
    assert result.code == 2 and result.out == ""
    assert result.err.strip() == (f"rotator: error: {notes}: not a rotator audit log (no hash-chained "
                                  "JSON lines) (give the file daemon.audit_log names, and its rotated "
                                  "copies)")
    missing = run_cli("audit", "verify", "--key-file", key_file(tmp_path), tmp_path / "nope.jsonl")
    assert missing.code == 2 and "nope.jsonl: no such file" in missing.err


def test_verify_reports_an_emptied_file_as_tampering(tmp_path: Path) -> None:
    """An audit file is never empty (its anchor is written on open): empty means truncated, exit 1."""
    empty = tmp_path / "audit.jsonl"
    AuditFile(empty, max_bytes=1 << 20, key=KEY).check()
    assert check([empty])[1].startswith("ok: 1 lines")
    empty.write_bytes(b"")
    assert check([empty]) == (1, f"{empty}:1: empty file: an audit log starts with an audit.anchor "
                                 "line (truncated?)")
