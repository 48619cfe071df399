"""The shipped Vault policies let the daemon do everything it does, on a real OpenBao server.

Every deploy/vault/rotator*.hcl file is attached, as shipped (only moved under the test's
prefix), to an AppRole; a daemon-like engine then rotates through an automatic key rollover
(stage -> publish -> promote) and an expiry warning, and no step is refused.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from rotator.config import load_config
from rotator.engine import Engine
from tests.conftest import CLIENT_ID, USERNAME, write_config
from tests.test_store_vault import RealVault, stores_toml

pytestmark = pytest.mark.realvault
REPO = Path(__file__).resolve().parent.parent
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def real(openbao: Any, secret_guard: Any) -> Iterator[RealVault]:
    server = RealVault(openbao)
    try:
        yield server
    finally:
        server.cleanup()
        for value in server.issued:
            secret_guard.add(value)


def shipped(prefix: str) -> dict[str, str]:
    """{policy name: HCL} for every deploy/vault/rotator*.hcl, paths moved under `prefix`."""
    policies = {}
    for path in sorted((REPO / "deploy" / "vault").glob("rotator*.hcl")):
        text = re.sub(r'"secret/(data|metadata)/sf/', rf'"secret/\1/{prefix}/sf/', path.read_text())
        policies[path.stem] = text
    return policies


def test_shipped_policies_cover_a_daemon_rollover(
    real: RealVault, endpoint: Any, run_cli: Any, tmp_path: Path,
) -> None:
    p = real.prefix
    names = []
    for stem, hcl in shipped(p).items():
        name = f"{stem}-{real.uid}"
        real.client.sys.create_or_update_acl_policy(name=name, policy=hcl)
        real._policies.add(name)
        names.append(name)
    assert len(names) >= 2  # rotator-policy and rotator-rollover-policy
    real._enable("approle", real.approle_mount)
    real.client.auth.approle.create_or_update_approle(
        "rotator", token_policies=names, token_ttl="300s", mount_point=real.approle_mount)
    role_id = real.client.auth.approle.read_role_id(
        "rotator", mount_point=real.approle_mount)["data"]["role_id"]
    secret_id = real.client.auth.approle.generate_secret_id(
        "rotator", mount_point=real.approle_mount)["data"]["secret_id"]
    real.issued.append(secret_id)
    (tmp_path / "role_id").write_text(role_id)
    (tmp_path / "secret_id").write_text(secret_id)
    credential = {"key": f"vault:{p}/sf/key", "token": f"vault:{p}/sf/token",
                  "publish_certificate": f"vault:{p}/sf/pending-certificate",
                  "renew_before": "400d"}
    # the operator creates the key with an operator's (root) token: keys init needs "create"
    (tmp_path / "root-token").write_text(real.root_token)
    real.issued.append(real.root_token)
    operator = write_config(
        tmp_path / "operator.toml", login_url=endpoint.url, credentials={"sf": credential},
        stores=stores_toml(real.url, {"method": "token", "token_file": str(tmp_path / "root-token")}))
    init = run_cli("--config", operator, "keys", "init", "sf", "--days", "10")
    assert init.code == 0, init.err
    old = init.out
    endpoint.register_app(CLIENT_ID, old, users=[USERNAME])
    daemon = write_config(
        tmp_path / "rotator.toml", login_url=endpoint.url, credentials={"sf": credential},
        stores=stores_toml(real.url, {"method": "approle", "mount": real.approle_mount,
                                      "role_id_file": str(tmp_path / "role_id"),
                                      "secret_id_file": str(tmp_path / "secret_id")}))
    clock = Clock()
    engine = Engine(load_config(daemon), clock=clock)
    store = engine.stores["vault"]

    def data(path: str) -> dict[str, Any]:
        found = store.read(f"{p}/{path}")
        assert found is not None
        return found.data

    try:
        with capture_logs() as events:
            assert engine.rotate("sf").ok  # stages a pending key and publishes it
            new = data("sf/key")["pending_certificate"]
            assert data("sf/pending-certificate")["certificate"] == new
            clock.now += 4 * DAY  # 6 days left: the 7-day expiry warning is remembered
            assert engine.rotate("sf").ok
            endpoint.upload_certificate(CLIENT_ID, new)
            clock.now += 1 * DAY
            assert engine.rotate("sf").ok  # promotes
        failed = [e for e in events if e["event"] in ("lifecycle.failed", "store.metadata.failed",
                                                      "rotation.failed")]
        assert failed == []
        assert [e["event"] for e in events if e["event"] == "key.promoted"] == ["key.promoted"]
        assert [e["threshold"] for e in events if e["event"] == "certificate.expiry_warning"] == [7]
        key = data("sf/key")
        assert key["certificate"] == new and key["previous_certificate"] == old
        assert "permission denied" not in repr(events)
    finally:
        engine.stores.close()
