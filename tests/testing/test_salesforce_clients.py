"""Real Salesforce clients that no one here wrote, driving the emulator over real sockets.

* simple-salesforce (Python): its own JWT login, then query, describe, limits, a record by
  id, the resource map, the INVALID_TYPE probe; and ``Salesforce(instance_url=, session_id=)``
  with a token rotator wrote to its store, until the token is revoked.
* jsforce (Node.js, from the npm registry, installed by ``make node-clients`` or on first use
  into .cache/node): a Connection from accessToken + instanceUrl runs a query on
  Organization, COUNT(), the ScratchOrgInfo probe, describeGlobal, identity, limits, a record
  retrieve, and logout (which revokes the token).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator.testing.salesforce import SalesforceEndpoint
from tests.conftest import CLIENT_ID as ROTATOR_CLIENT_ID
from tests.conftest import USERNAME as ROTATOR_USER
from tests.testing.node_clients import NodeClientUnavailable, ensure_jsforce
from tests.testing.sfkit import CLIENT_ID, USER, certificate, key_pem, mint, new_key

pytestmark = pytest.mark.integration
PROBE = Path(__file__).with_name("jsforce_probe.js")
ORG_FIELDS = "Id, Name, InstanceName, IsSandbox, OrganizationType, NamespacePrefix, TrialExpirationDate"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return new_key()


class _ToEmulator(requests.adapters.HTTPAdapter):
    """Sends what simple-salesforce addresses to login.salesforce.com to the emulator instead."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def, override]
        request.url = request.url.replace("https://login.salesforce.com", self.base_url, 1)
        return super().send(request, **kwargs)


def test_simple_salesforce_jwt_login_then_looks_at_the_org(key):
    """simple-salesforce logs in by JWT (its own assertion) and then queries, describes, reads limits."""
    from simple_salesforce import Salesforce
    from simple_salesforce.exceptions import SalesforceMalformedRequest

    with SalesforceEndpoint(tls=True) as sf:
        sf.register_app(CLIENT_ID, certificate(key), users=[USER])
        sf.add_record("Account", Name="Acme", Type="Customer")
        session = requests.Session()
        session.verify = sf.ca_bundle
        session.trust_env = False
        session.mount("https://login.salesforce.com", _ToEmulator(sf.url))
        client = Salesforce(username=USER, consumer_key=CLIENT_ID, privatekey=key_pem(key),
                            domain="login", session=session, version="66.0")
        assert sf.token_log[-1].outcome == "ok"
        assert sf.is_valid(client.session_id)

        org = client.query(f"SELECT {ORG_FIELDS} FROM Organization")  # noqa: S608 - constant
        assert org["totalSize"] == 1
        assert org["records"][0]["Id"] == sf.org_id
        assert org["records"][0]["IsSandbox"] is False
        accounts = client.query_all("SELECT Id, Name FROM Account WHERE Type = 'Customer'")
        assert [r["Name"] for r in accounts["records"]] == ["Acme"]
        with pytest.raises(SalesforceMalformedRequest) as probe:
            client.query("SELECT Id FROM ScratchOrgInfo")
        assert probe.value.content[0]["errorCode"] == "INVALID_TYPE"

        names = {s["name"] for s in client.describe()["sobjects"]}
        assert {"Organization", "User", "Account"} <= names
        assert "Username" in {f["name"] for f in client.User.describe()["fields"]}
        limits = client.limits()
        assert limits["DailyApiRequests"]["Max"] > limits["DailyApiRequests"]["Remaining"]
        assert client.User.get(sf.user_id(USER))["Username"] == USER
        assert client.restful("")["sobjects"] == "/services/data/v66.0/sobjects"
        assert client.is_sandbox() is False


def test_simple_salesforce_with_a_token_rotator_wrote(run_cli, endpoint, config_path):
    """`rotator rotate` stores a token; simple-salesforce uses it (instance_url, session_id) until revoked."""
    from simple_salesforce import Salesforce
    from simple_salesforce.exceptions import SalesforceExpiredSession

    created = run_cli("--config", config_path, "keys", "init", "sf")
    assert created.code == 0, created.err
    endpoint.register_app(ROTATOR_CLIENT_ID, created.out, users=[ROTATOR_USER])
    assert run_cli("--config", config_path, "rotate", "sf").code == 0
    record = json.loads((config_path.parent / "store" / "sf" / "token.json").read_text())
    session = requests.Session()
    session.trust_env = False
    # simple-salesforce only speaks https; the emulator here is plain http on loopback
    session.mount("https://", _HttpsToHttp())
    client = Salesforce(instance_url=record["instance_url"].replace("http://", "https://"),
                        session_id=record["access_token"], session=session, version="62.0")
    org = client.query("SELECT Id, InstanceName, OrganizationType FROM Organization")
    assert org["records"][0]["Id"] == endpoint.org_id
    assert {"Organization", "User", "Account"} <= {s["name"] for s in client.describe()["sobjects"]}
    assert "DailyApiRequests" in client.limits()
    assert client.oauth2("userinfo")["preferred_username"] == ROTATOR_USER
    revoked = requests.post(f"{endpoint.url}/services/oauth2/revoke", data={"token": record["access_token"]},
                            timeout=10)
    assert revoked.status_code == 200
    with pytest.raises(SalesforceExpiredSession):
        client.query("SELECT Id FROM Organization")


class _HttpsToHttp(requests.adapters.HTTPAdapter):
    def send(self, request, **kwargs):  # type: ignore[no-untyped-def, override]
        request.url = request.url.replace("https://", "http://", 1)
        return super().send(request, **kwargs)


def _run_jsforce(sf: SalesforceEndpoint, token: str) -> dict[str, Any]:
    try:
        modules = ensure_jsforce()
    except NodeClientUnavailable as problem:
        pytest.fail(f"jsforce is needed for this test and could not be installed: {problem}")
    node = shutil.which("node")
    assert node is not None
    env = {**os.environ, "NODE_PATH": str(modules), "NO_PROXY": "127.0.0.1,localhost"}
    request = json.dumps({"instanceUrl": sf.url, "accessToken": token, "version": "62.0"})
    done = subprocess.run([node, str(PROBE)], input=request, capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


def test_jsforce_connects_with_an_access_token(key):
    """jsforce (Node.js) queries, probes, describes, reads identity and limits, then logs out (revokes)."""
    with SalesforceEndpoint() as sf:
        sf.register_app(CLIENT_ID, certificate(key), users=[USER])
        token = mint(sf, key, time.time())
        out = _run_jsforce(sf, token)

        org = out["organization"]
        assert org["ok"], org
        assert org["value"]["totalSize"] == 1
        record = org["value"]["records"][0]
        assert record["Id"] == sf.org_id and record["IsSandbox"] is False
        assert record["InstanceName"] == "EMU1" and record["NamespacePrefix"] is None
        assert out["count"]["ok"] and out["count"]["value"]["totalSize"] == 1
        assert out["devHubProbe"] == {
            "ok": False, "errorCode": "INVALID_TYPE", "message": out["devHubProbe"]["message"],
        }
        assert "sObject type 'ScratchOrgInfo' is not supported" in out["devHubProbe"]["message"]
        assert out["describeGlobal"]["ok"]
        assert {"Organization", "User", "Account"} <= set(out["describeGlobal"]["names"])
        assert out["identity"] == {"ok": True, "user_id": sf.user_id(USER),
                                   "organization_id": sf.org_id, "username": USER}
        assert out["limits"]["ok"] and "DailyApiRequests" in out["limits"]["value"]
        assert out["userRecord"]["ok"] and out["userRecord"]["value"]["Username"] == USER
        assert out["logout"]["ok"], out["logout"]
        assert out["afterLogout"]["ok"] is False
        assert out["afterLogout"]["errorCode"] == "INVALID_SESSION_ID"
        assert not sf.is_valid(token)
