"""Zero-touch rollover (issue 17): rotator publishes the pending certificate into the app through
the Metadata API of the Salesforce emulator, over real sockets, then tries and promotes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from structlog.testing import capture_logs

from rotator.audit.events import validate
from rotator.config import load_config
from rotator.engine import Engine
from rotator.keys.crypto import cert_info, load_certificate
from rotator.testing.salesforce import CUSTOMIZE_APPLICATION, MODIFY_METADATA
from tests.conftest import CLIENT_ID, USERNAME, write_config

pytestmark = pytest.mark.integration

APP = "Rotator_Integration"
PUBLISHER = "publisher@example.com"
PUBLISHER_CLIENT_ID = "3MVG9publisher.client.id"


def sha(pem: str) -> str:
    return cert_info(load_certificate(pem)).sha256


def setup(tmp_path: Path, endpoint: Any, run_cli, *, grant: bool = True, days: int = 30,
          publish: dict[str, Any] | None = None, extra: dict[str, dict[str, Any]] | None = None,
          **overrides: Any) -> tuple[Path, str]:
    """A credential `sf` with `publish`, renewal due at once; its app knows its certificate."""
    body = {"publish": publish or {"type": "connected-app", "app": APP},
            "renew_before": f"{days + 1}d", "retry_min": "1s", "retry_max": "2s", **overrides}
    config = write_config(tmp_path / "rotator.toml", login_url=endpoint.url,
                          credentials={"sf": body, **(extra or {})})
    result = run_cli("--config", config, "keys", "init", "sf", "--days", str(days))
    assert result.code == 0, result.err
    endpoint.register_app(CLIENT_ID, result.out, users=[USERNAME], name=APP)
    if grant:
        endpoint.grant_permissions(USERNAME, MODIFY_METADATA, CUSTOMIZE_APPLICATION)
    return config, result.out


def stored(config: Path, path: str) -> dict[str, Any]:
    return json.loads((config.parent / "store" / f"{path}.json").read_text())


def rotate(config: Path, **kwargs: Any) -> tuple[Any, list[dict[str, Any]]]:
    engine = Engine(load_config(config))
    with capture_logs() as events:
        result = engine.rotate("sf", **kwargs)
    return result, events


def query_ok(endpoint: Any, token: str) -> bool:
    reply = requests.get(f"{endpoint.url}/services/data/v62.0/query",
                         params={"q": "SELECT Id FROM Organization"},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return reply.status_code == 200


def test_one_run_stages_publishes_tries_and_promotes(tmp_path, endpoint, run_cli):
    """Renewal due: the run stores the pending key, publishes it, the current key is refused at
    once, the pending key makes the token and is promoted. No human step."""
    config, old_pem = setup(tmp_path, endpoint, run_cli)
    result, events = rotate(config, force=True)
    assert result.ok, result.error
    keyrec = stored(config, "sf/key")
    new_sha = sha(keyrec["certificate"])
    assert new_sha != sha(old_pem)
    assert "pending_certificate" not in keyrec or keyrec["pending_certificate"] is None
    assert sha(keyrec["previous_certificate"]) == sha(old_pem)
    assert sha(endpoint.certificate(CLIENT_ID)) == new_sha
    token = stored(config, "sf/token")
    assert token["key_sha256"] == new_sha
    assert query_ok(endpoint, token["access_token"])
    names = [e["event"] for e in events]
    assert names.index("key.staged") < names.index("key.published") < names.index("key.promoted")
    published = next(e for e in events if e["event"] == "key.published")
    assert published["target"] == "metadata" and published["ok"] is True
    assert published["app"] == APP and published["previous_sha256"] == sha(old_pem)
    assert published["key_sha256"] == new_sha  # rotation_id is bound by the pipeline (contextvars)
    assert validate(published, envelope=False) == []
    calls = [(c.operation, c.username, c.outcome) for c in endpoint.metadata_log]
    assert calls == [("readMetadata", USERNAME, "ok"), ("updateMetadata", USERNAME, "ok"),
                     ("readMetadata", USERNAME, "ok")]


def test_the_update_keeps_every_other_field(tmp_path, endpoint, run_cli):
    """Only the certificate changes: label, contact, callback, consumer key, policy survive."""
    config, _ = setup(tmp_path, endpoint, run_cli)
    before = read_app(endpoint, config)
    result, _ = rotate(config, force=True)
    assert result.ok
    after = read_app(endpoint, config)
    token = stored(config, "sf/token")
    start, end = "<certificate>", "</certificate>"
    assert sha(after[after.index(start) + len(start):after.index(end)]) == token["key_sha256"]
    strip = lambda text: text[:text.index(start)] + text[text.index(end):]  # noqa: E731
    assert strip(after) == strip(before)
    for field in ("<label>", "<contactEmail>", "<callbackUrl>", f"<consumerKey>{CLIENT_ID}<",
                  "<isAdminApproved>true<", "<oauthPolicy>"):
        assert field in after


def read_app(endpoint: Any, config: Path) -> str:
    """The component as a raw readMetadata reply, with a token minted by the current key."""
    _, token = Engine(load_config(config))._metadata_session("sf", True)
    envelope = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
                'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
                'xmlns:md="http://soap.sforce.com/2006/04/metadata"><soapenv:Header><md:SessionHeader>'
                f"<md:sessionId>{token}</md:sessionId></md:SessionHeader></soapenv:Header><soapenv:Body>"
                f"<md:readMetadata><md:type>ConnectedApp</md:type><md:fullNames>{APP}</md:fullNames>"
                "</md:readMetadata></soapenv:Body></soapenv:Envelope>")
    reply = requests.post(f"{endpoint.url}/services/Soap/m/66.0", data=envelope.encode(), timeout=10,
                          headers={"Content-Type": "text/xml", "SOAPAction": '""'})
    assert reply.status_code == 200, reply.text
    return reply.text


@pytest.mark.parametrize("failure", ["permissions", "no-app", "5xx"])
def test_a_failed_publication_leaves_the_current_key_working(tmp_path, endpoint, run_cli, failure):
    """Permissions missing, app unknown, 5xx: audited with a diagnosis, the app keeps its
    certificate, the current key makes the token, the pending key stays for a retry."""
    publish = {"type": "connected-app", "app": "No_Such_App" if failure == "no-app" else APP}
    config, old_pem = setup(tmp_path, endpoint, run_cli, grant=failure != "permissions", publish=publish)
    if failure == "5xx":
        endpoint.set_fault("5xx", target="metadata", count=None, status=503)
    first, _ = rotate(config, force=True)
    assert first.ok
    before = (config.parent / "store" / "sf" / "token.json").read_bytes()
    engine = Engine(load_config(config))
    # a second run: the pending key is tried (refused), the publication retried, the token kept
    with capture_logs() as events:
        result = engine.rotate("sf")
    assert result.ok and result.action == "skipped"
    assert (config.parent / "store" / "sf" / "token.json").read_bytes() == before
    assert sha(endpoint.certificate(CLIENT_ID)) == sha(old_pem)
    keyrec = stored(config, "sf/key")
    assert sha(keyrec["certificate"]) == sha(old_pem) and keyrec["pending_certificate"]
    retried = [e for e in events if e["event"] == "key.published"]
    assert len(retried) == 1 and retried[0]["ok"] is False  # a later run retries the publication
    token = json.loads(before)
    assert query_ok(endpoint, token["access_token"])
    assert token["key_sha256"] == sha(old_pem)
    # a token request now: the pending key is refused, the current one still works
    with capture_logs() as events:
        forced = engine.rotate("sf", force=True)
    assert forced.ok and stored(config, "sf/token")["key_sha256"] == sha(old_pem)
    rejected = [e for e in events if e["event"] == "key.pending_rejected"]
    assert len(rejected) == 1 and "does not hold the pending certificate" in rejected[0]["reason"]


@pytest.mark.parametrize(("failure", "expected"), [
    ("permissions", "Modify Metadata"),
    ("no-app", "No_Such_App"),
    ("5xx", "UNKNOWN_EXCEPTION"),
])
def test_publication_errors_are_diagnosed(tmp_path, endpoint, run_cli, failure, expected):
    publish = {"type": "connected-app", "app": "No_Such_App" if failure == "no-app" else APP}
    config, old_pem = setup(tmp_path, endpoint, run_cli, grant=failure != "permissions", publish=publish)
    if failure == "5xx":
        endpoint.set_fault("5xx", target="metadata", count=None, status=500)
    result, events = rotate(config, force=True)
    assert result.ok  # the current key made the token
    assert stored(config, "sf/token")["key_sha256"] == sha(old_pem)
    published = [e for e in events if e["event"] == "key.published"]
    assert len(published) == 1 and published[0]["ok"] is False
    assert expected in published[0]["diagnosis"]
    assert published[0]["retryable"] is (failure == "5xx")
    assert validate(published[0], envelope=False) == []
    assert sha(endpoint.certificate(CLIENT_ID)) == sha(old_pem)
    endpoint.clear_faults()


# ---------------------------------------------------------------------------- keys publish


def test_keys_publish_dry_run_pending_and_the_way_back(tmp_path, endpoint, run_cli):
    """--dry-run changes nothing; --pending publishes; --current puts the current one back."""
    config, old_pem = setup(tmp_path, endpoint, run_cli, renew_before=None)
    staged = run_cli("--config", config, "keys", "rotate", "sf")
    assert staged.code == 0, staged.err
    new_sha = sha(staged.out)
    # keys rotate published it already (the publish table): put the old one back by hand
    assert sha(endpoint.certificate(CLIENT_ID)) == new_sha
    back = run_cli("--config", config, "keys", "publish", "sf", "--current")
    assert back.code == 0, back.err
    assert f"certificate {new_sha} -> {sha(old_pem)} (current)" in back.out
    assert sha(endpoint.certificate(CLIENT_ID)) == sha(old_pem)
    calls = len(endpoint.metadata_log)
    dry = run_cli("--config", config, "keys", "publish", "sf", "--dry-run")
    assert dry.code == 0, dry.err
    assert f"{APP}: certificate {sha(old_pem)} -> {new_sha} (pending)" in dry.out
    assert "dry run: nothing changed" in dry.out
    assert sha(endpoint.certificate(CLIENT_ID)) == sha(old_pem)
    assert [c.operation for c in endpoint.metadata_log[calls:]] == ["readMetadata"]
    again = run_cli("--config", config, "keys", "publish", "sf", "--pending")
    assert again.code == 0, again.err
    assert sha(endpoint.certificate(CLIENT_ID)) == new_sha
    assert f"now holds {new_sha}" in again.out
    assert "key.published" in again.err  # audited (one-shot commands audit to stderr)


def test_a_published_pending_key_is_never_discarded(tmp_path, endpoint, run_cli):
    config, old_pem = setup(tmp_path, endpoint, run_cli, renew_before=None)
    assert run_cli("--config", config, "keys", "rotate", "sf").code == 0
    refused = run_cli("--config", config, "keys", "discard", "sf")
    assert refused.code == 2
    assert "holds the pending certificate" in refused.err and "--current" in refused.err
    assert stored(config, "sf/key")["pending_certificate"]
    assert run_cli("--config", config, "keys", "publish", "sf", "--current").code == 0
    assert run_cli("--config", config, "keys", "discard", "sf").code == 0
    assert sha(endpoint.certificate(CLIENT_ID)) == sha(old_pem)


def test_keys_publish_without_a_publish_table(tmp_path, endpoint, run_cli):
    config = write_config(tmp_path / "rotator.toml", login_url=endpoint.url)
    result = run_cli("--config", config, "keys", "publish", "sf")
    assert result.code == 2
    assert result.err.count("\n") == 1 and "credentials.sf.publish: not configured" in result.err


def test_a_revoked_stored_session_is_replaced_by_one_new_login(tmp_path, endpoint, run_cli):
    """The stored token is the Metadata session while it works; refused, one new token is minted."""
    config, old_pem = setup(tmp_path, endpoint, run_cli, renew_before=None)
    assert Engine(load_config(config)).rotate("sf", force=True).ok
    token = stored(config, "sf/token")["access_token"]
    logins = endpoint.token_requests
    assert run_cli("--config", config, "keys", "publish", "sf", "--current").code == 0
    assert endpoint.token_requests == logins  # the stored token did it
    endpoint.revoke(token)
    assert run_cli("--config", config, "keys", "rotate", "sf").code == 0
    assert endpoint.token_requests == logins + 1
    assert sha(endpoint.certificate(CLIENT_ID)) != sha(old_pem)
    outcomes = [c.outcome for c in endpoint.metadata_log[-4:]]
    assert outcomes == ["sf:INVALID_SESSION_ID", "ok", "ok", "ok"]


def test_publishing_through_another_credential(tmp_path, endpoint, run_cli, rsa_keys):
    """publish.via: the integration user needs no Metadata permission; the publisher's does."""
    publisher = {"client_id": PUBLISHER_CLIENT_ID, "username": PUBLISHER}
    config, old_pem = setup(tmp_path, endpoint, run_cli, grant=False, extra={"publisher": publisher},
                            publish={"type": "connected-app", "app": APP, "via": "publisher"})
    made = run_cli("--config", config, "keys", "init", "publisher")
    assert made.code == 0
    endpoint.register_app(PUBLISHER_CLIENT_ID, made.out, users=[PUBLISHER], name="Rotator_Publisher")
    endpoint.grant_permissions(PUBLISHER, MODIFY_METADATA, CUSTOMIZE_APPLICATION)
    result, _ = rotate(config, force=True)
    assert result.ok
    assert stored(config, "sf/token")["key_sha256"] == sha(endpoint.certificate(CLIENT_ID)) != sha(old_pem)
    assert {c.username for c in endpoint.metadata_log} == {PUBLISHER}


@pytest.mark.parametrize(("publish", "message"), [
    ({"type": "lightning-app", "app": APP}, "credentials.sf.publish.type"),
    ({"type": "connected-app"}, "credentials.sf.publish.app: required key is missing"),
    ({"type": "connected-app", "app": "has space"}, "credentials.sf.publish.app"),
    ({"type": "external-client-app", "app": APP, "api_version": "59.0"}, "60.0 or later"),
    ({"type": "connected-app", "app": APP, "api_version": "v66"}, "credentials.sf.publish.api_version"),
    ({"type": "connected-app", "app": APP, "via": "nobody"}, "credentials.sf.publish.via: no credential"),
    ({"type": "connected-app", "app": APP, "via": "other"}, "publishes in a cycle"),
    ({"type": "connected-app", "app": APP, "color": "red"}, "credentials.sf.publish.color: unknown key"),
])
def test_publish_config_errors_are_one_line(tmp_path, endpoint, run_cli, publish, message):
    other = {"publish": {"type": "connected-app", "app": "Other_App", "via": "sf"}}
    config = write_config(tmp_path / "rotator.toml", login_url=endpoint.url,
                          credentials={"sf": {"publish": publish}, "other": other})
    result = run_cli("--config", config, "check")
    assert result.code == 2
    assert message in result.err and result.err.count("\n") == 1, result.err


def test_a_replica_holding_only_the_old_key_switches_in_the_same_run(tmp_path, endpoint, run_cli):
    """Replica B signed with the old key; replica A (the CLI here) stages and publishes. B's next
    run tries the pending key first: one token request, accepted, promoted."""
    config, old_pem = setup(tmp_path, endpoint, run_cli, renew_before=None)
    replica = Engine(load_config(config))
    assert replica.rotate("sf", force=True).key_sha256 == sha(old_pem)
    staged = run_cli("--config", config, "keys", "rotate", "sf")
    assert staged.code == 0
    assert sha(endpoint.certificate(CLIENT_ID)) == sha(staged.out)
    logins = endpoint.token_requests
    with capture_logs() as events:
        result = replica.rotate("sf", force=True)
    assert result.ok and result.key_sha256 == sha(staged.out)
    assert endpoint.token_requests == logins + 1
    assert sha(stored(config, "sf/key")["certificate"]) == sha(staged.out)
    assert "key.promoted" in [e["event"] for e in events]


def test_external_client_app_over_tls_read_back_by_simple_salesforce(
    tmp_path, run_cli, monkeypatch, secret_guard
):
    """An External Client App, https: rotator publishes; simple-salesforce's Metadata client
    (zeep + Salesforce's WSDL) reads the same certificate back."""
    from simple_salesforce import Salesforce

    from rotator.providers.base import reset_shared_session
    from rotator.testing.salesforce import SalesforceEndpoint

    with SalesforceEndpoint(tls=True) as endpoint:
        secret_guard.endpoints.append(endpoint)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", endpoint.ca_bundle or "")
        reset_shared_session()  # the shared session reads the CA bundle variable when it is made
        try:
            config = write_config(tmp_path / "rotator.toml", login_url=endpoint.url, credentials={"sf": {
                "publish": {"type": "external-client-app", "app": "Rotator_ECA", "api_version": "60.0"},
                "renew_before": "31d"}})
            made = run_cli("--config", config, "keys", "init", "sf", "--days", "30")
            endpoint.register_app(CLIENT_ID, made.out, users=[USERNAME], name="Rotator_ECA",
                                  kind="external-client-app")
            endpoint.grant_permissions(USERNAME, MODIFY_METADATA, CUSTOMIZE_APPLICATION)
            result, _ = rotate(config, force=True)
            assert result.ok, result.error
            token = stored(config, "sf/token")
            assert token["key_sha256"] != sha(made.out)
            client = Salesforce(instance_url=endpoint.url, session_id=token["access_token"], version="60.0")
            mdapi = client.mdapi
            settings = mdapi.ExtlClntAppGlobalOauthSettings.read("Rotator_ECA")
            assert sha(settings.certificate) == token["key_sha256"]
            assert settings.consumerKey == CLIENT_ID and settings.externalClientApplication == "Rotator_ECA"
            assert {c.version for c in endpoint.metadata_log} == {"60.0"}
        finally:
            reset_shared_session()
