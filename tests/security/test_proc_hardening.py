"""Issue 15, item 6: a same-user process cannot read the daemon's secrets, and no core dump holds them.

On a0100b0 the upload hook (same user as the daemon) read VAULT_TOKEN, the AWS keys and the
passphrase from /proc/<daemon>/environ, and could read the private key from /proc/<daemon>/mem;
a core dump held the key and the tokens.

Tests run as root, and root may read any process's /proc files. So the attack is made twice:
as root, where what is checked is that the daemon's /proc/PID/environ no longer holds the
values (rotator overwrites them in its initial environment block) and its core limit is 0;
and as an unprivileged user running both the daemon and the probe, where the kernel refuses
the probe outright because the daemon made itself non-dumpable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLIENT_ID, REPO, USERNAME, rotator_subprocess_env, write_config
from tests.test_daemon import wait_for

pytestmark = pytest.mark.integration

FAKE = {
    "VAULT_TOKEN": "hvs.CAESIfakefakefakefakefakefake0123456789",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMIfakefakeK7MDENGbPxRfiCYfakeKEY",
    "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2VjEfakefakesessiontoken0123456789",
    "ROTATOR_KEY_PASSPHRASE": "correct horse battery staple fake",
}
HOOK = """#!/bin/sh
cat > /dev/null
cat /proc/$PPID/environ > "$1.parent-environ" 2>&1
grep -i 'core' /proc/$PPID/limits > "$1.parent-limits" 2>&1
exit 0
"""
NOBODY = 65534


def test_the_upload_hook_finds_no_secret_in_the_daemons_environment(
    tmp_path: Path, endpoint: Any, rsa_keys: Any, secret_guard: Any
) -> None:
    for value in FAKE.values():
        secret_guard.add(value)
    hook = tmp_path / "hook.sh"
    hook.write_text(HOOK)
    hook.chmod(0o700)
    seen = tmp_path / "hook"
    config = write_config(
        tmp_path / "rotator.toml", login_url=endpoint.url,
        credentials={"sf": {"every": "1h", "renew_before": "400d", "upload_hook": [str(hook), str(seen)]}},
    )
    store = tmp_path / "store" / "sf"
    store.mkdir(parents=True, mode=0o700)
    (store / "key.json").write_text(
        json.dumps({"private_key": rsa_keys[0].key_pem, "certificate": rsa_keys[0].cert_pem})
    )
    endpoint.register_app(CLIENT_ID, rsa_keys[0].cert_pem, users=[USERNAME])
    env = rotator_subprocess_env(AWS_ACCESS_KEY_ID="AKIAFAKEFAKEFAKEFAKE", **FAKE)
    with open(tmp_path / "daemon.out", "wb") as out, open(tmp_path / "daemon.err", "wb") as err:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "rotator", "--config", str(config), "run"], stdout=out, stderr=err, env=env
        )
    try:
        limits_file = Path(f"{seen}.parent-limits")
        wait_for(lambda: limits_file.exists() and limits_file.stat().st_size,
                 20, "the upload hook (renew_before makes the first run stage a key)")
        daemon_environ = Path(f"/proc/{daemon.pid}/environ").read_bytes()
    finally:
        daemon.terminate()
        assert daemon.wait(15) == 0
    hook_saw = Path(f"{seen}.parent-environ").read_bytes()
    for name, value in FAKE.items():
        assert value.encode() not in hook_saw, f"the hook read {name} from the daemon's /proc/PID/environ"
        assert value.encode() not in daemon_environ, f"/proc/PID/environ still holds {name}"
    assert b"PYTHONPATH=" in daemon_environ  # the rest of the environment is left alone
    limits = Path(f"{seen}.parent-limits").read_text().split()
    assert limits[:5] == ["Max", "core", "file", "size", "0"], limits


@pytest.fixture
def unprivileged_dir() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to run the daemon and the probe as another user")
    directory = Path(tempfile.mkdtemp(prefix="rot-nobody-", dir="/tmp"))
    os.chown(directory, NOBODY, NOBODY)
    directory.chmod(0o700)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _python_for_nobody() -> tuple[str, str] | None:
    """An interpreter and PYTHONPATH an unprivileged user can run rotator with (the test's own
    interpreter may live under /root); None if there is none."""
    purelib = sysconfig.get_paths()["purelib"]
    for candidate in (sys.executable, f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"):
        try:
            probe = subprocess.run(
                [candidate, "-c", "import cryptography, pydantic, structlog, apscheduler"],
                user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, cwd="/tmp",
                env={"PYTHONPATH": f"{REPO}:{purelib}", "PATH": "/usr/bin:/bin"}, timeout=60,
            )
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate, f"{REPO}:{purelib}"
    return None


def test_a_same_user_process_cannot_read_the_daemons_environ_or_memory(unprivileged_dir: Path) -> None:
    found = _python_for_nobody()
    if found is None:
        pytest.skip("no interpreter an unprivileged user can run rotator with")
    python, pythonpath = found
    config = unprivileged_dir / "rotator.toml"
    config.write_text('[daemon]\nlisten = ""\n[stores.local]\ntype = "file"\npath = "store"\n')
    os.chown(config, NOBODY, NOBODY)
    out = unprivileged_dir / "daemon.out"
    env = {"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin", **FAKE}
    with open(out, "wb") as sink:
        daemon = subprocess.Popen(
            [python, "-m", "rotator", "--config", str(config), "run"], stdout=sink,
            stderr=subprocess.STDOUT, env=env, user=NOBODY, group=NOBODY, extra_groups=[], cwd="/tmp",
        )
    try:
        wait_for(lambda: b"daemon.started" in out.read_bytes(), 20, "the daemon to start")
        assert os.stat(f"/proc/{daemon.pid}").st_uid == NOBODY
        probe = subprocess.run(
            [python, "-c", PROBE, str(daemon.pid)], user=NOBODY, group=NOBODY, extra_groups=[],
            capture_output=True, text=True, cwd="/tmp", env={"PATH": "/usr/bin:/bin"}, timeout=20,
        )
        result = json.loads(probe.stdout)
    finally:
        daemon.terminate()
        daemon.wait(15)
    assert result["environ"] == "denied", result
    assert result["mem"] == "denied", result
    assert not any(value in probe.stdout for value in FAKE.values())


PROBE = """
import json, sys
pid = sys.argv[1]
found = {}
try:
    found["environ"] = open(f"/proc/{pid}/environ", "rb").read().decode("latin-1")
except PermissionError:
    found["environ"] = "denied"
try:
    with open(f"/proc/{pid}/mem", "rb") as mem:
        found["mem"] = "opened"
except PermissionError:
    found["mem"] = "denied"
print(json.dumps(found))
"""


def test_in_process_commands_leave_the_environment_as_they_found_it(
    tmp_path: Path, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cli.main` withholds the secret variables while it runs and puts them back after (so an
    embedding program, or a test, sees its environment unchanged)."""
    from rotator import hardening

    monkeypatch.setenv("VAULT_TOKEN", FAKE["VAULT_TOKEN"])
    seen: dict[str, Any] = {}
    real = hardening.secret_env

    def spy(name: str) -> str | None:
        seen["inside"] = os.environ.get("VAULT_TOKEN")
        seen["dumpable"] = hardening.is_dumpable()
        return real(name)

    monkeypatch.setattr("rotator.cli.output.secret_env", spy)
    key = tmp_path / "k.pem"
    key.write_text("not a key")
    config = write_config(tmp_path / "rotator.toml", login_url="https://login.salesforce.com")
    run_cli("--config", config, "keys", "import", "sf", "--key", key, "--cert", key)
    assert seen["inside"] is None  # withheld while the command ran
    assert seen["dumpable"] in (False, None)
    assert os.environ["VAULT_TOKEN"] == FAKE["VAULT_TOKEN"]
