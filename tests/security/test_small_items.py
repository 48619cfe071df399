"""Issue 15 item 12: trailing newlines, publish_file's directory mode, `audit hash VALUE`,
a discarded key lingering in `.prev`, unkeyed content hashes as versions, PBKDF2 cost."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator.config import load_config, parse_ref
from rotator.errors import ConfigError, KeyMaterialError
from rotator.keys.crypto import load_private_key
from rotator.keys.publish import _publish_file
from rotator.stores.aws import request_token
from rotator.stores.file import FileStore
from tests.conftest import CLIENT_ID, USERNAME, write_config

# ---------------------------------------------------------------------------- trailing newline


@pytest.mark.parametrize("ref", ["local:sf/key\n", "local\n:sf/key", "local:sf\n/key"])
def test_refs_with_a_newline_are_refused(ref: str) -> None:
    """Attack: `^...$` with `match` accepts a trailing newline ("sf/key\\n" became a path)."""
    with pytest.raises(ValueError):
        parse_ref(ref)


def test_names_with_a_trailing_newline_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('[stores."local\\n"]\ntype = "file"\npath = "store"\n')
    with pytest.raises(ConfigError, match=r"stores\.local"):
        load_config(path)
    path.write_text('[stores.local]\ntype = "file"\npath = "store"\n[credentials."sf\\n"]\n'
                    'provider = "salesforce"\nclient_id = "c"\nusername = "u"\n'
                    'key = "local:k"\ntoken = "local:t"\n')
    with pytest.raises(ConfigError, match=r"credentials\.sf"):
        load_config(path)


@pytest.mark.parametrize(("section", "field"), [
    ("daemon", {"audit_log": "audit.jsonl\n"}),
    ("credential", {"publish_file": "sf.crt\n"}),
])
def test_file_paths_with_a_trailing_newline_are_refused(tmp_path: Path, section: str,
                                                          field: dict[str, str]) -> None:
    kwargs: dict[str, Any] = {"daemon": field} if section == "daemon" else {"credentials": {"sf": field}}
    path = write_config(tmp_path / "r.toml", login_url="http://127.0.0.1:1", **kwargs)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert next(iter(field)) in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------- publish_file


def test_publish_file_directories_ignore_the_umask(tmp_path: Path) -> None:
    """Attack: under `umask 000` publish_file's new directories were world-writable, so another
    user could swap the certificate a pipeline uploads."""
    target = tmp_path / "pub" / "deep" / "sf.crt"
    old = os.umask(0)
    try:
        _publish_file(target, "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    finally:
        os.umask(old)
    for folder in (tmp_path / "pub", tmp_path / "pub" / "deep"):
        assert folder.stat().st_mode & 0o777 == 0o755, oct(folder.stat().st_mode)
    assert target.stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------- audit hash


def test_audit_hash_refuses_a_token_in_argv(run_cli, tmp_path: Path) -> None:
    config = write_config(tmp_path / "r.toml", login_url="http://127.0.0.1:1",
                          daemon={"state_dir": "state"})
    refused = run_cli("--config", config, "audit", "hash", "00Dxx0000001gPL!AQ4AQFakeTokenValue")
    assert refused.code == 2 and "stdin" in refused.err
    assert len([line for line in refused.err.splitlines() if line.startswith("rotator:")]) == 1
    ok = run_cli("--config", config, "audit", "hash", "-", stdin="some-token\n")
    assert ok.code == 0 and ok.out.startswith("hmac-sha256:")


# ---------------------------------------------------------------------------- discard scrubs .prev


def test_discard_leaves_no_copy_of_the_pending_key(run_cli, endpoint: Any, tmp_path: Path) -> None:
    """Attack: after `keys discard` the discarded private key stayed in `key.json.prev`."""
    config = write_config(tmp_path / "r.toml", login_url=endpoint.url)
    cli = ("--config", config, "keys")
    created = run_cli(*cli, "init", "sf")
    assert created.code == 0, created.err
    endpoint.register_app(CLIENT_ID, created.out, users=[USERNAME])
    assert run_cli(*cli, "rotate", "sf").code == 0
    key_file = tmp_path / "store" / "sf" / "key.json"
    pending = json.loads(key_file.read_text())["pending_private_key"].splitlines()[5]  # a body line
    assert run_cli(*cli, "discard", "sf").code == 0
    leftovers = [p.name for p in key_file.parent.iterdir() if pending in p.read_text(errors="replace")]
    assert leftovers == []


# ---------------------------------------------------------------------------- keyed versions


def test_file_store_versions_are_not_content_hashes(tmp_path: Path) -> None:
    """Attack: the version (in audit lines, status, metadata) was sha256(record)[:20], so a
    low-entropy record could be confirmed by guessing."""
    store = FileStore("local", tmp_path / "root")
    written = store.write("t", {"access_token": "short"}, expected_version=None)
    raw = (tmp_path / "root" / "t.json").read_bytes()
    assert written.version != hashlib.sha256(raw).hexdigest()[:20]
    record = store.read("t")
    assert record is not None and record.version == written.version  # still stable
    assert FileStore("local", tmp_path / "root").read("t").version == written.version  # across processes


def test_aws_request_token_is_not_a_content_hash() -> None:
    payload = '{"access_token":"short"}'
    token = request_token(None, payload)
    assert token != hashlib.sha256(b"rotator-record\0" + payload.encode()).hexdigest()
    assert token == request_token(None, payload)  # a retried write keeps its token


# ---------------------------------------------------------------------------- PBKDF2 cost


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _parse(data: bytes) -> list[tuple[int, Any]]:
    items, i = [], 0
    while i < len(data):
        tag, n = data[i], data[i + 1]
        i += 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(data[i:i + k], "big")
            i += k
        body = data[i:i + n]
        i += n
        items.append((tag, _parse(body) if tag == 0x30 else body))
    return items


def _encode(items: list[tuple[int, Any]]) -> bytes:
    return b"".join(_tlv(tag, _encode(body) if tag == 0x30 else body) for tag, body in items)


def with_iterations(pem: bytes, iterations: int) -> str:
    """Rewrite an encrypted PKCS#8 key's PBKDF2 iteration count."""
    body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    tree = _parse(base64.b64decode(body))
    kdf_params = tree[0][1][0][1][1][1][0][1][1][1]  # EncryptedPrivateKeyInfo.alg.params.kdf.params
    kdf_params[1] = (0x02, iterations.to_bytes((iterations.bit_length() + 8) // 8, "big"))
    encoded = base64.encodebytes(_encode(tree)).decode().replace("\n", "")
    lines = [encoded[i:i + 64] for i in range(0, len(encoded), 64)]
    return "\n".join(["-----BEGIN ENCRYPTED PRIVATE KEY-----", *lines,
                      "-----END ENCRYPTED PRIVATE KEY-----", ""])


def test_a_huge_pbkdf2_iteration_count_is_refused_quickly(secret_guard) -> None:
    """Attack: an encrypted key with a billions-of-rounds PBKDF2 count stalled loading."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"passphrase-1"))
    secret_guard.add(pem.decode())
    assert load_private_key(with_iterations(pem, 2048), passphrase="passphrase-1") is not None
    started = time.monotonic()
    with pytest.raises(KeyMaterialError) as err:
        load_private_key(with_iterations(pem, 40_000_000), passphrase="passphrase-1",
                         where="local:sf/key")
    assert time.monotonic() - started < 2
    assert "local:sf/key" in err.value.diagnostics() and "iteration" in err.value.diagnostics()
