"""The emulator as a client sees it after login: versions, resource map, SOQL, describe, identity.

Also the platform token behaviours it can switch on (session reuse, session timeout counted
from last use, JWT access tokens), revocation, and what real clients send (aud with a
trailing slash, exp in milliseconds, chunked bodies). All over real sockets.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator.testing.salesforce import SalesforceEndpoint
from tests.testing.sfkit import (
    CLIENT_ID,
    INVALID_SESSION,
    LOGIN,
    USER,
    Clock,
    certificate,
    get,
    mint,
    new_key,
    post_token,
    sign,
)

pytestmark = pytest.mark.integration
V = "/services/data/v66.0"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def cert(key: rsa.RSAPrivateKey) -> str:
    return certificate(key)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sf(clock: Clock, cert: str):
    with SalesforceEndpoint(clock=clock) as endpoint:
        endpoint.register_app(CLIENT_ID, cert, users=[USER])
        yield endpoint


@pytest.fixture
def token(sf: SalesforceEndpoint, key: rsa.RSAPrivateKey, clock: Clock) -> str:
    return mint(sf, key, clock())


def soql(sf: SalesforceEndpoint, token: str, query: str, **params: str) -> requests.Response:
    return get(sf, f"{V}/query", token, q=query, **params)


# ---------------------------------------------------------------------------- versions, resource map


def test_versions_go_up_to_the_current_release(sf):
    """GET /services/data lists versions oldest first, ending at v66.0 (Spring '26), no token needed."""
    reply = get(sf, "/services/data", None)
    assert reply.status_code == 200
    versions = reply.json()
    assert versions[-1] == {"label": "Spring '26", "url": "/services/data/v66.0", "version": "66.0"}
    labels = {v["version"]: v["label"] for v in versions}
    assert labels["62.0"] == "Winter '25"
    assert labels["64.0"] == "Summer '25"
    assert labels["65.0"] == "Winter '26"
    assert [float(v["version"]) for v in versions] == sorted(float(v["version"]) for v in versions)


def test_resource_map_needs_a_token_and_points_at_served_resources(sf, token):
    """GET /services/data/vXX.X is the resource map; every path in it answers 200."""
    assert get(sf, V, None).status_code == 401
    assert get(sf, V, None).json() == INVALID_SESSION
    reply = get(sf, V, token)
    assert reply.status_code == 200
    resources = reply.json()
    assert resources["sobjects"] == f"{V}/sobjects"
    assert resources["query"] == f"{V}/query"
    assert resources["limits"] == f"{V}/limits"
    assert resources["identity"] == f"{sf.url}/id/{sf.org_id}/{sf.user_id(USER)}"
    for name in ("sobjects", "limits"):
        assert get(sf, resources[name], token).status_code == 200
    assert get(sf, "/services/data/v99.0", token).status_code == 404
    assert get(sf, f"{V}/nothing", token).status_code == 404


# ---------------------------------------------------------------------------- SOQL


def test_organization_query_returns_the_fields_asked_for(sf, token):
    """The Organization fields clients read after login come back with Salesforce's types."""
    fields = "Id, Name, InstanceName, IsSandbox, OrganizationType, NamespacePrefix, TrialExpirationDate"
    query = "SELECT Id, Name, InstanceName, IsSandbox, OrganizationType, NamespacePrefix, TrialExpirationDate"
    reply = soql(sf, token, query + " FROM Organization")
    assert reply.status_code == 200
    body = reply.json()
    assert body["totalSize"] == 1 and body["done"] is True
    record = body["records"][0]
    assert list(record) == ["attributes", *[f.strip() for f in fields.split(",")]]
    assert record["attributes"] == {
        "type": "Organization", "url": f"{V}/sobjects/Organization/{sf.org_id}",
    }
    assert record["Id"] == sf.org_id
    assert record["IsSandbox"] is False
    assert record["NamespacePrefix"] is None
    sf.set_org(IsSandbox=True, OrganizationType="Enterprise Edition")
    record = soql(sf, token, "select issandbox, organizationtype from organization").json()["records"][0]
    assert record["IsSandbox"] is True and record["OrganizationType"] == "Enterprise Edition"


def test_where_and_limit_and_count(sf, token):
    """WHERE f = 'v' [AND ...] filters (strings case-insensitively), LIMIT cuts, COUNT() counts."""
    for name, kind in (("Acme", "Customer"), ("Globex", "Customer"), ("Initech", "Prospect")):
        sf.add_record("Account", Name=name, Type=kind)
    everyone = soql(sf, token, "SELECT Id, Name FROM Account").json()
    assert sorted(r["Name"] for r in everyone["records"]) == ["Acme", "Globex", "Initech"]
    assert all(r["Id"].startswith("001") and len(r["Id"]) == 18 for r in everyone["records"])
    customers = soql(sf, token, "SELECT Name FROM Account WHERE Type = 'customer'").json()
    assert sorted(r["Name"] for r in customers["records"]) == ["Acme", "Globex"]
    both = soql(sf, token, "SELECT Name FROM Account WHERE Type = 'Customer' AND Name = 'Globex'").json()
    assert [r["Name"] for r in both["records"]] == ["Globex"]
    assert soql(sf, token, "SELECT Name FROM Account WHERE Name != 'Acme'").json()["totalSize"] == 2
    assert soql(sf, token, "SELECT Name FROM Account LIMIT 2").json()["totalSize"] == 2
    count = soql(sf, token, "SELECT COUNT() FROM Account WHERE Type = 'Customer'").json()
    assert count == {"totalSize": 2, "done": True, "records": []}
    user = soql(sf, token, "SELECT Id, Username FROM User WHERE Username = 'bot@example.com'").json()
    assert user["records"][0]["Id"] == sf.user_id(USER)
    assert soql(sf, token, "SELECT Id FROM User WHERE Username = 'nobody@x'").json()["totalSize"] == 0
    escaped = soql(sf, token, r"SELECT Id FROM Account WHERE Name = 'O\'Brien'").json()
    assert escaped["totalSize"] == 0


def test_unknown_object_is_invalid_type_as_on_an_org_without_it(sf, token):
    """Probing ScratchOrgInfo (not a Dev Hub) gives 400 INVALID_TYPE with Salesforce's message."""
    reply = soql(sf, token, "SELECT Id FROM ScratchOrgInfo")
    assert reply.status_code == 400
    [error] = reply.json()
    assert error["errorCode"] == "INVALID_TYPE"
    assert error["message"].startswith(
        "\nSELECT Id FROM ScratchOrgInfo\n               ^\nERROR at Row:1:Column:16\n"
        "sObject type 'ScratchOrgInfo' is not supported."
    )


def test_unknown_field_is_invalid_field(sf, token):
    reply = soql(sf, token, "SELECT Id, Shoe FROM Organization")
    assert reply.status_code == 400
    [error] = reply.json()
    assert error["errorCode"] == "INVALID_FIELD"
    assert "ERROR at Row:1:Column:12\nNo such column 'Shoe' on entity 'Organization'." in error["message"]


@pytest.mark.parametrize("query", [
    "SELECT FROM Account",
    "SELECT Id FROM Account ORDER BY Name",
    "SELECT Id FROM Account WHERE Name = 'open",
    "SELECT Id FROM Account LIMIT x",
    "SELECT Id, FROM Account",
    "DELETE FROM Account",
    "SELECT Id FROM Account WHERE Name < 'b'",
])
def test_outside_the_subset_is_malformed_query(sf, token, query):
    reply = soql(sf, token, query)
    assert reply.status_code == 400
    assert reply.json()[0]["errorCode"] == "MALFORMED_QUERY"


def test_query_length_is_bounded(sf, token):
    """A SOQL statement over 20,000 characters is refused, not parsed."""
    reply = requests.post(
        f"{sf.url}{V}/query", timeout=10, headers={"Authorization": f"Bearer {token}"},
    )
    assert reply.status_code == 405
    long_query = "SELECT Id FROM Account WHERE Name = '" + "x" * 20_000 + "'"
    reply = soql(sf, token, long_query)
    assert reply.status_code == 400
    assert "cannot be longer" in reply.json()[0]["message"]


def test_too_many_query_parameters_are_refused(sf, token):
    many = "&".join(f"p{i}=x" for i in range(51))
    reply = requests.get(f"{sf.url}{V}/query?q=SELECT+Id+FROM+Organization&{many}",
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert reply.status_code == 400
    assert "query parameters" in reply.json()[0]["message"]


def test_columns_true_returns_column_metadata(sf, token):
    """query?columns=true answers with Salesforce's columnMetadata shape, not records."""
    reply = soql(sf, token, "SELECT Id, Name, IsSandbox FROM Organization", columns="true")
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {"columnMetadata", "entityName", "groupBy", "idSelected", "keyPrefix"}
    assert body["entityName"] == "Organization"
    assert body["idSelected"] is True
    assert body["keyPrefix"] == "00D"
    assert [c["columnName"] for c in body["columnMetadata"]] == ["Id", "Name", "IsSandbox"]
    first = body["columnMetadata"][0]
    assert set(first) == {
        "aggregate", "apexType", "booleanType", "columnName", "custom", "displayName",
        "foreignKeyName", "insertable", "joinColumns", "numberType", "textType", "updatable",
    }
    assert [c["apexType"] for c in body["columnMetadata"]] == ["Id", "String", "Boolean"]
    assert body["columnMetadata"][2]["booleanType"] is True
    bad = soql(sf, token, "SELECT Id FROM ScratchOrgInfo", columns="true")
    assert bad.json()[0]["errorCode"] == "INVALID_TYPE"


# ---------------------------------------------------------------------------- sobjects, limits, identity


def test_describe_global_and_sobject_describe(sf, token):
    reply = get(sf, f"{V}/sobjects", token)
    assert reply.status_code == 200
    body = reply.json()
    assert body["encoding"] == "UTF-8" and body["maxBatchSize"] == 200
    by_name = {s["name"]: s for s in body["sobjects"]}
    assert {"Organization", "User", "Account"} <= set(by_name)
    assert by_name["Account"]["keyPrefix"] == "001"
    assert by_name["User"]["urls"]["describe"] == f"{V}/sobjects/User/describe"
    describe = get(sf, f"{V}/sobjects/User/describe", token).json()
    assert describe["name"] == "User"
    assert {"Id", "Username", "Email"} <= {f["name"] for f in describe["fields"]}
    summary = get(sf, f"{V}/sobjects/Account", token).json()
    assert summary["objectDescribe"]["name"] == "Account" and summary["recentItems"] == []
    assert get(sf, f"{V}/sobjects/ScratchOrgInfo", token).status_code == 404


def test_user_by_id(sf, token):
    """GET sobjects/User/{id} returns the record; ?fields= narrows it; unknown ids are 404."""
    user_id = sf.user_id(USER)
    record = get(sf, f"{V}/sobjects/User/{user_id}", token).json()
    assert record["attributes"] == {"type": "User", "url": f"{V}/sobjects/User/{user_id}"}
    assert record["Id"] == user_id and record["Username"] == USER and record["IsActive"] is True
    narrow = get(sf, f"{V}/sobjects/User/{user_id}", token, fields="Id,Username").json()
    assert set(narrow) == {"attributes", "Id", "Username"}
    assert get(sf, f"{V}/sobjects/User/{user_id[:15]}", token).json()["Id"] == user_id
    assert get(sf, f"{V}/sobjects/User/005000000000000AAA", token).status_code == 404
    bad = get(sf, f"{V}/sobjects/User/{user_id}", token, fields="Id,Shoe")
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_FIELD"


def test_limits_count_api_use(sf, token):
    first = get(sf, f"{V}/limits", token).json()
    assert set(first["DailyApiRequests"]) == {"Max", "Remaining"}
    get(sf, f"{V}/sobjects", token)
    second = get(sf, f"{V}/limits", token).json()
    assert second["DailyApiRequests"]["Remaining"] == first["DailyApiRequests"]["Remaining"] - 2
    assert sf.api_requests == 3


def test_identity_url_with_bearer_or_oauth_token(sf, token):
    """The `id` URL of the token reply answers with the identity of the token's user."""
    user_id = sf.user_id(USER)
    reply = requests.get(f"{sf.url}/id/{sf.org_id}/{user_id}",
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert reply.status_code == 200
    body = reply.json()
    assert body["id"] == f"{sf.url}/id/{sf.org_id}/{user_id}"
    assert (body["user_id"], body["organization_id"], body["username"]) == (user_id, sf.org_id, USER)
    assert body["urls"]["rest"] == f"{sf.url}/services/data/v{{version}}/"
    assert body["urls"]["metadata"] == f"{sf.url}/services/Soap/m/{{version}}/{sf.org_id}"
    query = urllib.parse.urlencode({"format": "json", "oauth_token": token})
    assert requests.get(f"{sf.url}/id/{sf.org_id}/{user_id}?{query}", timeout=10).status_code == 200
    assert requests.get(f"{sf.url}/id/{sf.org_id}/{user_id}", timeout=10).status_code == 401
    other = sf.user_id("other@example.com")
    forbidden = requests.get(f"{sf.url}/id/{sf.org_id}/{other}",
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert forbidden.status_code == 403


# ---------------------------------------------------------------------------- revoke, what clients send


def test_revoked_token_gets_invalid_session_everywhere(sf, token):
    """POST /services/oauth2/revoke (form token=) ends the session: 401 INVALID_SESSION_ID on use."""
    assert soql(sf, token, "SELECT Id FROM Organization").status_code == 200
    reply = requests.post(f"{sf.url}/services/oauth2/revoke", data={"token": token}, timeout=10)
    assert reply.status_code == 200
    for path in (V, f"{V}/query?q=SELECT+Id+FROM+Organization", f"{V}/sobjects", f"{V}/limits",
                 f"/id/{sf.org_id}/{sf.user_id(USER)}"):
        refused = requests.get(f"{sf.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert refused.status_code == 401, path
        assert refused.json() == INVALID_SESSION


@pytest.mark.parametrize("audience", [LOGIN + "/", "https://test.salesforce.com/"])
def test_audience_with_trailing_slash_is_accepted(sf, key, clock, audience):
    assert post_token(sf, sign(key, clock(), aud=audience)).status_code == 200


def test_own_url_with_trailing_slash_is_accepted_but_not_two(sf, key, clock):
    assert post_token(sf, sign(key, clock(), aud=sf.url + "/")).status_code == 200
    refused = post_token(sf, sign(key, clock(), aud=LOGIN + "//"))
    assert refused.json() == {"error": "invalid_grant", "error_description": "audience is invalid"}


def test_exp_in_milliseconds_is_accepted(sf, key, clock):
    assert post_token(sf, sign(key, clock(), exp=int(clock() * 1000) + 180_000)).status_code == 200


def test_chunked_token_request(sf, key, clock):
    """A form body sent with Transfer-Encoding: chunked is read like any other."""
    body = urllib.parse.urlencode({
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": sign(key, clock()),
    }).encode()
    host, port = sf.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        pieces = (body[i:i + 100] for i in range(0, len(body), 100))
        connection.request("POST", "/services/oauth2/token", body=pieces, encode_chunked=True,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        reply = connection.getresponse()
        payload = json.loads(reply.read())
        assert reply.status == 200, payload
        assert sf.is_valid(payload["access_token"])
        # the same kept-alive connection serves the next (chunked) request
        connection.request("POST", "/services/oauth2/token", body=iter([body]), encode_chunked=True,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        again = connection.getresponse()
        again.read()
        assert again.status == 200
    finally:
        connection.close()


def test_chunked_body_over_the_cap_is_refused(sf):
    """The endpoint answers 413 and closes once a chunked body passes the cap. The client may
    still be sending when it closes: a broken pipe or a reset while sending is that refusal
    too (a server that read on would answer 400 for the junk body, never cut us off), but a
    response that did arrive must be the 413."""
    host, port = sf.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    cut_off = False
    try:
        chunk = b"x" * 65536
        try:
            connection.request("POST", "/services/oauth2/token", body=iter([chunk] * 20), encode_chunked=True,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        except (BrokenPipeError, ConnectionResetError):
            cut_off = True
        try:
            status = connection.getresponse().status
        except (ConnectionResetError, http.client.RemoteDisconnected):
            assert cut_off, "the connection dropped without a response although the body was sent whole"
        else:
            assert status == 413
    finally:
        connection.close()


# ---------------------------------------------------------------------------- token behaviours


def test_reuse_sessions_returns_the_active_token(key, cert, clock):
    """reuse_sessions=True: a new login for the same user and app returns the live token."""
    with SalesforceEndpoint(clock=clock, reuse_sessions=True, session_timeout=100) as sf:
        sf.register_app(CLIENT_ID, cert, users=[USER, "two@example.com"])
        first = mint(sf, key, clock())
        clock.advance(90)
        assert mint(sf, key, clock()) == first  # a reused login counts as use ...
        clock.advance(90)
        assert sf.is_valid(first)  # ... so 180 s after issue it is still live
        assert mint(sf, key, clock(), sub="two@example.com") != first  # another user: its own
        clock.advance(101)
        assert not sf.is_valid(first)
        assert mint(sf, key, clock()) != first  # the old session ended: a new one
        assert sf.reuse_tokens is True  # the older name still reads the switch


def test_default_mints_a_new_token_each_login(sf, key, clock):
    assert mint(sf, key, clock()) != mint(sf, key, clock())


def test_session_timeout_counts_from_last_use(key, cert, clock):
    """A token answers 401 once idle for session_timeout; API use restarts the count."""
    with SalesforceEndpoint(clock=clock, session_timeout=60) as sf:
        sf.register_app(CLIENT_ID, cert, users=[USER])
        token = mint(sf, key, clock())
        for _ in range(3):
            clock.advance(50)
            assert soql(sf, token, "SELECT Id FROM Organization").status_code == 200
        clock.advance(60)
        assert soql(sf, token, "SELECT Id FROM Organization").json() == INVALID_SESSION


def test_app_session_timeout_overrides_the_org(key, cert, clock):
    with SalesforceEndpoint(clock=clock, session_timeout=7200) as sf:
        sf.register_app(CLIENT_ID, cert, users=[USER], session_timeout=30)
        token = mint(sf, key, clock())
        clock.advance(31)
        assert not sf.is_valid(token)


def test_jwt_access_tokens_carry_exp_and_verify_with_the_key_set(key, cert, clock):
    """jwt_access_tokens=True: the token is an RS256 JWT (exp = issue + timeout) that /id/keys verifies."""
    with SalesforceEndpoint(clock=clock, session_timeout=600) as sf:
        sf.register_app(CLIENT_ID, cert, users=[USER], jwt_access_tokens=True, kind="external-client-app")
        token = mint(sf, key, clock())
        assert token.count(".") == 2 and not token.startswith(sf.org_id)
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "RS256"
        jwks = requests.get(f"{sf.url}/id/keys", timeout=10).json()
        [jwk] = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
        public = jwt.PyJWK(jwk).key
        claims = jwt.decode(token, public, algorithms=["RS256"], audience=sf.url,
                            options={"verify_exp": False})
        assert claims["exp"] == int(clock()) + 600
        assert claims["client_id"] == CLIENT_ID and claims["sub"] == f"uid:{sf.user_id(USER)}"
        assert soql(sf, token, "SELECT Id FROM Organization").status_code == 200
        clock.advance(590)
        assert soql(sf, token, "SELECT Id FROM Organization").status_code == 200
        clock.advance(10)  # use does not extend a JWT access token past its exp
        assert soql(sf, token, "SELECT Id FROM Organization").status_code == 401
        other = mint(sf, key, clock())
        sf.revoke(other)
        assert soql(sf, other, "SELECT Id FROM Organization").status_code == 401


def test_rest_faults(sf, token):
    """set_fault(target="rest") fails API calls (not token requests) until used up."""
    sf.set_fault("5xx", target="rest", count=1, status=503)
    assert soql(sf, token, "SELECT Id FROM Organization").status_code == 503
    assert soql(sf, token, "SELECT Id FROM Organization").status_code == 200
    sf.set_fault("html", target="rest", count=1)
    assert get(sf, f"{V}/limits", token).headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        sf.set_fault("badjson", target="rest")
    with pytest.raises(ValueError):
        sf.set_fault("5xx", target="elsewhere")
