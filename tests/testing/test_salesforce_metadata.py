"""The emulator's Metadata API (readMetadata / updateMetadata of an app's certificate).

Driven by simple-salesforce's Metadata client (zeep with Salesforce's bundled metadata WSDL)
over https, and by hand-built SOAP envelopes for what that client cannot send.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator.testing.salesforce import (
    CUSTOMIZE_APPLICATION,
    MODIFY_ALL_DATA,
    MODIFY_METADATA,
    SalesforceEndpoint,
)
from tests.testing.sfkit import CLIENT_ID, USER, certificate, new_key, post_token, sign

pytestmark = pytest.mark.integration

APP = "Rotator_Integration"
ECA = "Rotator_ECA"
ECA_CLIENT_ID = "3MVG9ECA.CONSUMER.KEY"
ADMIN = "admin@example.com"
SOAP_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:md="http://soap.sforce.com/2006/04/metadata" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
)


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    return [new_key() for _ in range(3)]


@pytest.fixture(scope="module")
def certs(keys: list[rsa.RSAPrivateKey]) -> list[str]:
    return [certificate(key) for key in keys]


@pytest.fixture
def sf(certs: list[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[SalesforceEndpoint]:
    with SalesforceEndpoint(tls=True) as endpoint:
        endpoint.register_app(CLIENT_ID, certs[0], users=[USER, ADMIN], name=APP)
        endpoint.register_app(ECA_CLIENT_ID, certs[0], users=[USER, ADMIN], name=ECA,
                              kind="external-client-app")
        endpoint.grant_permissions(ADMIN, MODIFY_METADATA, CUSTOMIZE_APPLICATION)
        # zeep (under simple-salesforce's mdapi) builds its own requests session, which finds
        # the emulator's throwaway CA through the environment, as a user's test would set it
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", endpoint.ca_bundle or "")
        yield endpoint


def token_for(sf: SalesforceEndpoint, key: rsa.RSAPrivateKey, user: str = ADMIN,
              client_id: str = CLIENT_ID) -> str:
    reply = post_token(sf, sign(key, time.time(), sub=user, iss=client_id, aud=sf.url), verify=sf.ca_bundle)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["access_token"])


def login_status(sf: SalesforceEndpoint, key: rsa.RSAPrivateKey, client_id: str = CLIENT_ID) -> Any:
    reply = post_token(sf, sign(key, time.time(), iss=client_id, aud=sf.url), verify=sf.ca_bundle)
    return reply.status_code if reply.status_code == 200 else reply.json()["error_description"]


def client(sf: SalesforceEndpoint, token: str, version: str = "62.0") -> Any:
    from simple_salesforce import Salesforce

    session = requests.Session()
    session.verify = sf.ca_bundle
    return Salesforce(instance_url=sf.url, session_id=token, session=session, version=version)


def soap(sf: SalesforceEndpoint, body: str, token: str | None, version: str = "62.0",
         **kwargs: Any) -> requests.Response:
    header = (f"<soapenv:Header><md:SessionHeader><md:sessionId>{token}</md:sessionId>"
              "</md:SessionHeader></soapenv:Header>") if token else ""
    envelope = f"{SOAP_HEAD}{header}<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    return requests.post(f"{sf.url}/services/Soap/m/{version}", data=envelope.encode(),
                         headers={"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": '""'},
                         verify=sf.ca_bundle, timeout=kwargs.pop("timeout", 10), **kwargs)


def faultcode(reply: requests.Response) -> str:
    assert reply.status_code == 500, reply.text
    text = reply.text
    return text[text.index("<faultcode>") + 11:text.index("</faultcode>")]


# ---------------------------------------------------------------------------- the rollover


def test_connected_app_certificate_rollover_through_simple_salesforce(sf, keys, certs):
    """Read the app, change only its certificate, update: the new key works at once, the old one not."""
    mdapi = client(sf, token_for(sf, keys[0])).mdapi
    app = mdapi.ConnectedApp.read(APP)
    assert app.fullName == APP
    assert app.oauthConfig.consumerKey == CLIENT_ID
    assert app.oauthConfig.certificate.strip() == certs[0].strip()
    assert login_status(sf, keys[1]) == "invalid assertion"
    app.oauthConfig.certificate = certs[1]
    mdapi.ConnectedApp.update(app)
    assert login_status(sf, keys[1]) == 200
    assert login_status(sf, keys[0]) == "invalid assertion"
    assert sf.certificate(CLIENT_ID) == certs[1].strip()
    again = mdapi.ConnectedApp.read(APP)
    assert again.oauthConfig.certificate.strip() == certs[1].strip()
    assert again.label == app.label and again.contactEmail == app.contactEmail  # the rest is kept
    assert [(c.operation, c.full_names, c.username, c.outcome) for c in sf.metadata_log] == [
        ("readMetadata", (APP,), ADMIN, "ok"),
        ("updateMetadata", (APP,), ADMIN, "ok"),
        ("readMetadata", (APP,), ADMIN, "ok"),
    ]


def test_external_client_app_certificate_needs_api_60(sf, keys, certs):
    """ExtlClntAppGlobalOauthSettings: certificate at v60.0+; v59.0 hides it and refuses it."""
    token = token_for(sf, keys[0])
    mdapi = client(sf, token, version="60.0").mdapi
    settings = mdapi.ExtlClntAppGlobalOauthSettings.read(ECA)
    assert settings.consumerKey == ECA_CLIENT_ID
    assert settings.externalClientApplication == ECA
    assert settings.certificate.strip() == certs[0].strip()
    settings.certificate = certs[2]
    mdapi.ExtlClntAppGlobalOauthSettings.update(settings)
    assert login_status(sf, keys[2], ECA_CLIENT_ID) == 200
    assert login_status(sf, keys[0], ECA_CLIENT_ID) == "invalid assertion"
    assert login_status(sf, keys[0]) == 200  # the connected app is another app: unchanged

    old = client(sf, token, version="59.0").mdapi
    assert old.ExtlClntAppGlobalOauthSettings.read(ECA).certificate is None
    body = (f'<md:updateMetadata><md:metadata xsi:type="md:ExtlClntAppGlobalOauthSettings">'
            f"<md:fullName>{ECA}</md:fullName><md:certificate>{certs[0]}</md:certificate>"
            f"<md:externalClientApplication>{ECA}</md:externalClientApplication>"
            "</md:metadata></md:updateMetadata>")
    refused = soap(sf, body, token, version="59.0")
    assert faultcode(refused) == "soapenv:Client"
    assert "certificate invalid at this location" in refused.text
    read_58 = soap(sf, "<md:readMetadata><md:type>ExtlClntAppGlobalOauthSettings</md:type>"
                       f"<md:fullNames>{ECA}</md:fullNames></md:readMetadata>", token, version="58.0")
    assert faultcode(read_58) == "sf:INVALID_TYPE"
    assert sf.certificate(ECA_CLIENT_ID) == certs[2].strip()


def test_external_client_apps_need_the_org_setting(sf, keys):
    from zeep.exceptions import Fault

    sf.allow_consumer_secrets_via_metadata = False
    with pytest.raises(Fault) as caught:
        client(sf, token_for(sf, keys[0]), version="62.0").mdapi.ExtlClntAppGlobalOauthSettings.read(ECA)
    assert caught.value.code == "sf:INSUFFICIENT_ACCESS"
    assert "Allow Access to OAuth Consumer Secrets via Metadata API" in caught.value.message


# ---------------------------------------------------------------------------- errors


def test_unknown_app_reads_nil_and_update_is_a_per_record_error(sf, keys):
    """An unknown name reads as an empty (nil) record; updating it fails INVALID_CROSS_REFERENCE_KEY."""
    mdapi = client(sf, token_for(sf, keys[0])).mdapi
    assert mdapi.ConnectedApp.read("No_Such_App").fullName is None
    raw = soap(sf, "<md:readMetadata><md:type>ConnectedApp</md:type>"
                   "<md:fullNames>No_Such_App</md:fullNames></md:readMetadata>", token_for(sf, keys[0]))
    assert '<records xsi:nil="true"/>' in raw.text
    ghost = mdapi.ConnectedApp(fullName="No_Such_App", label="x", contactEmail="x@example.com")
    with pytest.raises(Exception, match="INVALID_CROSS_REFERENCE_KEY, In field: fullName - no "
                                        "ConnectedApp named No_Such_App found"):
        mdapi.ConnectedApp.update(ghost)
    assert sf.metadata_log[-1].outcome == "partial:INVALID_CROSS_REFERENCE_KEY"


def test_insufficient_access(sf, keys, certs):
    """No Metadata API permission, or no CustomizeApplication: sf:INSUFFICIENT_ACCESS, nothing changes."""
    from zeep.exceptions import Fault

    mdapi = client(sf, token_for(sf, keys[0], user=USER)).mdapi
    with pytest.raises(Fault) as caught:
        mdapi.ConnectedApp.read(APP)
    assert caught.value.code == "sf:INSUFFICIENT_ACCESS"
    assert "ModifyAllData or ModifyMetadata" in caught.value.message
    sf.grant_permissions(USER, MODIFY_METADATA)
    with pytest.raises(Fault) as caught:
        mdapi.ConnectedApp.update(mdapi.ConnectedApp(fullName=APP, label="x", contactEmail="x@example.com"))
    assert caught.value.code == "sf:INSUFFICIENT_ACCESS"
    assert "CustomizeApplication" in caught.value.message
    assert sf.certificate(CLIENT_ID) == certs[0].strip()
    sf.grant_permissions(USER, MODIFY_ALL_DATA)  # implies the rest
    assert mdapi.ConnectedApp.read(APP).fullName == APP
    sf.revoke_permissions(USER, MODIFY_ALL_DATA, MODIFY_METADATA)
    with pytest.raises(Fault):
        mdapi.ConnectedApp.read(APP)


def test_bad_or_revoked_session(sf, keys):
    from zeep.exceptions import Fault

    with pytest.raises(Fault) as caught:
        client(sf, "00Dnope!nope").mdapi.ConnectedApp.read(APP)
    assert caught.value.code == "sf:INVALID_SESSION_ID"
    token = token_for(sf, keys[0])
    sf.revoke(token)
    with pytest.raises(Fault) as caught:
        client(sf, token).mdapi.ConnectedApp.read(APP)
    assert caught.value.code == "sf:INVALID_SESSION_ID"
    assert faultcode(soap(sf, "<md:readMetadata><md:type>ConnectedApp</md:type></md:readMetadata>", None)) \
        == "sf:INVALID_SESSION_ID"


def test_update_replaces_the_whole_component(sf, keys, certs):
    """Sent without a certificate, the app has none (every key refused); required fields are checked."""
    token = token_for(sf, keys[0])
    missing = soap(sf, '<md:updateMetadata><md:metadata xsi:type="md:ConnectedApp">'
                       f"<md:fullName>{APP}</md:fullName><md:oauthConfig><md:certificate>{certs[1]}"
                       "</md:certificate></md:oauthConfig></md:metadata></md:updateMetadata>", token)
    assert missing.status_code == 200
    assert "<statusCode>REQUIRED_FIELD_MISSING</statusCode>" in missing.text
    assert "contactEmail, label, oauthConfig.callbackUrl" in missing.text
    assert login_status(sf, keys[0]) == 200  # nothing changed
    garbage = soap(sf, '<md:updateMetadata><md:metadata xsi:type="md:ConnectedApp">'
                       f"<md:fullName>{APP}</md:fullName><md:contactEmail>a@example.com</md:contactEmail>"
                       "<md:label>L</md:label><md:oauthConfig><md:callbackUrl>https://x</md:callbackUrl>"
                       "<md:certificate>not a certificate</md:certificate></md:oauthConfig>"
                       "</md:metadata></md:updateMetadata>", token)
    assert "<statusCode>FIELD_INTEGRITY_EXCEPTION</statusCode>" in garbage.text
    stolen = soap(sf, '<md:updateMetadata><md:metadata xsi:type="md:ConnectedApp">'
                      f"<md:fullName>{APP}</md:fullName><md:contactEmail>a@example.com</md:contactEmail>"
                      "<md:label>L</md:label><md:oauthConfig><md:callbackUrl>https://x</md:callbackUrl>"
                      "<md:consumerKey>someone-else</md:consumerKey></md:oauthConfig>"
                      "</md:metadata></md:updateMetadata>", token)
    assert "consumer key of an app cannot be changed" in stolen.text
    assert login_status(sf, keys[0]) == 200
    bare = soap(sf, '<md:updateMetadata><md:metadata xsi:type="md:ConnectedApp">'
                    f"<md:fullName>{APP}</md:fullName><md:contactEmail>a@example.com</md:contactEmail>"
                    "<md:label>L</md:label><md:oauthConfig><md:callbackUrl>https://x</md:callbackUrl>"
                    "</md:oauthConfig></md:metadata></md:updateMetadata>", token)
    assert "<success>true</success>" in bare.text
    assert sf.certificate(CLIENT_ID) is None
    assert login_status(sf, keys[0]) == "invalid assertion"


def test_malformed_and_hostile_envelopes(sf, keys):
    """Bad XML, DTDs, unknown operations and versions, too many names, GET, oversize: all refused."""
    token = token_for(sf, keys[0])
    assert faultcode(soap(sf, "<md:readMetadata>", token)) == "soapenv:Client"
    bomb = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            "<x>&b;</x>")
    reply = requests.post(f"{sf.url}/services/Soap/m/62.0", data=bomb, verify=sf.ca_bundle, timeout=10)
    assert faultcode(reply) == "soapenv:Client" and "DTD" in reply.text
    deploy = soap(sf, "<md:deploy><md:ZipFile>UEs=</md:ZipFile></md:deploy>", token)
    assert faultcode(deploy) == "soapenv:Client" and "No operation available" in deploy.text
    names = "".join(f"<md:fullNames>A{i}</md:fullNames>" for i in range(11))
    many = soap(sf, f"<md:readMetadata><md:type>ConnectedApp</md:type>{names}</md:readMetadata>", token)
    assert faultcode(many) == "sf:LIMIT_EXCEEDED"
    other_type = soap(sf, "<md:readMetadata><md:type>CustomObject</md:type>"
                          "<md:fullNames>Account</md:fullNames></md:readMetadata>", token)
    assert faultcode(other_type) == "sf:INVALID_TYPE"
    read = "<md:readMetadata><md:type>ConnectedApp</md:type></md:readMetadata>"
    old = soap(sf, read, token, version="12.0")
    assert faultcode(old) == "sf:UNSUPPORTED_API_VERSION"
    assert requests.get(f"{sf.url}/services/Soap/m/62.0", verify=sf.ca_bundle, timeout=10).status_code == 405
    try:  # the cap answers 413 before reading the body; over TLS the client may see the close first
        huge = requests.post(f"{sf.url}/services/Soap/m/62.0", data=b"x" * (1024 * 1024 + 1),
                             verify=sf.ca_bundle, timeout=10)
        assert huge.status_code == 413
    except requests.ConnectionError:
        pass
    assert sf.metadata_log[-1].version == "12.0"  # the oversize body never reached the API


@pytest.mark.parametrize("kind", ["5xx", "html", "reset"])
def test_metadata_faults_leave_the_certificate_alone(sf, keys, certs, kind):
    """An injected 5xx / maintenance page / reset fails the call; the app keeps its certificate."""
    from simple_salesforce.exceptions import SalesforceError
    from zeep.exceptions import Error as ZeepError

    mdapi = client(sf, token_for(sf, keys[0])).mdapi
    app = mdapi.ConnectedApp.read(APP)
    app.oauthConfig.certificate = certs[1]
    sf.set_fault(kind, target="metadata", count=1, status=500)
    with pytest.raises((ZeepError, requests.RequestException, SalesforceError)):
        mdapi.ConnectedApp.update(app)
    assert login_status(sf, keys[0]) == 200
    assert sf.metadata_log[-1].outcome == f"fault:{kind}"
    mdapi.ConnectedApp.update(app)  # the fault is used up
    assert login_status(sf, keys[1]) == 200


def test_slow_metadata_fault_times_a_client_out(sf, keys):
    sf.set_fault("slow", target="metadata", count=1, delay=1.0)
    token = token_for(sf, keys[0])
    body = ("<md:readMetadata><md:type>ConnectedApp</md:type>"
            f"<md:fullNames>{APP}</md:fullNames></md:readMetadata>")
    with pytest.raises(requests.Timeout):
        soap(sf, body, token, timeout=0.3)
    assert soap(sf, body, token).status_code == 200


def test_command_line_serves_apps_with_permissions_and_jwt_tokens(tmp_path, keys, certs):
    """python -m rotator.testing.salesforce --app-name --kind --grant --jwt-access-tokens work together."""
    import subprocess
    import sys

    cert_file = tmp_path / "app.crt"
    cert_file.write_text(certs[0])
    command = [sys.executable, "-m", "rotator.testing.salesforce", "--client-id", ECA_CLIENT_ID,
               "--cert", str(cert_file), "--user", ADMIN, "--app-name", ECA, "--kind", "external-client-app",
               "--grant", "ModifyMetadata", "--grant", "CustomizeApplication", "--jwt-access-tokens"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assertion = sign(keys[0], time.time(), iss=ECA_CLIENT_ID, sub=ADMIN)
            reply = requests.post(f"{url}/services/oauth2/token", timeout=10, data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})
            token = reply.json()["access_token"]
            assert token.count(".") == 2  # a JWT access token
            envelope = (f"{SOAP_HEAD}<soapenv:Header><md:SessionHeader><md:sessionId>{token}"
                        "</md:sessionId></md:SessionHeader></soapenv:Header><soapenv:Body>"
                        "<md:readMetadata><md:type>ExtlClntAppGlobalOauthSettings</md:type>"
                        f"<md:fullNames>{ECA}</md:fullNames></md:readMetadata></soapenv:Body></soapenv:Envelope>")
            read = requests.post(f"{url}/services/Soap/m/66.0", data=envelope, timeout=10)
            assert read.status_code == 200, read.text
            assert f"<consumerKey>{ECA_CLIENT_ID}</consumerKey>" in read.text
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_a_faulting_update_changes_nothing(sf, keys, certs):
    """A call that faults on its second component has not saved its first."""
    token = token_for(sf, keys[0])
    good = ('<md:metadata xsi:type="md:ConnectedApp">'
            f"<md:fullName>{APP}</md:fullName><md:contactEmail>a@example.com</md:contactEmail>"
            "<md:label>L</md:label><md:oauthConfig><md:callbackUrl>https://x</md:callbackUrl>"
            f"<md:certificate>{certs[1]}</md:certificate></md:oauthConfig></md:metadata>")
    other = '<md:metadata xsi:type="md:CustomObject"><md:fullName>Thing__c</md:fullName></md:metadata>'
    reply = soap(sf, f"<md:updateMetadata>{good}{other}</md:updateMetadata>", token)
    assert faultcode(reply) == "sf:INVALID_TYPE"
    assert sf.certificate(CLIENT_ID) == certs[0].strip()
    assert login_status(sf, keys[0]) == 200
