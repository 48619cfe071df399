"""Keys and certificates: keys init, keys import of openssl-made files, cert show, and refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from rotator.errors import KeyMaterialError
from rotator.keys.crypto import (
    KeyCache,
    cert_to_pem,
    generate_rsa_key,
    load_certificate,
    load_private_key,
    self_signed_certificate,
)
from tests.conftest import write_config

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl command line not installed")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL or "openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write_config(tmp_path / "r.toml", login_url="http://127.0.0.1:9")


def test_keys_init_writes_record_and_prints_certificate(cfg: Path, run_cli, tmp_path: Path) -> None:
    """keys init stores key + cert (0600 in 0700 dirs) and prints only the certificate."""
    result = run_cli("--config", cfg, "keys", "init", "sf", "--days", "90", "--cn", "acme-int")
    assert result.code == 0, result.err
    assert result.out.startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" not in result.out + result.err
    record_file = tmp_path / "store" / "sf" / "key.json"
    assert record_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "store" / "sf").stat().st_mode & 0o777 == 0o700
    data = json.loads(record_file.read_text())
    key = load_private_key(data["private_key"])
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    cert = load_certificate(data["certificate"])
    assert cert.subject.rfc4514_string() == "CN=acme-int"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 89 < lifetime.days <= 90


def test_keys_init_refuses_to_overwrite(cfg: Path, run_cli) -> None:
    """A second init would break the connected app: refused with exit 2 unless --force."""
    assert run_cli("--config", cfg, "keys", "init", "sf").code == 0
    again = run_cli("--config", cfg, "keys", "init", "sf")
    assert again.code == 2
    assert "already holds a key record" in again.err
    assert run_cli("--config", cfg, "keys", "init", "sf", "--force", "--bits", "3072").code == 0


def test_keys_init_bad_bits(cfg: Path, run_cli) -> None:
    """Only 2048, 3072 and 4096 bits are offered."""
    result = run_cli("--config", cfg, "keys", "init", "sf", "--bits", "1024")
    assert result.code == 2
    assert "--bits 1024" in result.err


def test_cert_show_json(cfg: Path, run_cli) -> None:
    """cert show reports subject, serial, validity, days left and the SHA-256 fingerprint."""
    run_cli("--config", cfg, "keys", "init", "sf", "--days", "30")
    shown = run_cli("--config", cfg, "cert", "show", "sf", "--json").json_lines()[0]
    assert shown["subject"] == "CN=sf"
    assert 29 < shown["days_left"] <= 30
    assert len(shown["sha256"]) == 64
    pem = run_cli("--config", cfg, "cert", "show", "sf", "--pem").out
    assert load_certificate(pem).subject.rfc4514_string() == "CN=sf"


@needs_openssl
@pytest.mark.parametrize("pkcs", ["pkcs1", "pkcs8"])
def test_import_openssl_made_key(cfg: Path, run_cli, tmp_path: Path, pkcs: str) -> None:
    """The manual recipe's server.key/server.crt (openssl genrsa/req/x509) import and sign."""
    work = tmp_path / "openssl"
    work.mkdir()
    if pkcs == "pkcs1":
        openssl("genrsa", "-traditional", "-out", "server.key", "2048", cwd=work)
    else:
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                "-out", "server.key", cwd=work)
    openssl("req", "-new", "-key", "server.key", "-out", "server.csr", "-subj", "/CN=sf-int",
            cwd=work)
    openssl("x509", "-req", "-sha256", "-days", "365", "-in", "server.csr", "-signkey",
            "server.key", "-out", "server.crt", cwd=work)
    result = run_cli("--config", cfg, "keys", "import", "sf", "--key", work / "server.key",
                     "--cert", work / "server.crt")
    assert result.code == 0, result.err
    assertion = run_cli("--config", cfg, "jwt", "sf", guard=False).out.strip()
    cert = load_certificate((work / "server.crt").read_text())
    claims = jwt.decode(assertion, cert.public_key(), algorithms=["RS256"],
                        audience="http://127.0.0.1:9")
    assert claims["iss"] == "3MVG9test.client.id"


@needs_openssl
def test_import_encrypted_key(cfg: Path, run_cli, tmp_path: Path, monkeypatch) -> None:
    """An encrypted key needs its passphrase (from a file or env, never argv)."""
    work = tmp_path / "enc"
    work.mkdir()
    (work / "pass.txt").write_text("correct horse battery\n")
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-aes-256-cbc",
            "-pass", "file:pass.txt", "-out", "server.key", cwd=work)
    openssl("req", "-new", "-x509", "-sha256", "-days", "30", "-key", "server.key", "-passin",
            "file:pass.txt", "-subj", "/CN=enc", "-out", "server.crt", cwd=work)
    args = ("--config", cfg, "keys", "import", "sf", "--key", work / "server.key",
            "--cert", work / "server.crt")
    missing = run_cli(*args)
    assert missing.code == 2
    assert "encrypted" in missing.err and "passphrase" in missing.err
    monkeypatch.setenv("ROTATOR_KEY_PASSPHRASE", "wrong")
    assert "wrong passphrase" in run_cli(*args).err
    monkeypatch.delenv("ROTATOR_KEY_PASSPHRASE")
    ok = run_cli(*args, "--passphrase-file", work / "pass.txt")
    assert ok.code == 0, ok.err
    assert run_cli("--config", cfg, "jwt", "sf", guard=False).code == 0


def _write_pair(dir_: Path, key, cert_key=None) -> tuple[Path, Path]:
    cert = self_signed_certificate(cert_key or key, common_name="x", days=30)
    key_file, cert_file = dir_ / "k.pem", dir_ / "c.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    cert_file.write_text(cert_to_pem(cert))
    return key_file, cert_file


def test_import_refusals(cfg: Path, run_cli, tmp_path: Path) -> None:
    """Mismatched pair, EC key for salesforce, 1024-bit RSA, junk files: exit 2, one line each."""
    base = ("--config", cfg, "keys", "import", "sf")
    mismatched = _write_pair(tmp_path, generate_rsa_key(), cert_key=generate_rsa_key())
    (tmp_path / "ec").mkdir()
    ec_pair = _write_pair(tmp_path / "ec", ec.generate_private_key(ec.SECP256R1()))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    (tmp_path / "small").mkdir()
    small_pair = _write_pair(tmp_path / "small", small)
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    cases = [
        (mismatched, "does not match certificate"),
        (ec_pair, "RS256 needs an RSA key"),
        (small_pair, "1024 bits; at least 2048"),
        ((junk, mismatched[1]), "not a PEM private key"),
        ((mismatched[0], junk), "not a PEM certificate"),
        ((tmp_path / "nope.key", junk), "file not found"),
    ]
    for (key_file, cert_file), expected in cases:
        result = run_cli(*base, "--key", key_file, "--cert", cert_file)
        assert result.code == 2, (expected, result.err)
        assert expected in result.err
        assert len(result.err.strip().splitlines()) == 1
        assert "Traceback" not in result.err


def test_malformed_pem_in_record(cfg: Path, run_cli, tmp_path: Path) -> None:
    """A key record whose PEM is corrupt is reported naming the record, exit 2."""
    run_cli("--config", cfg, "keys", "init", "sf")
    record = tmp_path / "store" / "sf" / "key.json"
    data = json.loads(record.read_text())
    data["private_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    record.write_text(json.dumps(data))
    result = run_cli("--config", cfg, "jwt", "sf")
    assert result.code == 2
    assert "local:sf/key: malformed PEM private key" in result.err


def test_key_cache_parses_once() -> None:
    """The same PEM in the same slot is parsed once and the key object reused."""
    pem = generate_rsa_key().private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()).decode()
    cache = KeyCache()
    first = cache.load("sf/current", pem, None, where="x")
    assert cache.load("sf/current", pem, None, where="x") is first
    assert len(cache) == 1


def test_key_cache_shares_a_key_across_slots(monkeypatch) -> None:
    """Credentials holding the same key and certificate parse and self-test it once; a slot
    that moves to another key releases the old one when no slot holds it any more."""
    import rotator.keys.crypto as crypto

    def pair() -> tuple[str, str]:
        key = generate_rsa_key()
        cert = crypto.self_signed_certificate(key, common_name="cache")
        return crypto.key_to_pem(key), crypto.cert_to_pem(cert)

    (pem1, cert1), (pem2, cert2) = pair(), pair()
    checks: list[int] = []
    real = crypto.check_pair
    monkeypatch.setattr(crypto, "check_pair", lambda *a, **k: checks.append(1) or real(*a, **k))
    cache = KeyCache()
    a = cache.load_checked("a/current", pem1, None, cert1, "RS256", where="a")
    b = cache.load_checked("b/current", pem1, None, cert1, "RS256", where="b")
    again = cache.load_checked("a/current", pem1, None, cert1, "RS256", where="a")
    assert b[0] is a[0] and (a[2], b[2], again[2]) == (True, True, False)  # fresh per slot
    assert len(checks) == 1 and len(cache) == 1
    cache.load_checked("a/current", pem2, None, cert2, "RS256", where="a")
    assert len(checks) == 2 and len(cache) == 2  # b still holds key 1
    cache.load_checked("b/current", pem2, None, cert2, "RS256", where="b")
    assert len(checks) == 2 and len(cache) == 1  # nobody holds key 1: dropped
    assert cache.load("b/current", pem2, None, where="b") is not a[0]  # key 2, parsed already
    with pytest.raises(KeyMaterialError, match="does not match"):
        cache.load_checked("c/current", pem1, None, cert2, "RS256", where="c")


def test_errors_never_echo_key_material() -> None:
    """A parse error names the field, never the key text."""
    body = (
        "-----BEGIN RSA PRIVATE KEY-----\n"
        "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
        "-----END RSA PRIVATE KEY-----\n"
    )
    with pytest.raises(KeyMaterialError) as info:
        load_private_key(body, where="vault:sf/key")
    assert "MIIBOg" not in str(info.value)
    assert info.value.diagnostics().startswith("vault:sf/key")


def test_corrupt_private_key_is_refused() -> None:
    """A key whose private half is damaged (public half intact) fails the sign/verify self-test."""
    from rotator.keys.crypto import check_pair

    good = generate_rsa_key()
    cert = self_signed_certificate(good, common_name="x", days=1)
    n = good.private_numbers()
    broken = rsa.RSAPrivateNumbers(
        p=n.p, q=n.q, d=n.d + 2, dmp1=n.dmp1 + 2, dmq1=n.dmq1 + 2, iqmp=n.iqmp,
        public_numbers=n.public_numbers,
    ).private_key(unsafe_skip_rsa_key_validation=True)
    check_pair(good, cert, where="ok")
    with pytest.raises(KeyMaterialError, match="corrupt"):
        check_pair(broken, cert, where="vault:sf/key")
