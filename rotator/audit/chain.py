"""Tamper evidence for the audit file: a hash chain over JSON lines, appended under a lock.

Each line of the audit file is one JSON object ending in `"seq": N, "prev": HEX`: `seq` counts
lines along the chain and `prev` is the SHA-256 (hex) of the previous line's bytes, without
its newline. A chain starts with an `audit.anchor` line whose prev is 64 zeros and which
carries a random chain id; a file started by size-based rotation starts with an anchor
whose prev is the hash of the old file's last line, so the chain runs across
`audit.jsonl.5 .. audit.jsonl.1 audit.jsonl` (logrotate's numbering).

Writers (threads and processes alike) take an flock on `<audit_log>.lock`, re-read the tail
of the file if another writer moved it, append one line with a single write on an O_APPEND
0600 descriptor, and fsync before releasing the lock.

`verify_files` walks the chain and names the first line that was changed, removed or
reordered. A chain cannot show lines cut from its end: record the `head` that verify prints
somewhere else to catch that.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rotator.audit.stamp import actor, timestamp
from rotator.errors import InputError
from rotator.fsutil import file_problem, make_private_dirs, trusted_dir_problem

GENESIS = "0" * 64
ANCHOR = "audit.anchor"
TAMPERED = "audit.tampered"
CHECKPOINT = "audit.checkpoint"
MAC = "hmac-sha256"  # an anchor's `mac`: the chain from it on is keyed
CHECKPOINT_LINES = 1000
CHECKPOINT_SECONDS = 300.0
KEEP = 5  # rotated files kept: audit.jsonl.1 .. audit.jsonl.5
_HEX64 = re.compile(r"[0-9a-f]{64}")


def line_hash(line: bytes) -> str:
    """The legacy chain's hash of one line: SHA-256 hex of its bytes, without the newline."""
    return hashlib.sha256(line).hexdigest()


def line_mac(key: bytes, line: bytes) -> str:
    """The keyed chain's hash of one line: HMAC-SHA256 hex under the installation key."""
    return hmac.new(key, line, hashlib.sha256).hexdigest()


def _render(fields: Mapping[str, Any], seq: int, prev: str) -> bytes:
    body = {k: v for k, v in fields.items() if k not in ("seq", "prev")}
    return json.dumps({**body, "seq": seq, "prev": prev}, separators=(",", ":"),
                      default=str).encode("ascii")


# ---------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _Tail:
    """Where the chain stands in one file: enough to append the next line."""

    dev: int
    ino: int
    size: int
    last_hash: str
    seq: int
    chain: str
    last_event: str
    valid: bool = True  # False: the file does not end with a line of a chain we can continue
    keyed: bool = False  # the file's chain is an HMAC chain
    length: int = 0  # bytes of the last line, newline included (0: not known)


Notify = Callable[[str, dict[str, Any]], None]


class AuditFile:
    """A structlog processor appending each (already redacted) event to the chained file.

    `key`: the installation key; with it the chain is keyed (HMAC-SHA256, `"mac":
    "hmac-sha256"` in each anchor), without it a plain SHA-256 chain (legacy, forgeable).
    `notify(event, fields)` reports `audit.tampered` and `audit.checkpoint` on stdout only:
    they must reach the journal even when the file is what is being attacked.
    """

    def __init__(self, path: Path, *, max_bytes: int, keep: int = KEEP, key: bytes | None = None,
                 notify: Notify | None = None, checkpoint_lines: int = CHECKPOINT_LINES,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.max_bytes = max_bytes
        self.keep = keep
        self.failures = 0
        self._key = key
        self._notify = notify
        self._checkpoint_lines = checkpoint_lines
        self._checkpoint_seconds = checkpoint_seconds
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._lock = threading.Lock()
        self._tail: _Tail | None = None
        self._held: int | None = None  # an fd on the inode we last wrote: was it deleted?
        # (dev, ino) -> (chain id, keyed) of that file, from its first line
        self._chains: dict[tuple[int, int], tuple[str, bool] | None] = {}

    def __call__(self, _logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        # A failed write must not turn a finished rotation into a failed one: the event still
        # reaches stdout, marked, and `failures` counts it (a metric for the daemon).
        try:
            self.append(event_dict)
        except OSError as exc:
            self.failures += 1
            event_dict["audit_file_error"] = f"{self.path}: {exc.strerror or exc}"
        return event_dict

    def check(self) -> None:
        """Open (creating it, with its anchor) now, so a bad path fails before any work."""
        problem = trusted_dir_problem(self.path.parent)
        if problem is not None:
            raise InputError(f"{self.path}: refusing the audit log: {problem}",
                             hint="another user could replace or cut it there")
        try:
            make_private_dirs(self.path.parent)
            with self._locked() as fd:
                self._ready(fd)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot open the audit log ({exc.strerror})",
                             hint="check daemon.audit_log and the directory's owner") from None

    def append(self, fields: Mapping[str, Any]) -> None:
        with self._locked() as fd:
            tail = self._ready(fd)
            line = _render(fields, tail.seq + 1, tail.last_hash)
            if tail.size + len(line) + 1 > self.max_bytes and tail.last_event != ANCHOR:
                tail = self._rotate(fd, tail, "rotated")
                line = _render(fields, tail.seq + 1, tail.last_hash)
            tail = self._write(fd, line, tail.seq + 1, tail.chain, str(fields.get("event", "")))
            self._since_checkpoint += 1
            if (self._since_checkpoint >= self._checkpoint_lines
                    or time.monotonic() - self._last_checkpoint >= self._checkpoint_seconds):
                self._checkpoint(tail)

    def digest(self, line: bytes) -> str:
        """The chain's hash of one line under this writer's mode."""
        return line_mac(self._key, line) if self._key is not None else line_hash(line)

    # -- internals (all under the lock)

    def _checkpoint(self, tail: _Tail) -> None:
        self._since_checkpoint, self._last_checkpoint = 0, time.monotonic()
        if self._notify is not None:
            self._notify(CHECKPOINT, {"file": str(self.path), "chain": tail.chain, "head": tail.last_hash,
                                      "head_seq": tail.seq, "keyed": tail.keyed})

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        with self._lock:
            lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                fd = self._open()
                try:
                    yield fd
                finally:
                    os.close(fd)
            finally:
                os.close(lock_fd)  # releases the flock

    def _open(self) -> int:
        """The audit file, never through a symlink, and only if it is ours."""
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        problem = file_problem(os.fstat(fd), self.path)
        if problem is not None:
            os.close(fd)
            raise OSError(errno.EPERM, f"refusing it: {problem}")
        return fd

    def _ready(self, fd: int) -> _Tail:
        """The tail to chain onto, starting the file (anchor) or moving a broken one aside."""
        tampered = self._tampering(fd)
        known = self._tail
        if tampered is not None and known is not None:
            return self._after_tampering(fd, known, tampered)
        tail = self._read_tail(fd)
        if tail.size == 0:
            if known is not None and known.valid:  # moved away under us (logrotate): go on
                return self._anchor(fd, known.last_hash, known.seq + 1, known.chain, "continued")
            return self._anchor(fd, GENESIS, 0, secrets.token_hex(16), "new")
        if not tail.valid:
            return self._rotate(fd, tail, "restarted")
        if self._key is not None and not tail.keyed:
            return self._rotate(fd, tail, "keyed")  # a legacy chain: continue it keyed
        return tail

    def _tampering(self, fd: int) -> str | None:
        """What happened to the line we wrote last, if someone else changed it: the file
        shrank, the line is no longer where we wrote it, or the file was deleted. Cheap: one
        fstat and one pread of that line per append."""
        known = self._tail
        if known is None or known.length == 0:
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (known.dev, known.ino):
            if st.st_size == 0 and self._held is not None and os.fstat(self._held).st_nlink == 0:
                return "deleted (the file this process wrote was removed, not moved)"
            return None  # rotated or moved: another writer's file, or a new one
        if st.st_size < known.size:
            return f"shrank from {known.size} to {st.st_size} bytes under the writer"
        line = os.pread(fd, known.length, known.size - known.length)
        if not line.endswith(b"\n") or self.digest(line[:-1]) != known.last_hash:
            return f"changed (the last line this process wrote, seq {known.seq}, is not there)"
        return None

    def _after_tampering(self, fd: int, known: _Tail, reason: str) -> _Tail:
        """Report on stdout, move the file aside (verify points at it) and start a new file
        that continues the chain from the last line this process wrote."""
        moved_to = None
        if os.fstat(fd).st_size > 0:
            moved_to = str(self._shift())
            self._reopen(fd)
        if self._notify is not None:
            self._notify(TAMPERED, {"file": str(self.path), "reason": reason, "moved_to": moved_to,
                                    "head": known.last_hash, "head_seq": known.seq})
        return self._anchor(fd, known.last_hash, known.seq + 1, known.chain, "tampered")

    def _rotate(self, fd: int, tail: _Tail, reason: str) -> _Tail:
        """Shift audit.jsonl -> .1 -> .2 ... (dropping the oldest); anchor the new file."""
        self._shift()
        self._reopen(fd)
        chain = tail.chain if tail.valid else secrets.token_hex(16)
        seq = tail.seq + 1 if tail.valid else 0
        return self._anchor(fd, tail.last_hash, seq, chain, reason)

    def _shift(self) -> Path:
        for index in range(self.keep - 1, 0, -1):
            older = self._numbered(index)
            if older.exists():
                os.replace(older, self._numbered(index + 1))
        os.replace(self.path, self._numbered(1))
        return self._numbered(1)

    def _reopen(self, fd: int) -> None:
        new_fd = self._open()
        try:
            os.dup2(new_fd, fd)  # the caller's descriptor now points at the new file
        finally:
            os.close(new_fd)

    def _numbered(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _anchor(self, fd: int, prev: str, seq: int, chain: str, reason: str) -> _Tail:
        fields: dict[str, Any] = {"ts": timestamp(), "event": ANCHOR, "level": "info", "chain": chain,
                                  "reason": reason, "actor": actor()}
        if self._key is not None:
            fields["mac"] = MAC
        tail = self._write(fd, _render(fields, seq, prev), seq, chain, ANCHOR)
        _fsync_dir(self.path.parent)
        return tail

    def _write(self, fd: int, line: bytes, seq: int, chain: str, event: str) -> _Tail:
        data = line + b"\n"
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
        st = os.fstat(fd)
        keyed = self._key is not None
        self._chains[(st.st_dev, st.st_ino)] = (chain, keyed)
        if self._tail is None or (self._tail.dev, self._tail.ino) != (st.st_dev, st.st_ino):
            if self._held is not None:
                os.close(self._held)
            self._held = os.dup(fd)
        self._tail = _Tail(st.st_dev, st.st_ino, st.st_size, self.digest(line), seq, chain, event,
                           keyed=keyed, length=len(line) + 1)
        return self._tail

    def _read_tail(self, fd: int) -> _Tail:
        st = os.fstat(fd)
        known = self._tail
        if known is not None and (known.dev, known.ino, known.size) == (st.st_dev, st.st_ino, st.st_size):
            return known  # nobody wrote since our last line (and _tampering saw it unchanged)
        if st.st_size == 0:
            return _Tail(st.st_dev, st.st_ino, 0, GENESIS, -1, "", "")
        last = _last_line(fd, st.st_size)
        found = self._chain_of(fd, st)
        data = _parse(last[:-1]) if last.endswith(b"\n") else None
        body = last.rstrip(b"\n")
        chain, keyed = found if found is not None else ("", False)
        # A keyed file cannot be continued without the key: start over (as for a torn line).
        if data is None or found is None or (keyed and self._key is None):
            return _Tail(st.st_dev, st.st_ino, st.st_size, self.digest(body), -1, chain, "",
                         valid=False)
        return _Tail(st.st_dev, st.st_ino, st.st_size, self.digest(body), data["seq"], chain,
                     data["event"], keyed=keyed, length=len(last))

    def _chain_of(self, fd: int, st: os.stat_result) -> tuple[str, bool] | None:
        """The chain id and mode from the file's first line (its anchor); None if it has none."""
        key = (st.st_dev, st.st_ino)
        if key not in self._chains:
            first = os.pread(fd, 65536, 0).split(b"\n", 1)[0]
            data = _parse(first)
            ok = data is not None and data["event"] == ANCHOR and isinstance(data.get("chain"), str)
            self._chains[key] = (data["chain"], data.get("mac") == MAC) if ok and data is not None else None
        return self._chains[key]


def _last_line(fd: int, size: int) -> bytes:
    """The file's last line, with its newline if it has one."""
    end, buf = size, b""
    while end > 0:
        start = max(0, end - 8192)
        buf = os.pread(fd, end - start, start) + buf
        end = start
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut >= 0:
            return buf[cut + 1:]
    return buf


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse(raw: bytes) -> dict[str, Any] | None:
    """The line as a chain line (an object with event, int seq, hex prev), else None."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError included
        return None
    if not isinstance(data, dict):
        return None
    seq, prev, event = data.get("seq"), data.get("prev"), data.get("event")
    if (not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(event, str)
            or not isinstance(prev, str) or not _HEX64.fullmatch(prev)):
        return None
    return data


# ---------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class _Line:
    file: str
    number: int
    data: dict[str, Any] | None  # None: not a chain line
    sha: str  # SHA-256 of the line: what an unkeyed (legacy) chain links with
    mac: str | None  # HMAC-SHA256 under the key given to verify: what a keyed chain links with
    torn: bool = False  # the file's last line, without its newline

    @property
    def where(self) -> str:
        return f"{self.file}:{self.number}"

    @property
    def hashes(self) -> tuple[str, ...]:
        return (self.sha,) if self.mac is None else (self.sha, self.mac)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    lines: int
    chain: str | None
    head: str | None
    problem: str | None = None
    from_genesis: bool = True
    keyed: bool = False
    notes: tuple[str, ...] = ()

    def report(self) -> str:
        if not self.ok:
            return str(self.problem)
        text = f"ok: {self.lines} lines, chain {self.chain}, head {self.head}, "
        text += "keyed" if self.keyed else "UNKEYED (legacy: anyone can forge it)"
        if not self.from_genesis:
            text += " (the first file continues an older one not given)"
        return " ".join([text, *self.notes])


def verify_files(paths: Sequence[Path], out: TextIO | None = None, *, key: bytes | None = None,
                 expect_head: str | None = None, allow_unkeyed: bool = False) -> int:
    """`rotator audit verify FILE...` (oldest first): 0 ok, 1 chain broken, 2 not an audit log."""
    verdict = verify(paths, key=key, expect_head=expect_head, allow_unkeyed=allow_unkeyed)
    print(verdict.report(), file=out or sys.stdout)
    return 0 if verdict.ok else 1


_RECENT = 100_000  # earlier line hashes kept to name where a reordered line belongs


def verify(paths: Sequence[Path], *, key: bytes | None = None, expect_head: str | None = None,
           allow_unkeyed: bool = False) -> Verdict:
    """Walk the chain through `paths` (oldest first), streaming: memory stays flat.

    A keyed chain needs `key` (else InputError). An all-unkeyed (legacy) chain fails unless
    `allow_unkeyed`: anyone can write one from scratch. `expect_head`: a head recorded
    earlier (an `audit.checkpoint` in the journal) must be one of the chain's line hashes,
    which catches lines cut from the end.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        if _is_empty(path):
            return Verdict(False, 0, None, None, f"{path}:1: empty file: an audit log starts with "
                           "an audit.anchor line (truncated?)")
    lines = _Stream(paths, key)
    first: _Line | None = None
    before: _Line | None = None
    keyed = False
    keyed_from: str | None = None
    head_at: str | None = None
    recent: OrderedDict[str, str] = OrderedDict()  # line hash -> where, oldest first
    for line in lines:
        line_keyed = keyed
        if line.data is not None and line.data["event"] == ANCHOR:
            line_keyed = line.data.get("mac") == MAC
            if keyed and not line_keyed:
                return Verdict(False, lines.count, None, None, f"{line.where}: an unkeyed anchor "
                               "inside a keyed chain (forged, or files of two installations?)")
            if line_keyed and key is None:
                raise InputError(f"{line.where}: a keyed audit chain: verifying it needs the "
                                 "installation's audit HMAC key",
                                 hint="pass the daemon's --config, or --key-file")
        problem = _problem(line, before, first, lines, recent, line_keyed)
        if problem is not None:
            return Verdict(False, lines.count, None, None, problem)
        if line_keyed and not keyed:
            keyed_from = line.where
        keyed = line_keyed
        first = first or line
        chain_hash = line.mac if keyed and line.mac is not None else line.sha
        if expect_head is not None and chain_hash == expect_head:
            head_at = line.where
        for digest in line.hashes:
            recent[digest] = line.where
        while len(recent) > 2 * _RECENT:
            recent.popitem(last=False)
        before = line
    assert first is not None and first.data is not None and before is not None
    head = before.mac if keyed and before.mac is not None else before.sha
    if not keyed and not allow_unkeyed:
        return Verdict(False, lines.count, None, None, f"{first.where}: an unkeyed (legacy) chain: "
                       "anyone can write one from scratch; pass --allow-unkeyed to check it anyway")
    notes: list[str] = []
    if keyed and keyed_from is not None and keyed_from != first.where:
        notes.append(f"(keyed from {keyed_from}; the lines before are legacy lines it pins)")
    if expect_head is not None:
        if head_at is None:
            return Verdict(False, lines.count, None, None, f"expected head {expect_head} is not in "
                           "this chain (lines cut from the end, a deleted file, or another chain)")
        notes.append(f"(expected head found at {head_at})")
    return Verdict(True, lines.count, first.data["chain"], head,
                   from_genesis=first.data["prev"] == GENESIS, keyed=keyed, notes=tuple(notes))


def _is_empty(path: Path) -> bool:
    """Also the input checks: missing, unreadable, or not an audit log at all (exit 2)."""
    try:
        if path.stat().st_size == 0:
            return True
        with path.open("rb") as file:
            if any(_parse(raw.rstrip(b"\n")) is not None for raw in file):
                return False
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    raise InputError(f"{path}: not a rotator audit log (no hash-chained JSON lines)",
                     hint="give the file daemon.audit_log names, and its rotated copies")


def _read(paths: Sequence[Path], key: bytes | None) -> Iterator[_Line]:
    for path in paths:
        try:
            with path.open("rb") as file:
                for number, raw in enumerate(file, start=1):
                    torn = not raw.endswith(b"\n")
                    body = raw if torn else raw[:-1]
                    mac = line_mac(key, body) if key is not None else None
                    yield _Line(str(path), number, _parse(body), line_hash(body), mac, torn)
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None


class _Stream:
    """The lines of all files in order, with one line of lookahead."""

    def __init__(self, paths: Sequence[Path], key: bytes | None) -> None:
        self._lines = _read(paths, key)
        self._ahead: list[_Line] = []
        self.count = 0

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> _Line:
        line = self._ahead.pop() if self._ahead else next(self._lines)
        self.count += 1
        return line

    def peek(self) -> _Line | None:
        if not self._ahead:
            line = next(self._lines, None)
            if line is None:
                return None
            self._ahead.append(line)
        return self._ahead[0]

    def find(self, digest: str) -> str | None:
        """Where a later line has hash `digest` (consumes the rest of the stream)."""
        return next((line.where for line in self if digest in line.hashes), None)


def _problem(line: _Line, before: _Line | None, first: _Line | None, lines: _Stream,
             recent: Mapping[str, str], keyed: bool) -> str | None:
    data = line.data
    if line.torn:
        return f"{line.where}: incomplete last line (no newline: a torn write, or cut)"
    if data is None:
        return f"{line.where}: not an audit line (changed, or a torn write)"
    if before is None or first is None:
        if data["event"] != ANCHOR or not isinstance(data.get("chain"), str):
            return f"{line.where}: does not start with an audit.anchor line (lines removed?)"
        return None
    assert before.data is not None and first.data is not None
    expected = before.mac if keyed else before.sha
    if data["prev"] != expected:
        if keyed and data["prev"] == before.sha:
            return f"{line.where}: changed (an unkeyed link inside a keyed chain: forged?)"
        return _diagnose(line, before, lines, recent, keyed)
    if data["seq"] != before.data["seq"] + 1:
        return f"{line.where}: changed (seq {data['seq']} does not follow {before.data['seq']})"
    chain = first.data["chain"]
    if data["event"] == ANCHOR and data.get("chain") != chain:
        return f"{line.where}: changed (an anchor of chain {data.get('chain')} inside chain {chain})"
    return None


def _diagnose(line: _Line, before: _Line, lines: _Stream, recent: Mapping[str, str],
              keyed: bool) -> str:
    """`line` does not chain onto the line before it: say what most likely happened."""
    assert line.data is not None and before.data is not None
    prev, gap = line.data["prev"], line.data["seq"] - before.data["seq"] - 1
    new_file = line.file != before.file
    if line.data["event"] == ANCHOR and prev == GENESIS:
        return (f"{line.where}: a new chain starts here; the lines before it belong to another "
                "chain (log replaced, or files of two installations?)")
    after = lines.peek()
    earlier = recent.get(prev)
    later = lines.find(prev) if earlier is None else None
    if new_file and (gap < 0 or later is not None):
        return (f"{line.where}: does not continue {before.file}: give the files oldest first "
                "(e.g. audit.jsonl.2 audit.jsonl.1 audit.jsonl)")
    if earlier or later:
        return f"{line.where}: out of order (it belongs after {earlier or later})"
    if new_file:
        return f"{line.where}: does not continue {before.file} ({max(gap, 0)} lines missing between them)"
    if gap > 0:
        return f"{line.where}: {gap} line{'s' if gap > 1 else ''} removed before this line"
    if gap == 0:
        if keyed and before.number == 1 and before.data["event"] == ANCHOR:
            return (f"{line.where}: does not match under this key (the wrong key, or the chain "
                    "was forged or changed)")
        if after is not None and after.data is not None and after.data["prev"] not in line.hashes:
            return f"{line.where}: changed (its prev no longer matches {before.where})"
        return f"{before.where}: changed (its hash no longer matches the next line's prev)"
    return f"{line.where}: out of order or changed (seq {line.data['seq']} after {before.data['seq']})"
