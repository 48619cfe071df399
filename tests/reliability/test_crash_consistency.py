"""Crash consistency: SIGKILL real daemons at every step of a rotation, and at random moments.

`rotator run` children rotate one credential every second. Each cycle either stops the daemon
at a chosen engine step (rotator.testing.faults: ROTATOR_FAULT_STEP pauses the rotating
thread there, and the test sends SIGKILL from outside while the other threads run on; one
cycle lets the hook SIGKILL itself) or kills it after a random delay, which lands anywhere —
inside a store write too. After every kill, before anything restarts, the store must hold a
complete, valid current token (the endpoint accepts it; it was signed by a key of the key
record) and a loadable key record; Secrets Manager must have exactly one AWSCURRENT. After the
last kill a clean daemon must rotate and stop with exit 0, leaving no AWSPENDING label and no
pending key behind.
"""

from __future__ import annotations

import random
import signal
import time
from typing import Any

import pytest

from rotator.engine import STEPS
from rotator.keys.crypto import cert_info, check_pair, load_certificate, load_private_key
from rotator.records import KeyRecord, TokenRecord
from rotator.testing import faults
from tests.conftest import CLIENT_ID, USERNAME
from tests.reliability.conftest import (
    StoreKit,
    assert_clean,
    credential_config,
    seed_credential,
    wait_for,
)

pytestmark = pytest.mark.integration

SETTINGS = {
    "every": "1s",
    "jitter": "0s",
    "retry_min": "1s",
    "retry_max": "2s",
    "timeout": "2s",
    "max_requests_per_hour": 1800,
}
RANDOM_KILLS = {"file": 2, "vault": 0, "aws": 1}


def sha(pem: str) -> str:
    return cert_info(load_certificate(pem)).sha256


def check_store(kit: StoreKit, endpoint: Any, *, final: bool = False) -> str | None:
    """The invariants a SIGKILL must never break; returns the stored token's fingerprint key."""
    keyrec = KeyRecord.from_data(kit.read("sf/key"), where="key record")
    assert keyrec.damaged == ()
    current = keyrec.current
    check_pair(
        load_private_key(current.private_key), load_certificate(current.certificate), where="key record"
    )
    signers = {sha(p.certificate) for p in (keyrec.current, keyrec.pending, keyrec.previous) if p}
    if final:
        assert keyrec.pending is None, "a pending key was left behind"
    if kit.kind == "aws" and kit.snapshot("sf/token") is not None:
        stages = kit.stages("sf/token")
        assert sum("AWSCURRENT" in labels for labels in stages.values()) == 1, stages
        if final:
            assert not any("AWSPENDING" in labels for labels in stages.values()), stages
    data = kit.read("sf/token")
    if data is None:
        return None
    token = TokenRecord.from_data(data, where="token record")  # complete and well-formed
    assert endpoint.is_valid(token.access_token), "the stored token is not one the endpoint accepts"
    assert token.key_sha256 in signers
    return token.key_sha256


def kill_plan(store: str) -> list[tuple[str, int, str]]:
    """(step or "random", nth, action): every engine step once, plus random-moment kills."""
    rng = random.Random(f"crash-{store}")
    plan = [
        (step, rng.choice((1, 2)), "kill" if (store, step) == ("file", "written") else "pause")
        for step in STEPS
    ]
    plan += [("random", 0, "sigkill")] * RANDOM_KILLS[store]
    rng.shuffle(plan)
    return plan


@pytest.mark.parametrize("store", ["file", "vault", "aws"])
def test_sigkill_at_every_step_keeps_a_complete_token(
    store, tmp_path, make_endpoint, make_store, rsa_keys, start_daemon, report
) -> None:
    """SIGKILL at each engine step and at random: the store always keeps a complete, valid token and key."""
    endpoint = make_endpoint()
    kit = make_store(store)
    seed_credential(kit, endpoint, rsa_keys[0])
    config = credential_config(tmp_path, endpoint, kit, daemon={"state_dir": "state"}, **SETTINGS)
    rng = random.Random(f"delays-{store}")
    kills, children = 0, []
    steps_hit: list[str] = []
    for index, (step, nth, action) in enumerate(kill_plan(store)):
        mark = tmp_path / f"mark{index}"
        env = dict(kit.env)
        if step != "random":
            env.update(
                {
                    faults.STEP_ENV: step,
                    faults.NTH_ENV: str(nth),
                    faults.ACTION_ENV: action,
                    faults.MARK_ENV: str(mark),
                }
            )
        child = start_daemon(config, label=f"{store}-{index}", env=env)
        children.append(child)
        if step == "random":
            time.sleep(rng.uniform(0.3, 1.5))
            child.assert_alive()
        else:
            # a start on a busy machine (imports, moto's boto3) can take seconds on its own
            wait_for(lambda mark=mark, child=child: mark.exists() or child.assert_alive(), 20,
                     f"the daemon to reach {step} (#{nth})")
            time.sleep(rng.uniform(0, 0.03))  # the other threads run on meanwhile
            assert mark.read_text().split()[:3] == [step, str(nth), "sf"]
        code = child.kill()
        assert code == -signal.SIGKILL, code
        kills += 1
        steps_hit.append(step)
        check_store(kit, endpoint)

    final = start_daemon(config, label=f"{store}-final", env=dict(kit.env))
    before = kit.snapshot("sf/token")
    wait_for(
        lambda: final.events("token.written") and kit.snapshot("sf/token") != before,
        10,
        "a rotation after the last kill",
    )
    assert final.stop() == 0
    last = check_store(kit, endpoint, final=True)
    assert last == sha(rsa_keys[0].cert_pem)
    assert_clean(final)
    attempted = sum(len(c.events("rotation.started")) for c in [*children, final])
    written = sum(len(c.events("token.written")) for c in [*children, final])
    for child in children:
        assert "Traceback" not in child.err_path.read_text()
    report.record(
        "crash",
        store=store,
        kills=kills,
        steps=sorted(set(steps_hit)),
        rotations_attempted=attempted,
        rotations_written=written,
        tokens_lost=0,
        restarts=len(children) + 1,
    )
    assert set(steps_hit) >= set(STEPS)


def test_sigkill_between_token_write_and_key_promotion_is_finished_on_restart(
    tmp_path, make_endpoint, make_store, rsa_keys, start_daemon, report
) -> None:
    """Killed between the pending key's token write and the key promotion: the next start promotes it."""
    endpoint = make_endpoint()
    kit = make_store("file")
    old, new = rsa_keys[0], rsa_keys[1]
    kit.put(
        "sf/key",
        {
            "private_key": old.key_pem,
            "certificate": old.cert_pem,
            "pending_private_key": new.key_pem,
            "pending_certificate": new.cert_pem,
        },
    )
    endpoint.register_app(CLIENT_ID, new.cert_pem, users=[USERNAME])  # the new certificate is live
    config = credential_config(tmp_path, endpoint, kit, daemon={"state_dir": "state"}, **SETTINGS)
    mark = tmp_path / "mark"
    child = start_daemon(
        config, label="rollover", env={faults.STEP_ENV: "written", faults.MARK_ENV: str(mark)}
    )
    wait_for(mark.exists, 8, "the token write")
    assert child.kill() == -signal.SIGKILL
    assert check_store(kit, endpoint) == sha(new.cert_pem)  # the token names the pending key ...
    stuck = KeyRecord.from_data(kit.read("sf/key"), where="key")
    assert stuck.pending is not None and sha(stuck.current.certificate) == sha(old.cert_pem)  # ... unpromoted

    again = start_daemon(config, label="rollover-restart")
    promoted = wait_for(lambda: again.events("key.promoted"), 10, "the promotion after restart")
    assert promoted[0]["reason"] == "the stored token was minted with the pending key"
    assert again.stop() == 0
    record = KeyRecord.from_data(kit.read("sf/key"), where="key")
    assert sha(record.current.certificate) == sha(new.cert_pem)
    assert record.previous is not None and sha(record.previous.certificate) == sha(old.cert_pem)
    assert check_store(kit, endpoint, final=True) == sha(new.cert_pem)
    assert_clean(again)
    report.record(
        "crash",
        store="file (key rollover)",
        kills=1,
        steps=["written"],
        rotations_attempted=len(child.events("rotation.started")) + len(again.events("rotation.started")),
        rotations_written=len(child.events("token.written")) + len(again.events("token.written")),
        tokens_lost=0,
        restarts=2,
    )
