"""Issue 15 item 7: the audit chain is keyed, the writer notices tampering, heads are checkpointed."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.audit import events as catalogue
from rotator.audit import fingerprint as audit_hash
from rotator.audit import pipeline as audit
from rotator.audit.chain import GENESIS, AuditFile, verify
from rotator.config import parse_config
from rotator.errors import InputError
from tests.conftest import write_config

KEY = b"k" * 32


@pytest.fixture(autouse=True)
def _fresh_pipeline() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    audit.configure(stream=stream)
    yield stream
    audit.configure(stream=io.StringIO())
    audit_hash.use_ephemeral_key()


def events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def keyed_log(path: Path, count: int, **options: object) -> AuditFile:
    audit_file = audit.use_audit_file(path, max_bytes=1 << 20, key=KEY, **options)
    for index in range(count):
        audit.emit("config.warning", level="warning", warning=f"warning {index}")
    assert audit_file is not None
    return audit_file


def forge_unkeyed(path: Path, count: int) -> None:
    """What anyone can write without the key: a plain SHA-256 chain from scratch."""
    prev, lines = GENESIS, []
    for seq in range(count):
        event = "audit.anchor" if seq == 0 else "config.warning"
        body = {"ts": "2026-12-01T00:00:00.000000Z", "event": event, "level": "info",
                "chain": "f" * 32, "reason": "new", "warning": "forged", "seq": seq, "prev": prev}
        line = json.dumps(body, separators=(",", ":")).encode()
        lines.append(line)
        prev = hashlib.sha256(line).hexdigest()
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_a_log_forged_from_scratch_does_not_verify(tmp_path: Path) -> None:
    """Attack: an unkeyed chain written from scratch verified "ok"."""
    forged = tmp_path / "audit.jsonl"
    forge_unkeyed(forged, 5)
    verdict = verify([forged], key=KEY)
    assert not verdict.ok and "unkeyed" in str(verdict.problem)
    assert verify([forged], key=KEY, allow_unkeyed=True).ok  # legacy files: on request


def test_a_chain_under_another_key_does_not_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditFile(path, max_bytes=1 << 20, key=b"x" * 32).append({"event": "config.warning", "warning": "w"})
    assert verify([path], key=b"x" * 32).ok
    verdict = verify([path], key=KEY)
    assert not verdict.ok and "key" in str(verdict.problem)


def test_a_keyed_chain_needs_the_key_to_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    keyed_log(path, 2)
    with pytest.raises(InputError, match="key"):
        verify([path])


def test_writer_notices_a_file_truncated_under_it(tmp_path: Path, _fresh_pipeline: io.StringIO) -> None:
    """Attack: a running daemon silently chained onto a file truncated under it."""
    path = tmp_path / "audit.jsonl"
    keyed_log(path, 5)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]))
    audit.emit("config.warning", level="warning", warning="after the cut")
    tampered = [e for e in events(_fresh_pipeline) if e["event"] == "audit.tampered"]
    assert len(tampered) == 1 and "shrank" in tampered[0]["reason"]
    assert catalogue.validate(tampered[0]) == []
    first = json.loads(path.read_bytes().splitlines()[0])
    assert first["event"] == "audit.anchor" and first["reason"] == "tampered"
    assert (tmp_path / "audit.jsonl.1").read_bytes() == b"".join(lines[:2])
    assert verify([path], key=KEY).ok  # the new file continues what the writer last wrote


def test_writer_notices_a_changed_last_line(tmp_path: Path, _fresh_pipeline: io.StringIO) -> None:
    path = tmp_path / "audit.jsonl"
    keyed_log(path, 3)
    data = path.read_bytes()
    path.write_bytes(data[:-5] + b"X" + data[-4:])  # same size, last line changed
    audit.emit("config.warning", level="warning", warning="next")
    tampered = [e for e in events(_fresh_pipeline) if e["event"] == "audit.tampered"]
    assert len(tampered) == 1 and "changed" in tampered[0]["reason"]


def test_writer_notices_a_deleted_log(tmp_path: Path, _fresh_pipeline: io.StringIO) -> None:
    path = tmp_path / "audit.jsonl"
    keyed_log(path, 3)
    path.unlink()
    audit.emit("config.warning", level="warning", warning="next")
    tampered = [e for e in events(_fresh_pipeline) if e["event"] == "audit.tampered"]
    assert len(tampered) == 1 and "deleted" in tampered[0]["reason"]


def test_a_log_moved_away_is_not_tampering(tmp_path: Path, _fresh_pipeline: io.StringIO) -> None:
    path = tmp_path / "audit.jsonl"
    keyed_log(path, 3)
    path.rename(tmp_path / "audit.jsonl.1")  # logrotate
    audit.emit("config.warning", level="warning", warning="next")
    assert not [e for e in events(_fresh_pipeline) if e["event"] == "audit.tampered"]
    assert verify([tmp_path / "audit.jsonl.1", path], key=KEY).ok


def test_checkpoints_carry_the_head_and_expect_head_catches_a_cut_tail(
    tmp_path: Path, _fresh_pipeline: io.StringIO
) -> None:
    path = tmp_path / "audit.jsonl"
    keyed_log(path, 7, checkpoint_lines=3)
    checkpoints = [e for e in events(_fresh_pipeline) if e["event"] == "audit.checkpoint"]
    assert len(checkpoints) >= 2
    assert [p for e in checkpoints for p in catalogue.validate(e)] == []
    last = checkpoints[-1]
    assert verify([path], key=KEY, expect_head=last["head"]).ok
    assert verify([path], key=KEY, expect_head=checkpoints[0]["head"]).ok  # an older head: still in it
    # Cut the tail back before the last checkpoint: the chain is still valid, the head is gone.
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:last["head_seq"]]))
    assert verify([path], key=KEY).ok
    verdict = verify([path], key=KEY, expect_head=last["head"])
    assert not verdict.ok and "expected head" in str(verdict.problem)


def test_cli_verify_uses_the_installation_key_and_expect_head(run_cli, tmp_path: Path) -> None:
    config = write_config(tmp_path / "r.toml", login_url="http://127.0.0.1:1",
                          daemon={"audit_log": "logs/audit.jsonl"})
    result = run_cli("--config", config, "keys", "init", "sf")
    assert result.code == 0, result.err
    log = tmp_path / "logs" / "audit.jsonl"
    ok = run_cli("--config", config, "audit", "verify", log)
    assert ok.code == 0 and "keyed" in ok.out, ok.out + ok.err
    head = ok.out.split("head ")[1].split()[0].rstrip(",")
    assert run_cli("--config", config, "audit", "verify", "--expect-head", head, log).code == 0
    missing = run_cli("--config", config, "audit", "verify", "--expect-head", "0" * 64, log)
    assert missing.code == 1 and "expected head" in missing.out
    assert run_cli("audit", "verify", log).code == 2  # no key: cannot check a keyed chain


def test_the_hmac_key_is_outside_the_audit_log_glob(tmp_path: Path) -> None:
    config = parse_config({"daemon": {"audit_log": "audit.jsonl"}}, base_dir=tmp_path)
    key = audit_hash.key_path_for(config.daemon)
    assert key is not None and not key.name.startswith("audit.jsonl")


def test_a_legacy_key_next_to_the_log_is_moved_out_of_the_glob(tmp_path: Path) -> None:
    legacy = tmp_path / "audit.jsonl.hmac-key"
    legacy.write_bytes(KEY)
    os.chmod(legacy, 0o600)
    config = parse_config({"daemon": {"audit_log": "audit.jsonl"}}, base_dir=tmp_path)
    audit.use_settings(config.daemon)
    key = audit_hash.key_path_for(config.daemon)
    assert key is not None and key.read_bytes() == KEY and not legacy.exists()


def test_a_key_file_readable_by_others_is_refused(run_cli, tmp_path: Path) -> None:
    key = tmp_path / "hmac.key"
    key.write_bytes(KEY)
    os.chmod(key, 0o640)
    config = write_config(tmp_path / "r.toml", login_url="http://127.0.0.1:1",
                          daemon={"audit_hmac_key_file": str(key)})
    result = run_cli("--config", config, "keys", "init", "sf")
    assert result.code == 2
    assert str(key) in result.err and len(result.err.strip().splitlines()) == 1
