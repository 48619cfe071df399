"""Secret hygiene: file modes, process arguments, what hooks inherit, and TLS that stays on.

* Everything rotator writes — store records, their `.prev` copies and locks, state.json, the
  audit log and its lock, the audit HMAC key, and every directory it creates — is 0600 / 0700
  even under `umask 000` (the published certificate is 0644 on purpose: it is public).
* No secret appears in the daemon's or the upload hook's command line (/proc/PID/cmdline),
  and the hook's environment holds only PATH-like basics and non-secret ROTATOR_* facts, not
  VAULT_TOKEN, AWS keys or a passphrase the daemon itself was given.
* TLS verification has no off switch: no config key turns it off, plain http is refused for
  any host that is not loopback, and the environment variables other tools honour
  (CURL_CA_BUNDLE="", PYTHONHTTPSVERIFY=0, VAULT_SKIP_VERIFY) change nothing.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rotator.config import parse_config
from rotator.errors import ConfigError
from rotator.keys.publish import HOOK_ENV
from tests.conftest import CLIENT_ID, USERNAME, rotator_subprocess_env, write_config
from tests.reliability.conftest import wait_for

pytestmark = pytest.mark.integration

FAKE_VAULT_TOKEN = "hvs.CAESIFakeVaultTokenForTheHygieneTest0123456789"
FAKE_AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYFAKEAWSSECRETKEY"
FAKE_PASSPHRASE = "a passphrase nobody may see 4711"
HOOK = """#!/bin/sh
# the upload hook: records what it was given (argv, environment, stdin)
out="$1"
tr '\\0' '\\n' < /proc/$$/cmdline > "$out.cmdline"
tr '\\0' '\\n' < /proc/$$/environ > "$out.environ"
cat > "$out.stdin"
"""


def umask0() -> None:
    os.umask(0)


def rotator(
    *args: Any, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rotator", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=rotator_subprocess_env(**(env or {})),
        preexec_fn=umask0,
        cwd=cwd,
    )


def test_everything_rotator_writes_is_private_even_under_umask_000(
    tmp_path, endpoint, secret_guard, report
) -> None:
    """Under umask 000 every file rotator writes is 0600 and every directory it makes is 0700."""
    config = write_config(
        tmp_path / "rotator.toml",
        login_url=endpoint.url,
        daemon={"state_dir": "var/state", "audit_log": "var/log/audit.jsonl"},
        credentials={"sf": {"every": "1s", "publish_file": "public/sf.crt", "renew_before": "400d"}},
    )
    made = rotator("--config", config, "keys", "init", "sf")
    assert made.returncode == 0, made.stderr
    endpoint.register_app(CLIENT_ID, made.stdout, users=[USERNAME])
    for _ in range(2):  # the second write leaves a .prev copy
        done = rotator("--config", config, "rotate", "sf", "--force")
        assert done.returncode == 0, done.stdout + done.stderr
    with open(tmp_path / "daemon.out", "wb") as out, open(tmp_path / "daemon.err", "wb") as err:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "rotator", "--config", str(config), "run"],
            stdout=out,
            stderr=err,
            env=rotator_subprocess_env(),
            preexec_fn=umask0,
        )
    try:
        wait_for(lambda: (tmp_path / "var" / "state" / "state.json").exists(), 15, "state.json")
    finally:
        daemon.terminate()
        assert daemon.wait(15) == 0

    written = [tmp_path / "store", tmp_path / "var"]
    files = [p for root in written for p in [root, *root.rglob("*")]]
    public = tmp_path / "public" / "sf.crt"
    assert public.exists() and stat.S_IMODE(public.stat().st_mode) == 0o644  # a certificate: public
    wrong = []
    for path in files:
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if mode != want:
            wrong.append(f"{path.relative_to(tmp_path)}: {oct(mode)} (want {oct(want)})")
    names = {p.name for p in files}
    assert {
        "token.json",
        "token.json.prev",
        "token.json.lock",
        "key.json",
        "state.json",
        "audit.jsonl",
        "audit.jsonl.lock",
        "audit-hmac.key",
    } <= names, names
    report.record("hygiene", check="file modes under umask 000", items=len(files), problems=wrong)
    assert wrong == []


def test_no_secret_in_command_lines_or_in_what_the_upload_hook_inherits(
    tmp_path, endpoint, rsa_keys, secret_guard, report
) -> None:
    """No secret in the daemon's or the hook's cmdline, nor in the environment the hook inherits."""
    for value in (FAKE_VAULT_TOKEN, FAKE_AWS_SECRET, FAKE_PASSPHRASE):
        secret_guard.add(value)
    hook = tmp_path / "hook.sh"
    hook.write_text(HOOK)
    hook.chmod(0o700)
    seen = tmp_path / "hook-saw"
    config = write_config(
        tmp_path / "rotator.toml",
        login_url=endpoint.url,
        credentials={"sf": {"every": "1h", "renew_before": "400d", "upload_hook": [str(hook), str(seen)]}},
    )
    store = tmp_path / "store" / "sf"
    store.mkdir(parents=True, mode=0o700)
    (store / "key.json").write_text(
        json.dumps({"private_key": rsa_keys[0].key_pem, "certificate": rsa_keys[0].cert_pem})
    )
    endpoint.register_app(CLIENT_ID, rsa_keys[0].cert_pem, users=[USERNAME])
    env = rotator_subprocess_env(
        VAULT_TOKEN=FAKE_VAULT_TOKEN,
        AWS_SECRET_ACCESS_KEY=FAKE_AWS_SECRET,
        AWS_ACCESS_KEY_ID="AKIAFAKEFAKEFAKEFAKE",
        ROTATOR_KEY_PASSPHRASE=FAKE_PASSPHRASE,
        SF_PASSWORD="hunter2hunter2",
    )
    with open(tmp_path / "daemon.out", "wb") as out, open(tmp_path / "daemon.err", "wb") as err:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "rotator", "--config", str(config), "run"], stdout=out, stderr=err, env=env
        )
    try:
        wait_for(
            lambda: Path(f"{seen}.stdin").exists() and Path(f"{seen}.stdin").stat().st_size,
            20,
            "the upload hook (renew_before makes the first run stage a key)",
        )
        daemon_cmdline = Path(f"/proc/{daemon.pid}/cmdline").read_bytes().decode()
    finally:
        daemon.terminate()
        assert daemon.wait(15) == 0

    record = json.loads((store / "key.json").read_text())
    assert record.get("pending_private_key"), "the key was staged"
    secrets_now = [
        FAKE_VAULT_TOKEN,
        FAKE_AWS_SECRET,
        FAKE_PASSPHRASE,
        "hunter2hunter2",
        *endpoint.issued,
        *_pem_lines(record["private_key"]),
        *_pem_lines(record["pending_private_key"]),
    ]
    hook_cmdline = Path(f"{seen}.cmdline").read_text()
    hook_environ = Path(f"{seen}.environ").read_text()
    hook_stdin = Path(f"{seen}.stdin").read_text()
    for where, text in (
        ("daemon cmdline", daemon_cmdline),
        ("hook cmdline", hook_cmdline),
        ("hook environment", hook_environ),
        ("hook stdin", hook_stdin),
    ):
        for secret in secrets_now:
            assert secret not in text, f"{where} holds a secret ({secret[:6]}…)"
    names = {line.split("=", 1)[0] for line in hook_environ.splitlines() if "=" in line}
    allowed = set(HOOK_ENV) | {
        "ROTATOR_CREDENTIAL",
        "ROTATOR_CLIENT_ID",
        "ROTATOR_CERT_SHA256",
        "ROTATOR_CERT_NOT_AFTER",
        "PWD",
        "SHLVL",
        "_",
    }  # the last three: sh's own
    assert names <= allowed, names - allowed
    assert hook_cmdline.split("\n")[:2] == ["/bin/sh", str(hook)] or str(hook) in hook_cmdline
    assert hook_stdin.startswith("-----BEGIN CERTIFICATE-----")  # the public part only
    report.record("hygiene", check="command lines and hook environment", items=len(secrets_now), problems=[])


def _pem_lines(pem: str) -> list[str]:
    return [line for line in pem.splitlines() if len(line) >= 40 and "-----" not in line]


# ---------------------------------------------------------------------------- TLS


SWITCHES = [
    "verify = false",
    "tls_skip_verify = true",
    "insecure = true",
    "verify_ssl = false",
    "ssl_verify = false",
    "skip_tls_verify = true",
]


@pytest.mark.parametrize("switch", SWITCHES)
@pytest.mark.parametrize("where", ["credential", "vault", "aws"])
def test_no_setting_turns_tls_verification_off(tmp_path, where, switch) -> None:
    """No key that would turn certificate checks off exists: each is refused as unknown."""
    key, _, value = switch.partition(" = ")
    raw: dict[str, Any] = {
        "stores": {
            "vault": {"type": "vault", "url": "https://vault.example.com:8200"},
            "aws": {"type": "aws", "region": "us-east-1"},
        },
        "credentials": {
            "sf": {
                "provider": "salesforce",
                "client_id": "c",
                "username": "u",
                "key": "vault:k",
                "token": "vault:t",
            }
        },
    }
    target = raw["credentials"]["sf"] if where == "credential" else raw["stores"][where]
    target[key] = value == "true"
    # a credential's `verify` is the token probe (docs/salesforce.md): a boolean is refused too
    expected = "not TLS verification" if (where, key) == ("credential", "verify") else "unknown key"
    with pytest.raises(ConfigError, match=rf"\.{key}: .*{expected}"):
        parse_config(raw, base_dir=tmp_path)


URL_FIELDS = [
    ("credentials.sf.login_url", "login_url"),
    ("credentials.sf.token_url", "token_url"),
    ("credentials.sf.audience", "audience"),
    ("stores.vault.url", "vault"),
    ("stores.aws.endpoint_url", "aws"),
]


@pytest.mark.parametrize(("field", "slot"), URL_FIELDS, ids=[f for f, _ in URL_FIELDS])
@pytest.mark.parametrize("host", ["login.salesforce.com", "10.0.0.1", "[2001:db8::1]", "127.0.0.1.nip.io"])
def test_plain_http_is_refused_for_every_host_but_loopback(tmp_path, field, slot, host) -> None:
    """http:// to any host that is not loopback is a config error, in every URL setting."""
    url = f"http://{host}:8443"
    raw: dict[str, Any] = {
        "stores": {
            "vault": {"type": "vault", "url": "https://vault.example.com"},
            "aws": {"type": "aws", "region": "us-east-1"},
        },
        "credentials": {
            "sf": {
                "provider": "salesforce",
                "client_id": "c",
                "username": "u",
                "key": "vault:k",
                "token": "vault:t",
            }
        },
    }
    if slot == "vault":
        raw["stores"]["vault"]["url"] = url
    elif slot == "aws":
        raw["stores"]["aws"]["endpoint_url"] = url
    else:
        raw["credentials"]["sf"][slot] = url
    with pytest.raises(ConfigError, match="http:// is only allowed for loopback hosts"):
        parse_config(raw, base_dir=tmp_path)
    raw_loopback = json.loads(json.dumps(raw).replace(host, "127.0.0.1"))
    if slot != "audience":  # the audience must be https whatever the host (Salesforce's rule)
        parse_config(raw_loopback, base_dir=tmp_path)  # loopback http is the one exception


INSECURE_ENV = {
    "CURL_CA_BUNDLE": "",
    "REQUESTS_CA_BUNDLE": "",
    "PYTHONHTTPSVERIFY": "0",
    "VAULT_SKIP_VERIFY": "true",
    "VAULT_CACERT": "",
    "AWS_CA_BUNDLE": "",
}


@pytest.fixture
def tls_endpoint(secret_guard) -> Any:
    from rotator.testing.salesforce import SalesforceEndpoint

    with SalesforceEndpoint(tls=True) as server:
        secret_guard.endpoints.append(server)
        yield server


def test_environment_cannot_turn_tls_verification_off(tmp_path, tls_endpoint, rsa_keys, report) -> None:
    """No 'skip verification' variable makes rotate accept an untrusted https endpoint."""
    config = write_config(tmp_path / "rotator.toml", login_url=tls_endpoint.url)
    store = tmp_path / "store" / "sf"
    store.mkdir(parents=True, mode=0o700)
    (store / "key.json").write_text(
        json.dumps({"private_key": rsa_keys[0].key_pem, "certificate": rsa_keys[0].cert_pem})
    )
    tls_endpoint.register_app(CLIENT_ID, rsa_keys[0].cert_pem, users=[USERNAME])
    refused = rotator("--config", config, "rotate", "sf", env=INSECURE_ENV)
    assert refused.returncode == 1
    (row,) = [json.loads(line) for line in refused.stdout.splitlines()]
    assert "TLS handshake failed" in row["error"], row
    assert tls_endpoint.token_requests == 0 and not (store / "token.json").exists()
    trusted = rotator("--config", config, "rotate", "sf", env={"REQUESTS_CA_BUNDLE": tls_endpoint.ca_bundle})
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert tls_endpoint.token_requests == 1
    report.record(
        "hygiene", check="TLS cannot be turned off by the environment", items=len(INSECURE_ENV), problems=[]
    )


def test_vault_and_aws_stores_verify_tls_whatever_the_environment(
    tmp_path, tls_endpoint, monkeypatch
) -> None:
    """The Vault and AWS stores refuse an untrusted https server under the same variables."""
    from rotator.config import AwsStoreConfig, VaultStoreConfig
    from rotator.errors import RotatorError, StoreError, StoreUnavailable
    from rotator.stores.aws import AwsStore
    from rotator.stores.vault import VaultStore
    from rotator.testing.aws import AWS_ENV_CLEAR, aws_env

    for name in AWS_ENV_CLEAR:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**INSECURE_ENV, **aws_env()}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ROTATOR_TEST_TOKEN", "hvs.CAESIFakeVaultTokenForTlsTest0000000000")
    vault = VaultStore(
        "vault",
        VaultStoreConfig.model_validate(
            {
                "type": "vault",
                "url": tls_endpoint.url,
                "timeout": 5,
                "auth": {"method": "token", "token_env": "ROTATOR_TEST_TOKEN"},
            }
        ),
    )
    with pytest.raises(StoreUnavailable, match=r"TLS verification with Vault at .* failed"):
        vault.check()
    settings = AwsStoreConfig(type="aws", region="us-east-1", endpoint_url=tls_endpoint.url, timeout=5)
    # botocore reads an empty AWS_CA_BUNDLE / REQUESTS_CA_BUNDLE as a broken setting: refused
    with pytest.raises(RotatorError, match="Invalid CA bundle"):
        AwsStore("aws", settings)
    monkeypatch.delenv("AWS_CA_BUNDLE")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    aws = AwsStore("aws", settings)
    with pytest.raises(StoreError, match=r"SSL validation failed .*CERTIFICATE_VERIFY_FAILED"):
        aws.read("sf/token")
    aws.close()
