"""Zero-touch rollover on every store, with SIGKILL between staging and publishing and between
publishing and promotion (issue 17). Real daemons (`rotator run` children), the Salesforce
emulator's Metadata API, the file store, the Vault emulator and moto.

Cycle 1 kills the daemon right after the pending key is stored (its certificate not yet in
the app); cycle 2 kills it right after the certificate was published (the app now refuses the
current key; the key record does not say "published" yet). After each kill the key record is
complete and the app holds a certificate whose key is in the record. A clean daemon then
publishes (again, idempotently), tries the pending key, promotes it and leaves no pending key.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from rotator.keys.crypto import cert_info, load_certificate
from rotator.records import KeyRecord, TokenRecord
from rotator.testing import faults
from rotator.testing.salesforce import CUSTOMIZE_APPLICATION, MODIFY_METADATA
from tests.conftest import CLIENT_ID, USERNAME
from tests.reliability.conftest import credential_config, wait_for

pytestmark = pytest.mark.integration

APP = "Rotator_Crash"
SETTINGS = {
    "every": "1s", "jitter": "0s", "retry_min": "1s", "retry_max": "2s", "timeout": "2s",
    "max_requests_per_hour": 1800, "renew_before": "400d",  # the 365-day key renews at once
    "publish": {"type": "connected-app", "app": APP},
}


def sha(pem: str) -> str:
    return cert_info(load_certificate(pem)).sha256


def key_record(kit: Any) -> KeyRecord:
    record = KeyRecord.from_data(kit.read("sf/key"), where="key record")
    assert record.damaged == ()
    return record


@pytest.mark.parametrize("store", ["file", "vault", "aws"])
def test_sigkill_around_publication_recovers_and_promotes(
    store, tmp_path, make_endpoint, make_store, rsa_keys, start_daemon
) -> None:
    """Killed after staging, then after publishing: the next daemon finishes the rollover."""
    endpoint = make_endpoint()
    kit = make_store(store)
    kit.put("sf/key", {"private_key": rsa_keys[0].key_pem, "certificate": rsa_keys[0].cert_pem})
    endpoint.register_app(CLIENT_ID, rsa_keys[0].cert_pem, users=[USERNAME], name=APP)
    endpoint.grant_permissions(USERNAME, MODIFY_METADATA, CUSTOMIZE_APPLICATION)
    config = credential_config(tmp_path, endpoint, kit, **SETTINGS)
    old = sha(rsa_keys[0].cert_pem)

    for index, step in enumerate(("staged", "published")):
        mark = tmp_path / f"mark{index}"
        env = {**kit.env, faults.STEP_ENV: step, faults.ACTION_ENV: "kill", faults.MARK_ENV: str(mark)}
        child = start_daemon(config, label=f"{store}-{step}", env=env)
        wait_for(lambda c=child: not c.alive(), 15, f"the daemon to die at {step}")
        assert child.kill() == -signal.SIGKILL
        assert mark.read_text().split()[:3] == [step, "1", "sf"]
        record = key_record(kit)
        assert record.pending is not None, "the staged key was lost"
        pending = sha(record.pending.certificate)
        held = sha(endpoint.certificate(CLIENT_ID))
        assert held == (old if step == "staged" else pending)  # never a certificate without its key
        assert sha(record.current.certificate) == old
        assert "Traceback" not in child.err_path.read_text()

    final = start_daemon(config, label=f"{store}-final", env=dict(kit.env))
    wait_for(lambda: final.events("key.promoted"), 15, "the promotion")
    wait_for(lambda: kit.read("sf/token") is not None, 10, "a token")
    assert final.stop() == 0
    record = key_record(kit)
    assert record.pending is None
    assert sha(record.current.certificate) == pending == sha(endpoint.certificate(CLIENT_ID))
    assert sha(record.previous.certificate) == old
    token = TokenRecord.from_data(kit.read("sf/token"), where="token")
    assert token.key_sha256 == pending and endpoint.is_valid(token.access_token)
    published = [e for e in final.events("key.published") if e["target"] == "metadata"]
    assert published and published[-1]["ok"] is True and published[-1]["app"] == APP
    assert published[-1]["rotation_id"]  # bound by the pipeline in a real daemon
