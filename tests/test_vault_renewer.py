"""The Vault token is renewed on a timer (like Vault Agent), apart from rotations.

Real OpenBao, real short TTLs (4-6 s): the store is used once, left idle for several TTLs,
and used again; in between only the renewer talks to Vault (seen through a RecordingProxy).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.errors import RotatorError
from rotator.stores.vault import VaultStore
from tests.test_daemon import start_daemon  # noqa: F401 - the fixture, reused
from tests.test_store_vault import RealVault, shipped_policy, store_config

pytestmark = pytest.mark.realvault
RENEW = ("POST", "/v1/auth/token/renew-self")


@pytest.fixture
def real(openbao: Any, secret_guard: Any) -> Iterator[RealVault]:
    server = RealVault(openbao)
    try:
        yield server
    finally:
        server.cleanup()
        for value in server.issued:
            secret_guard.add(value)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_periodic_token_is_renewed_while_no_rotation_runs(real: RealVault, tmp_path: Path
                                                            ) -> None:
    """A 4 s periodic token (token_file: no re-login possible) stays alive across idle TTLs."""
    path = f"{real.prefix}/sf/key"
    real.kv_put("secret", path, {"private_key": "x", "certificate": "y"})
    real.add_policy("rotator", shipped_policy(real.prefix))
    reply = real.client.auth.token.create(policies=[real._policy("rotator")], period="4s")
    token = reply["auth"]["client_token"]
    real.issued.append(token)
    (tmp_path / "token").write_text(token)
    store = VaultStore("vault", store_config(real.url, {"method": "token",
                                                        "token_file": str(tmp_path / "token")}))
    troubles: list[Any] = []
    try:
        assert store.read(path) is not None
        started = time.monotonic()
        store.start_renewer(troubles.append)
        wait_for(lambda: real.requests.count(RENEW) >= 3, "three renewals")
        assert time.monotonic() - started > 4  # more than one TTL passed without a rotation
        assert [r for r in real.requests if r[1].startswith("/v1/secret/")] == [
            ("GET", f"/v1/secret/data/{path}")]  # no rotation, no read in between
        assert store.read(path) is not None  # the same token, still alive
        assert real.client.auth.token.lookup(token)["data"]["ttl"] > 0
        assert troubles == [] and store.auth.trouble is None
    finally:
        store.close()
    assert store.auth._renewer is None  # close() stopped and joined the timer thread


def test_approle_token_capped_by_max_ttl_is_replaced_by_a_login(real: RealVault, tmp_path: Path
                                                               ) -> None:
    """token_ttl 3 s, token_max_ttl 6 s: renewals run into the cap, the timer logs in afresh."""
    path = f"{real.prefix}/sf/key"
    real.kv_put("secret", path, {"private_key": "x", "certificate": "y"})
    real.add_policy("rotator", shipped_policy(real.prefix))
    role_id, secret_id = real.add_approle("rotator", policies=["rotator"], token_ttl=3,
                                          token_max_ttl=6)
    (tmp_path / "role_id").write_text(role_id)
    (tmp_path / "secret_id").write_text(secret_id)
    auth = {"method": "approle", "role_id_file": str(tmp_path / "role_id"),
            "secret_id_file": str(tmp_path / "secret_id"), "mount": real.approle_mount}
    store = VaultStore("vault", store_config(real.url, auth))
    try:
        assert store.read(path) is not None
        store.start_renewer()
        wait_for(lambda: real.requests.count(real.login_request) >= 3, "two more logins")
        assert real.requests.count(RENEW) >= 1
        assert store.read(path) is not None
        assert store.auth.trouble is None
    finally:
        store.close()


def test_a_token_that_cannot_be_renewed_raises_an_alert(real: RealVault, tmp_path: Path) -> None:
    """A non-renewable 5 s token in token_file: the timer says so (audit, trouble, callback)
    before the token dies, instead of the next rotation finding it dead."""
    real.add_policy("rotator", shipped_policy(real.prefix))
    token = real.create_token(policies=["rotator"], ttl=5, renewable=False)
    (tmp_path / "token").write_text(token)
    store = VaultStore("vault", store_config(real.url, {"method": "token",
                                                        "token_file": str(tmp_path / "token")}))
    troubles: list[RotatorError] = []
    try:
        store.check()
        store.start_renewer(troubles.append)
        wait_for(lambda: bool(troubles), "an alert")
        assert "could not be renewed or replaced" in troubles[0].diagnostics()
        assert store.auth.trouble is not None
        assert real.client.auth.token.lookup(token)["data"]["ttl"] > 0  # said before expiry
    finally:
        store.close()


def test_the_daemon_renews_its_token_between_rotations(
    real: RealVault, endpoint: Any, rsa_keys: Any, tmp_path: Path,
    start_daemon: Any,  # noqa: F811 - the fixture imported above
) -> None:
    """A daemon with `every = "1h"` and a 4 s periodic Vault token: the timer keeps the token
    alive (store.auth.renewed events) while no rotation runs; SIGTERM stops it cleanly."""
    from tests.conftest import CLIENT_ID, USERNAME, write_config
    from tests.test_daemon import free_port
    from tests.test_store_vault import stores_toml

    p = real.prefix
    real.kv_put("secret", f"{p}/sf/key", {"private_key": rsa_keys[0].key_pem,
                                          "certificate": rsa_keys[0].cert_pem})
    endpoint.register_app(CLIENT_ID, rsa_keys[0].cert_pem, users=[USERNAME])
    real.add_policy("rotator", shipped_policy(p))
    reply = real.client.auth.token.create(policies=[real._policy("rotator")], period="4s")
    token = reply["auth"]["client_token"]
    real.issued.append(token)
    (tmp_path / "vault-token").write_text(token)
    port = free_port()
    config = write_config(
        tmp_path / "rotator.toml", login_url=endpoint.url,
        stores=stores_toml(real.url, {"method": "token", "token_file": str(tmp_path / "vault-token")}),
        credentials={"sf": {"key": f"vault:{p}/sf/key", "token": f"vault:{p}/sf/token",
                            "every": "1h"}},
        daemon={"listen": f"127.0.0.1:{port}", "state_dir": "state", "shutdown_timeout": "5s"})
    daemon = start_daemon(config, port=port)
    daemon.wait_ready(timeout=20)
    rotated = len(daemon.events("rotation.succeeded"))
    wait_for(lambda: len(daemon.events("store.auth.renewed")) >= 3, "three timer renewals")
    assert len(daemon.events("rotation.succeeded")) == rotated  # no rotation meanwhile
    assert daemon.readyz()[0] == 200
    assert real.client.auth.token.lookup(token)["data"]["ttl"] > 0
    code, _ = daemon.stop()
    assert code == 0
