"""The engine's side paths, pinned so `make mutate` notices a change to them (docs/mutation.md):
the hooks it hands the key lifecycle (steps and publications, named by credential), the
Metadata API session it builds for publication (which key, under which role, and the pending
key's fallback), the refusal to overwrite key material with a token, and `Engine.load_pair`
as the CLI calls it. Real sockets throughout: the Salesforce-compatible endpoint on loopback,
the Metadata API included, and the file store.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from rotator.config import load_config
from rotator.engine import Engine
from rotator.errors import RecordError, TokenRejected
from rotator.providers.metadata import MetadataUnavailable
from tests.conftest import CLIENT_ID, USERNAME
from tests.test_publish_metadata import PUBLISHER, PUBLISHER_CLIENT_ID, setup, sha

pytestmark = pytest.mark.integration


def loaded(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["credential"], e["role"]) for e in events if e["event"] == "key.loaded"]


# ---------------------------------------------------------------------------- lifecycle hooks


def test_lifecycle_steps_and_publications_reach_the_engine_hooks_by_credential(tmp_path, endpoint, run_cli):
    """The daemon's crash hooks and the publication metric hang off these two callbacks."""
    config, _ = setup(tmp_path, endpoint, run_cli)
    steps: list[tuple[str, str]] = []
    publications: list[tuple[str, bool]] = []
    engine = Engine(load_config(config), on_step=lambda name, step: steps.append((name, step)),
                    on_publication=lambda name, ok: publications.append((name, ok)))
    result = engine.rotate("sf", force=True)
    assert result.ok, result.error
    assert ("sf", "staged") in steps and ("sf", "published") in steps
    assert steps.index(("sf", "staged")) < steps.index(("sf", "published")) < steps.index(("sf", "exchanged"))
    assert publications == [("sf", True)]


def test_a_failed_publication_reaches_the_hook_as_not_ok(tmp_path, endpoint, run_cli):
    config, _ = setup(tmp_path, endpoint, run_cli, grant=False)
    publications: list[tuple[str, bool]] = []
    engine = Engine(load_config(config), on_publication=lambda name, ok: publications.append((name, ok)))
    assert engine.rotate("sf", force=True).ok
    assert publications == [("sf", False)]


# ---------------------------------------------------------------------------- Metadata API session


def test_a_fresh_session_signs_with_the_current_key_of_the_via_credential(tmp_path, endpoint, run_cli):
    publisher = {"client_id": PUBLISHER_CLIENT_ID, "username": PUBLISHER}
    config, _ = setup(tmp_path, endpoint, run_cli, extra={"publisher": publisher},
                      publish={"type": "connected-app", "app": "Rotator_Integration", "via": "publisher"})
    made = run_cli("--config", config, "keys", "init", "publisher")
    assert made.code == 0, made.err
    endpoint.register_app(PUBLISHER_CLIENT_ID, made.out, users=[PUBLISHER], name="Rotator_Publisher")
    engine = Engine(load_config(config))
    with capture_logs() as events:
        instance_url, token = engine._metadata_session("publisher", True)
    assert instance_url == endpoint.url
    assert token in endpoint.issued
    assert loaded(events) == [("publisher", "current")]
    login = endpoint.token_log[-1]
    assert (login.client_id, login.subject, login.outcome) == (PUBLISHER_CLIENT_ID, PUBLISHER, "ok")


def test_the_session_falls_back_to_the_pending_key_the_app_holds(tmp_path, endpoint, run_cli):
    """Published, not promoted: the app holds only the pending certificate, so the current key
    is refused (invalid assertion) and the session is made with the pending one."""
    config, old_pem = setup(tmp_path, endpoint, run_cli, renew_before=None)
    staged = run_cli("--config", config, "keys", "rotate", "sf")
    assert staged.code == 0, staged.err
    assert sha(endpoint.certificate(CLIENT_ID)) == sha(staged.out) != sha(old_pem)
    engine = Engine(load_config(config))
    with capture_logs() as events:
        instance_url, token = engine._metadata_session("sf", True)
    assert (instance_url, token) == (endpoint.url, endpoint.issued[-1])
    assert loaded(events) == [("sf", "current"), ("sf", "pending")]
    assert endpoint.token_log[-1].outcome == "ok"
    assert endpoint.token_log[-2].outcome == "invalid_grant"


def test_without_a_pending_key_the_rejection_is_raised(tmp_path, endpoint, run_cli, rsa_keys):
    """The app holds a certificate we have no key for: the session fails with the endpoint's
    own rejection (there is no pending key to fall back on)."""
    config, _ = setup(tmp_path, endpoint, run_cli, renew_before=None)
    endpoint.register_app(CLIENT_ID, rsa_keys[0].cert_pem, users=[USERNAME], name="Rotator_Integration")
    engine = Engine(load_config(config))
    with pytest.raises(TokenRejected) as info:
        engine._metadata_session("sf", True)
    assert info.value.error == "invalid_grant"


def test_the_stored_token_is_the_session_until_refused(tmp_path, endpoint, run_cli):
    config, _ = setup(tmp_path, endpoint, run_cli, renew_before=None)
    engine = Engine(load_config(config))
    assert engine.rotate("sf", force=True).ok
    logins = endpoint.token_requests
    stored = json.loads((config.parent / "store" / "sf" / "token.json").read_text())
    assert engine._metadata_session("sf", False) == (stored["instance_url"], stored["access_token"])
    assert endpoint.token_requests == logins
    fresh = engine._metadata_session("sf", True)
    assert endpoint.token_requests == logins + 1 and fresh[1] != stored["access_token"]


# ---------------------------------------------------------------------------- key material


@pytest.mark.parametrize("field", ["private_key", "certificate"])
def test_a_token_record_holding_key_material_is_never_overwritten(tmp_path, endpoint, run_cli, field):
    config, _ = setup(tmp_path, endpoint, run_cli, renew_before=None)
    token_file = config.parent / "store" / "sf" / "token.json"
    token_file.write_text(json.dumps({field: "-----BEGIN something-----"}))
    before = token_file.read_bytes()
    result = Engine(load_config(config)).rotate("sf", force=True)
    assert isinstance(result.error, RecordError)
    assert str(result.error).startswith(
        "local:sf/token: holds key material (private_key/certificate), not a token; refusing to "
        "overwrite it: give the token a ref of its own")
    assert token_file.read_bytes() == before


# ---------------------------------------------------------------------------- Engine.load_pair


def test_load_pair_as_the_cli_calls_it(tmp_path, endpoint, run_cli):
    config, _ = setup(tmp_path, endpoint, run_cli, renew_before=None)
    engine = Engine(load_config(config))
    keyrec, record = engine.read_key_record("sf")
    with capture_logs() as events:
        key = engine.load_pair("sf", keyrec.current, "pending", record.version)
    assert key.record_version == record.version
    assert loaded(events) == [("sf", "pending")]
    assert key.signer.cert_sha256 == sha(keyrec.current.certificate)


# ---------------------------------------------------------------------------- the publisher


def test_the_publisher_is_built_once_per_engine_and_credential(tmp_path, endpoint, run_cli):
    config, _ = setup(tmp_path, endpoint, run_cli, renew_before=None)
    engine = Engine(load_config(config))
    publisher = engine.metadata_publisher("sf")
    assert publisher is not None and engine.metadata_publisher("sf") is publisher
    assert Engine(load_config(config)).metadata_publisher("sf") is not publisher


def test_the_publishers_call_budget_runs_on_the_engines_clock(tmp_path, endpoint, run_cli):
    """max_requests_per_hour also caps Metadata API calls; the hour is the engine's clock."""
    config, _ = setup(tmp_path, endpoint, run_cli, renew_before=None, max_requests_per_hour=2)
    offset = [0.0]
    engine = Engine(load_config(config), clock=lambda: time.time() + offset[0])
    assert engine.rotate("sf", force=True).ok  # stores the token the publisher uses as its session
    publisher = engine.metadata_publisher("sf")
    assert publisher.read() and publisher.read()
    with pytest.raises(MetadataUnavailable, match="2 Metadata API calls in the last hour"):
        publisher.read()
    offset[0] = 3601.0  # an hour later on the engine's clock, the budget is back
    assert publisher.read()


def test_a_permission_failure_names_the_credential_that_publishes(tmp_path, endpoint, run_cli):
    config, _ = setup(tmp_path, endpoint, run_cli, grant=False)
    with capture_logs() as events:
        assert Engine(load_config(config)).rotate("sf", force=True).ok
    (failed,) = [e for e in events if e["event"] == "key.published"]
    assert failed["ok"] is False and failed["via"] == "sf"
    assert "credential 'sf'" in failed["diagnosis"], failed["diagnosis"]
