"""A daemon rolls a short-lived certificate with no human step while a consumer keeps querying
with the stored token through simple-salesforce (issue 17): zero failed queries."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator.keys.crypto import cert_info, cert_to_pem, key_to_pem, load_certificate, self_signed_certificate
from rotator.testing.salesforce import CUSTOMIZE_APPLICATION, MODIFY_METADATA
from tests.conftest import CLIENT_ID, USERNAME
from tests.reliability.conftest import credential_config, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "Rotator_Daemon"


def sha(pem: str) -> str:
    return cert_info(load_certificate(pem)).sha256


def test_zero_failed_consumer_queries_across_a_rollover(
    tmp_path, make_endpoint, make_store, start_daemon, monkeypatch
):
    from simple_salesforce import Salesforce

    endpoint = make_endpoint(tls=True)
    # simple-salesforce's requests find the emulator's throwaway CA through the environment
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", endpoint.ca_bundle or "")
    kit = make_store("file")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # a one-day certificate issued 13 hours ago: past half its life, so renewal is due now
    cert = cert_to_pem(self_signed_certificate(key, common_name="daemon", days=1,
                                               now=datetime.now(UTC) - timedelta(hours=13)))
    kit.put("sf/key", {"private_key": key_to_pem(key), "certificate": cert})
    endpoint.register_app(CLIENT_ID, cert, users=[USERNAME], name=APP)
    endpoint.grant_permissions(USERNAME, MODIFY_METADATA, CUSTOMIZE_APPLICATION)
    port = free_port()
    config = credential_config(tmp_path, endpoint, kit, daemon={"listen": f"127.0.0.1:{port}"},
                               every="1s", jitter="0s", retry_min="1s",
                               retry_max="2s", max_requests_per_hour=1800,
                               publish={"type": "connected-app", "app": APP})
    stop = threading.Event()
    outcomes: list[bool] = []
    errors: list[str] = []

    def consumer() -> None:
        session = requests.Session()
        session.verify = endpoint.ca_bundle
        while not stop.is_set():
            data = kit.read("sf/token")
            if data is not None:
                client = Salesforce(instance_url=data["instance_url"], session_id=data["access_token"],
                                    session=session, version="62.0")
                try:
                    outcomes.append(client.query("SELECT Id FROM Organization")["totalSize"] == 1)
                except Exception as exc:  # counted, not raised: the test reports the number
                    errors.append(type(exc).__name__)
                    outcomes.append(False)
            stop.wait(0.05)

    child = start_daemon(config, label="rollover", env={"REQUESTS_CA_BUNDLE": endpoint.ca_bundle or ""})
    thread = threading.Thread(target=consumer, daemon=True)
    thread.start()
    try:
        promoted = wait_for(lambda: child.events("key.promoted"), 20, "the promotion")
        at = time.monotonic()
        new_key = promoted[0]["key_sha256"]
        wait_for(lambda: len([e for e in child.events("token.written") if e["key_sha256"] == new_key]) >= 3
                 and time.monotonic() - at > 1, 20, "three tokens from the new key")
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        stop.set()
        thread.join(10)
    assert child.stop() == 0
    assert 'rotator_certificate_publications_total{credential="sf",result="success"} 1.0' in metrics
    assert outcomes and all(outcomes), f"{outcomes.count(False)} of {len(outcomes)} failed: {errors[:3]}"
    assert len(outcomes) >= 10
    new = kit.read("sf/key")
    assert sha(new["certificate"]) == sha(endpoint.certificate(CLIENT_ID)) != sha(cert)
    assert not new.get("pending_certificate")
    published = [e for e in child.events("key.published") if e["target"] == "metadata"]
    assert [e["ok"] for e in published] == [True]
    assert len(child.events("key.staged")) == 1  # the new one-day certificate is not due again
