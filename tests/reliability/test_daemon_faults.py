"""One cell of the fault matrix per store with a real `rotator run` child process.

The in-process matrix (test_fault_matrix.py) drives the daemon's scheduling on a virtual
clock; these cells show the same guarantees end to end, in real time, with the daemon's own
scheduler thread and worker pool: the endpoint refusing connections (file store), a sealed
Vault, and Secrets Manager throttling PutSecretValue. During the fault the process stays up,
the stored token does not change by a byte, attempts are at least the policy's floor apart,
each failure is a `rotation.failed` audit line with its diagnosis; after the fault clears a
new token is stored, and SIGTERM ends the daemon with exit 0.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from tests.reliability.conftest import (
    StoreKit,
    assert_clean,
    credential_config,
    seed_credential,
    wait_for,
)

pytestmark = pytest.mark.integration

SETTINGS = {"every": "2s", "jitter": "0s", "retry_min": "1s", "retry_max": "2s", "timeout": "1s",
            "max_requests_per_hour": 1800}
FAILURES = 3
RETRY_MIN = 1.0  # SETTINGS' retry_min: the policy never retries sooner


def _refuse(endpoint: Any, kit: StoreKit) -> Callable[[], None]:
    endpoint.stop()
    return endpoint.start


def _seal(endpoint: Any, kit: StoreKit) -> Callable[[], None]:
    kit.server.seal()
    return kit.server.unseal


def _throttle(endpoint: Any, kit: StoreKit) -> Callable[[], None]:
    kit.server.set_fault("PutSecretValue", "ThrottlingException", message="Rate exceeded")
    return kit.server.clear_faults


CELLS = {
    "file": ("token endpoint refuses connections", _refuse, "EndpointUnavailable",
             r"connection failed \(connection refused\)", True),
    "vault": ("Vault sealed", _seal, "StoreUnavailable", r"is sealed or standby \(503", False),
    "aws": ("PutSecretValue throttled", _throttle, "StoreUnavailable",
            r"throttled or unavailable \(ThrottlingException\)", True),
}


RUN_ENDS = {"rotation.succeeded", "rotation.failed", "rotation.skipped", "rotation.superseded"}


def _runs_settled(daemon: Any) -> bool:
    names = [event["event"] for event in daemon.events()]
    return names.count("rotation.started") == sum(name in RUN_ENDS for name in names)


@pytest.mark.parametrize("store", list(CELLS))
def test_real_daemon_rides_out_a_fault(store, tmp_path, make_endpoint, make_store, rsa_keys,
                                       start_daemon, report) -> None:
    """A real daemon stays up under the fault, keeps the token, backs off, audits, recovers and exits 0."""
    fault, inject, error_class, diagnosis, sends_request = CELLS[store]
    endpoint = make_endpoint()
    kit = make_store(store)
    seed_credential(kit, endpoint, rsa_keys[0])
    config = credential_config(tmp_path, endpoint, kit, daemon={"state_dir": "state"}, **SETTINGS)
    daemon = start_daemon(config, env=dict(kit.env))
    wait_for(lambda: daemon.events("token.written"), 15, "the first token")
    clear = inject(endpoint, kit)
    began = time.monotonic()
    # A run already under way when the fault came (every 2s: one often is, on a busy machine)
    # may still finish normally; the fault's guarantees start once every run started so far
    # has ended. Runs starting later meet the fault.
    wait_for(lambda: _runs_settled(daemon), 15, "the run in flight at the fault to end")
    good = kit.snapshot("sf/token")
    assert good is not None
    requests_before = endpoint.token_requests
    written_before = len(daemon.events("token.written"))
    changed = 0

    def failed_enough() -> bool:
        nonlocal changed
        daemon.assert_alive()
        changed += kit.snapshot("sf/token") != good
        return len(daemon.events("rotation.failed")) >= FAILURES

    try:
        wait_for(failed_enough, 20, f"{FAILURES} failed runs ({fault})", every=0.05)
    finally:
        clear()
    window = time.monotonic() - began
    failed = daemon.events("rotation.failed")
    moments = [datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp() for e in failed]
    gaps = [b - a for a, b in itertools.pairwise(moments)]
    requests = endpoint.token_requests - requests_before
    attempts = len(daemon.events("rotation.started")) - written_before  # runs since the fault
    bound = 1 + int(window // RETRY_MIN) if sends_request else 0

    wait_for(lambda: len(daemon.events("token.written")) > written_before, 15, "recovery")
    fresh = kit.read("sf/token")
    recovered = kit.snapshot("sf/token") != good and endpoint.is_valid(fresh["access_token"])
    assert daemon.stop() == 0
    report.record("daemon", store=store, fault=fault, faults_injected=1, rotations_attempted=attempts,
                  failed_runs=len(failed), token_requests=requests, request_bound=bound,
                  tokens_lost=changed + (0 if recovered else 1), recovered=recovered,
                  diagnosis=failed[0]["diagnosis"] if failed else None)

    assert changed == 0, "the stored token changed during the fault"
    assert recovered
    assert all(gap >= RETRY_MIN - 0.05 for gap in gaps), gaps  # never faster than retry_min
    assert requests <= bound
    if not sends_request:
        assert requests == 0  # the key read fails first: no token request at all
    for event in failed:
        assert event["error_class"] == error_class and event["retryable"] is True, event
        assert re.search(diagnosis, event["diagnosis"]), event["diagnosis"]
    assert_clean(daemon)
    state = json.loads((tmp_path / "state" / "state.json").read_text())["credentials"]["sf"]
    assert state["consecutive_failures"] == 0 and state["last_error"] is None
