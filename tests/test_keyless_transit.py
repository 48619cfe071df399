"""signer = "vault-transit" end to end: rotator with a real OpenBao (Transit + KV v2), the
Salesforce emulator and the CLI — keys init, rotate, cert show, check, jwt, staged rollover,
failures that keep the old token, and no private key anywhere (record or process).

The OpenBao server is module-scoped and local to this module (tests.test_keys_remote_transit's
`OpenBao`), so it can be swapped for a shared fixture later. Each test uses its own Transit key
name and KV paths.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from structlog.testing import capture_logs

from rotator.config import load_config
from rotator.engine import Engine
from rotator.keys import crypto
from rotator.keys.crypto import cert_info, load_certificate
from tests.conftest import CLIENT_ID, USERNAME, write_config
from tests.test_keys_remote_transit import OpenBao

pytestmark = pytest.mark.integration
DAY = 86400.0


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    server = OpenBao(tmp_path_factory.mktemp("openbao-keyless") / "bao.log")
    try:
        server.root.sys.enable_secrets_engine("transit", path="transit")
        yield server
    finally:
        server.stop()


class Setup:
    """One credential `sf` signing with Transit key `key_name`; key record in Vault KV."""

    def __init__(self, tmp_path: Path, bao: OpenBao, endpoint: Any, *, key_in: str = "vault",
                 url: str | None = None, **overrides: Any) -> None:
        self.tmp = tmp_path
        self.bao = bao
        self.key_name = f"sf-{secrets.token_hex(4)}"
        self.kv_path = f"keyless-{secrets.token_hex(4)}/key"
        self.token_file = tmp_path / "vault-token"
        self.token_file.write_text(bao.token)
        stores = (
            '[stores.local]\ntype = "file"\npath = "store"\n'
            f'[stores.vault]\ntype = "vault"\nurl = "{url or bao.url}"\n'
            '[stores.vault.auth]\nmethod = "token"\ntoken_file = "vault-token"\n'
        )
        self.credential = {
            "signer": "vault-transit", "signer_key": f"vault:{self.key_name}",
            "key": f"vault:{self.kv_path}" if key_in == "vault" else "local:sf/key",
            "token": "local:sf/token", "publish_file": "pending.pem", **overrides,
        }
        self.config = write_config(tmp_path / "rotator.toml", login_url=endpoint.url, stores=stores,
                                   credentials={"sf": self.credential})
        self.key_in = key_in

    def record(self) -> dict[str, Any]:
        if self.key_in == "vault":
            return self.bao.root.secrets.kv.v2.read_secret_version(
                path=self.kv_path, mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
        return json.loads((self.tmp / "store" / "sf" / "key.json").read_text())

    def token_bytes(self) -> bytes:
        return (self.tmp / "store" / "sf" / "token.json").read_bytes()

    def token(self) -> dict[str, Any]:
        return json.loads(self.token_bytes())

    def transit_key(self) -> dict[str, Any]:
        return self.bao.root.secrets.transit.read_key(self.key_name)["data"]

    def public_pem(self, version: int) -> str:
        return self.transit_key()["keys"][str(version)]["public_key"]


@pytest.fixture
def setup(tmp_path: Path, bao: OpenBao, endpoint: Any, secret_guard: Any) -> Setup:
    secret_guard.add(bao.token)
    return Setup(tmp_path, bao, endpoint)


def sha(pem: str) -> str:
    return cert_info(load_certificate(pem)).sha256


def spki_pem(pem: str) -> str:
    return load_certificate(pem).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def init(run_cli, s: Setup, endpoint: Any, *args: str) -> str:
    result = run_cli("--config", s.config, "keys", "init", "sf", *args)
    assert result.code == 0, result.err
    endpoint.register_app(CLIENT_ID, result.out, users=[USERNAME])
    return result.out


def rotate(run_cli, s: Setup, *args: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = run_cli("--config", s.config, "rotate", "sf", *args)
    events = [json.loads(line) for line in result.err.splitlines() if line.startswith("{")]
    return result.json_lines()[0], events


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == name]


def assert_no_private_key(record: dict[str, Any]) -> None:
    assert not [k for k in record if "private_key" in k or "passphrase" in k], sorted(record)


# ---------------------------------------------------------------------------- the whole loop


def test_keys_init_rotate_cert_check_jwt(run_cli, setup: Setup, endpoint: Any) -> None:
    s = setup
    pem = init(run_cli, s, endpoint, "--days", "30")

    # the Transit key was made: non-exportable RSA, and the certificate carries its public key
    key = s.transit_key()
    assert key["type"] == "rsa-2048" and key["exportable"] is False and key["latest_version"] == 1
    assert spki_pem(pem) == s.public_pem(1)
    cert = load_certificate(pem)
    cert.verify_directly_issued_by(cert)  # self-signed, by Transit
    record = s.record()
    assert record["certificate"] == pem and record["key_ref"] == s.key_name and record["key_version"] == 1
    assert_no_private_key(record)

    line, events = rotate(run_cli, s)
    assert line["ok"] and line["action"] == "rotated", line
    token = s.token()
    assert token["key_sha256"] == sha(pem) and endpoint.is_valid(token["access_token"])
    loaded = named(events, "key.loaded")
    assert loaded and loaded[0]["signer"] == "vault-transit"

    shown = run_cli("--config", s.config, "cert", "show", "sf", "--json")
    assert shown.code == 0 and json.loads(shown.out)["sha256"] == sha(pem)
    assert 29 < json.loads(shown.out)["days_left"] <= 30

    checked = run_cli("--config", s.config, "check")
    assert checked.code == 0, checked.out + checked.err
    assert f"credential sf: ok (key {sha(pem)[:16]}" in checked.out

    minted = run_cli("--config", s.config, "jwt", "sf", guard=False)
    assert minted.code == 0, minted.err
    claims = jwt.decode(minted.out.strip(), cert.public_key(), algorithms=["RS256"],  # type: ignore[arg-type]
                        audience=endpoint.url)
    assert claims["sub"] == USERNAME

    status = run_cli("--config", s.config, "status", "--json")
    assert status.code == 0 and sha(pem)[:16] in status.out


def test_keys_init_uses_an_existing_key_and_refuses_a_wrong_type(run_cli, setup: Setup, bao: OpenBao,
                                                                 endpoint: Any) -> None:
    s = setup
    bao.root.secrets.transit.create_key(s.key_name, key_type="rsa-3072")
    bao.root.secrets.transit.rotate_key(s.key_name)  # latest = 2: init certifies the latest version
    pem = init(run_cli, s, endpoint)
    assert load_certificate(pem).public_key().key_size == 3072
    assert s.record()["key_version"] == 2 and spki_pem(pem) == s.public_pem(2)
    again = run_cli("--config", s.config, "keys", "init", "sf")
    assert again.code == 2 and "already holds a key record" in again.err

    (s.tmp / "ec").mkdir()
    other = Setup(s.tmp / "ec", bao, endpoint)
    bao.root.secrets.transit.create_key(other.key_name, key_type="ecdsa-p256")
    refused = run_cli("--config", other.config, "keys", "init", "sf")
    assert refused.code == 2
    assert f"Transit key {other.key_name!r}" in refused.err and "'ecdsa-p256'" in refused.err
    assert "rsa-2048" in refused.err and "Traceback" not in refused.err
    imported = run_cli("--config", s.config, "keys", "import", "sf", "--key", "k.pem", "--cert", "c.pem")
    assert imported.code == 2 and "keys import stores a PEM key" in imported.err


# ---------------------------------------------------------------------------- rollover


def test_rollover_stage_publish_pending_first_promote(run_cli, setup: Setup, endpoint: Any) -> None:
    """Transit `rotate` makes version 2 = the pending key; it is published, tried first (refused
    until uploaded), then accepted and promoted; the record keeps version 1 as previous."""
    s = setup
    old = init(run_cli, s, endpoint, "--days", "30")
    assert rotate(run_cli, s)[0]["ok"]

    staged = run_cli("--config", s.config, "keys", "rotate", "sf")
    assert staged.code == 0, staged.err
    new = staged.out
    assert s.transit_key()["latest_version"] == 2 and spki_pem(new) == s.public_pem(2)
    record = s.record()
    assert (record["pending_key_ref"], record["pending_key_version"]) == (s.key_name, 2)
    assert record["pending_certificate"] == new and record["key_version"] == 1
    assert_no_private_key(record)
    assert (s.tmp / "pending.pem").read_text() == new  # published
    assert 29 < cert_info(load_certificate(new)).lifetime_seconds / DAY <= 30.1  # same lifetime

    endpoint.reset_counters()
    line, events = rotate(run_cli, s, "--force")
    assert line["ok"] and [a.outcome for a in endpoint.token_log] == ["invalid_grant", "ok"]
    assert named(events, "key.pending_rejected") and not named(events, "key.promoted")
    assert s.token()["key_sha256"] == sha(old)

    endpoint.upload_certificate(CLIENT_ID, new)
    endpoint.reset_counters()
    line, events = rotate(run_cli, s, "--force")
    assert line["ok"] and [a.outcome for a in endpoint.token_log] == ["ok"]
    assert s.token()["key_sha256"] == sha(new) and endpoint.is_valid(s.token()["access_token"])
    assert named(events, "key.promoted")
    record = s.record()
    assert record["certificate"] == new and record["key_version"] == 2
    assert record["previous_certificate"] == old and record["previous_key_version"] == 1
    assert "pending_key_ref" not in record
    assert_no_private_key(record)
    # version 1 still exists in Transit (rotator never deletes or disables key versions)
    assert s.transit_key()["min_decryption_version"] == 1


def test_renewal_stages_on_schedule_and_discard_and_promote_commands(run_cli, tmp_path: Path, bao: OpenBao,
                                                                    endpoint: Any, secret_guard: Any) -> None:
    secret_guard.add(bao.token)
    s = Setup(tmp_path, bao, endpoint, renew_before="5d")
    init(run_cli, s, endpoint, "--days", "3")
    line, events = rotate(run_cli, s)  # inside the renewal window: the run stages a pending key
    assert line["ok"] and named(events, "key.staged") and named(events, "key.remote_created")
    assert s.record()["pending_key_version"] == 2

    discarded = run_cli("--config", s.config, "keys", "discard", "sf")
    assert discarded.code == 0 and "pending_key_ref" not in s.record()
    bits = run_cli("--config", s.config, "keys", "rotate", "sf", "--bits", "4096")
    assert bits.code == 2 and "keeps its type" in bits.err

    staged = run_cli("--config", s.config, "keys", "rotate", "sf")
    assert staged.code == 0 and s.record()["pending_key_version"] == 3
    refused = run_cli("--config", s.config, "keys", "promote", "sf")
    assert refused.code == 2 and "rejects the pending key" in refused.err
    endpoint.upload_certificate(CLIENT_ID, staged.out)
    promoted = run_cli("--config", s.config, "keys", "promote", "sf")
    assert promoted.code == 0, promoted.err
    assert s.record()["key_version"] == 3
    assert rotate(run_cli, s, "--force")[0]["ok"]
    assert s.token()["key_sha256"] == sha(staged.out)


# ---------------------------------------------------------------------------- failures


def test_permission_denied_keeps_the_old_token(run_cli, setup: Setup, bao: OpenBao, endpoint: Any,
                                               secret_guard: Any) -> None:
    s = setup
    init(run_cli, s, endpoint)
    assert rotate(run_cli, s)[0]["ok"]
    before = s.token_bytes()
    # a token that may read the key record and the Transit key, but not sign
    policy = (f'path "secret/data/{s.kv_path}" {{ capabilities = ["read"] }}\n'
              f'path "transit/keys/{s.key_name}" {{ capabilities = ["read"] }}\n')
    limited = bao.token_with_policy(f"no-sign-{s.key_name}", policy)
    secret_guard.add(limited)
    s.token_file.write_text(limited)
    line, _ = rotate(run_cli, s, "--force")
    assert not line["ok"]
    assert f"lacks 'update' on transit/sign/{s.key_name}" in line["error"]
    assert "transit-signer-policy.hcl" in line["error"]
    assert s.token_bytes() == before  # byte for byte

    # the shipped signer policy (+ KV read on the record) is enough to rotate
    shipped = Path(__file__).resolve().parent.parent / "deploy/vault/transit-signer-policy.hcl"
    policy = shipped.read_text().replace("sf-prod", s.key_name) + \
        f'path "secret/data/{s.kv_path}" {{ capabilities = ["read"] }}\n'
    signer = bao.token_with_policy(f"signer-{s.key_name}", policy)
    secret_guard.add(signer)
    s.token_file.write_text(signer)
    line, _ = rotate(run_cli, s, "--force")
    assert line["ok"], line


def test_key_deleted_keeps_the_old_token(run_cli, setup: Setup, bao: OpenBao, endpoint: Any) -> None:
    s = setup
    init(run_cli, s, endpoint)
    assert rotate(run_cli, s)[0]["ok"]
    before = s.token_bytes()
    bao.root.secrets.transit.update_key_configuration(s.key_name, deletion_allowed=True)
    bao.root.secrets.transit.delete_key(s.key_name)
    line, _ = rotate(run_cli, s, "--force")
    assert not line["ok"] and f"Transit key {s.key_name!r} not found" in line["error"]
    assert f"bao write -f transit/keys/{s.key_name}" in line["error"]
    assert s.token_bytes() == before
    checked = run_cli("--config", s.config, "check")
    assert checked.code == 1 and "credential sf: FAILED" in checked.out


def test_vault_unreachable_keeps_the_old_token(run_cli, tmp_path: Path, endpoint: Any, secret_guard: Any,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    """Its own OpenBao (stopped mid-test); the key record in the file store, so only the signer
    is missing when Vault goes away."""
    # (the dev server's log shows its root token: kept out of the guarded tmp_path)
    server = OpenBao(tmp_path_factory.mktemp("openbao-stopped") / "bao.log")
    try:
        secret_guard.add(server.token)
        server.root.sys.enable_secrets_engine("transit", path="transit")
        s = Setup(tmp_path, server, endpoint, key_in="file")
        init(run_cli, s, endpoint)
        assert_no_private_key(s.record())
        assert rotate(run_cli, s)[0]["ok"]
        before = s.token_bytes()
    finally:
        server.stop()
    line, _ = rotate(run_cli, s, "--force")
    assert not line["ok"] and server.url.removeprefix("http://") in line["error"]
    assert "StoreUnavailable" in line["error"] or "refused" in line["error"]
    assert s.token_bytes() == before


def test_config_errors_name_the_field(run_cli, tmp_path: Path, endpoint: Any) -> None:
    stores = ('[stores.local]\ntype = "file"\npath = "store"\n'
              '[stores.vault]\ntype = "vault"\nurl = "http://127.0.0.1:8200"\n'
              '[stores.aws]\ntype = "aws"\nregion = "us-east-1"\n')
    cases = [
        ({"signer": "vault-transit"}, "credentials.sf: signer = \"vault-transit\" needs signer_key"),
        ({"signer_key": "vault:sf"}, "signer_key is for signer"),
        ({"signer": "vault-transit", "signer_key": "sf-prod"},
         "credentials.sf.signer_key: expected \"STORE:NAME\""),
        ({"signer": "vault-transit", "signer_key": "nope:sf"}, "credentials.sf.signer_key: unknown store"),
        ({"signer": "vault-transit", "signer_key": "local:sf"}, "needs a vault store, 'local' is 'file'"),
        ({"signer": "aws-kms", "signer_key": "vault:alias/sf"}, "needs an aws store, 'vault' is 'vault'"),
        ({"signer": "vault-transit", "signer_key": "vault:../sys"}, "is not a Transit key name"),
        ({"signer": "aws-kms", "signer_key": "aws:alias/a b"}, "is not a KMS key id"),
        ({"signer": "hsm"}, "credentials.sf.signer:"),
    ]
    for overrides, expected in cases:
        config = write_config(tmp_path / "rotator.toml", login_url=endpoint.url, stores=stores,
                              credentials={"sf": overrides})
        result = run_cli("--config", config, "check")
        assert result.code == 2, (overrides, result.err)
        lines = [line for line in result.err.splitlines() if not line.startswith("{")]
        assert len(lines) == 1 and expected in lines[0], (overrides, lines)
    bad_mount = stores.replace('url = "http://127.0.0.1:8200"\n', 'url = "http://127.0.0.1:8200"\n'
                               'transit_mount = "../x"\n')
    config = write_config(tmp_path / "rotator.toml", login_url=endpoint.url, stores=bad_mount)
    result = run_cli("--config", config, "check")
    assert result.code == 2 and "stores.vault.transit_mount" in result.err


def test_pem_record_with_a_keyless_signer_is_diagnosed(run_cli, setup: Setup, tmp_path: Path,
                                                       endpoint: Any) -> None:
    """A credential switched to vault-transit while its record still holds a PEM: a clear error
    (and `keys init --force` is the way over), never a silent PEM signature."""
    pem_config = write_config(tmp_path / "pem.toml", login_url=endpoint.url)
    assert run_cli("--config", pem_config, "keys", "init", "sf").code == 0
    s = Setup(tmp_path, setup.bao, endpoint, key_in="file")
    line, _ = rotate(run_cli, s)
    assert not line["ok"] and "holds a private_key" in line["error"]
    assert "keys init sf --force" in line["error"]
    init(run_cli, s, endpoint, "--force")
    assert_no_private_key(s.record())
    assert rotate(run_cli, s)[0]["ok"]


# ---------------------------------------------------------------------------- no private key


def forbid_private_keys(patch: pytest.MonkeyPatch, *, allow: tuple[str, ...] = ()) -> list[str]:
    """Every public way cryptography makes a private key object raises while the patch holds,
    unless a frame of a module in `allow` is on the stack (moto, in this process, IS the key
    service: its CreateKey makes a key pair). Returns the list of refused callers."""
    refused: list[str] = []

    def guard(original: Any) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            frame = sys._getframe(1)
            while frame is not None:
                if allow and frame.f_globals.get("__name__", "").startswith(allow):
                    return original(*args, **kwargs)
                frame = frame.f_back  # type: ignore[assignment]
            refused.append(sys._getframe(1).f_globals.get("__name__", "?"))
            raise AssertionError("a private key object was about to be created")
        return refuse

    for module, name in [
        (rsa, "generate_private_key"), (ec, "generate_private_key"), (ec, "derive_private_key"),
        (serialization, "load_pem_private_key"), (serialization, "load_der_private_key"),
        (serialization, "load_ssh_private_key"), (crypto.serialization, "load_pem_private_key"),
        (crypto.rsa, "generate_private_key"), (crypto.ec, "generate_private_key"),
        (rsa.RSAPrivateNumbers, "private_key"), (ed25519.Ed25519PrivateKey, "generate"),
    ]:
        patch.setattr(module, name, guard(getattr(module, name)))
    return refused


def test_no_private_key_object_over_init_rotation_and_rollover(run_cli, setup: Setup, endpoint: Any) -> None:
    s = setup
    with pytest.MonkeyPatch.context() as patch:
        refused = forbid_private_keys(patch)
        with pytest.raises(AssertionError):
            crypto.generate_rsa_key(2048)  # the patch bites
        refused.clear()
        init(run_cli, s, endpoint)
        assert rotate(run_cli, s)[0]["ok"]
        staged = run_cli("--config", s.config, "keys", "rotate", "sf")
        assert staged.code == 0, staged.err
        endpoint.upload_certificate(CLIENT_ID, staged.out)
        line, events = rotate(run_cli, s, "--force")
        assert line["ok"] and named(events, "key.promoted")
        # an in-process engine too: its signer cache holds no private key either
        engine = Engine(load_config(s.config))
        try:
            with capture_logs():
                assert engine.rotate("sf", force=True).ok
            signer = engine.load_pair("sf", engine.read_key_record("sf")[0].current, "current", "x").signer
            assert not any(isinstance(v, rsa.RSAPrivateKey) for v in vars(signer).values())
            assert not any(isinstance(v, rsa.RSAPrivateKey) for v in vars(signer.key).values())  # type: ignore[attr-defined]
        finally:
            engine.stores.close()
        assert refused == []
    assert_no_private_key(s.record())
    assert endpoint.is_valid(s.token()["access_token"])


def test_signer_is_loaded_once_per_key_identity(setup: Setup, run_cli, endpoint: Any) -> None:
    s = setup
    init(run_cli, s, endpoint)
    engine = Engine(load_config(s.config))
    try:
        with capture_logs() as events:
            for _ in range(3):
                assert engine.rotate("sf", force=True).ok
        assert len([e for e in events if e["event"] == "key.loaded"]) == 1
    finally:
        engine.stores.close()


def test_the_documented_configs_parse(tmp_path: Path) -> None:
    """docs/keyless.md's examples are what parse_config accepts (the KMS one completes the first)."""
    import re
    import tomllib

    from rotator.config import parse_config

    text = (Path(__file__).resolve().parent.parent / "docs" / "keyless.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    first = tomllib.loads(blocks[0])
    config = parse_config(first, base_dir=tmp_path)
    cred = config.credential("sf")
    assert (cred.signer, str(cred.signer_ref)) == ("vault-transit", "vault:sf-prod")
    assert config.stores["vault"].transit_mount == "transit"  # type: ignore[union-attr]
    kms = tomllib.loads(blocks[1].replace("# ... as above", ""))
    body = {**first["credentials"]["sf"], **kms["credentials"]["sf"]}
    config = parse_config({"stores": {**first["stores"], **kms["stores"]}, "credentials": {"sf": body}},
                          base_dir=tmp_path)
    assert config.credential("sf").signer == "aws-kms"
