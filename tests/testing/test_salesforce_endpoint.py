"""The Salesforce endpoint emulator, driven over a real socket with requests and PyJWT."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from rotator.testing.salesforce import JWT_BEARER_GRANT, SalesforceEndpoint, TokenAttempt

pytestmark = pytest.mark.integration

CLIENT_ID = "3MVG9TEST.CONSUMER.KEY"
USER = "bot@example.com"
LOGIN = "https://login.salesforce.com"
TOKEN_SHAPE = re.compile(r"^00D[A-Za-z0-9]{15}![A-Za-z0-9_-]{96}$")
INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
T0 = 1_750_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _certificate(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rotator test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def key_a() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def key_b() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def cert_a(key_a: rsa.RSAPrivateKey) -> str:
    return _certificate(key_a)


@pytest.fixture(scope="module")
def cert_b(key_b: rsa.RSAPrivateKey) -> str:
    return _certificate(key_b)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sf(clock: Clock, cert_a: str):
    with SalesforceEndpoint(clock=clock) as endpoint:
        endpoint.register_app(CLIENT_ID, cert_a, users=[USER])
        yield endpoint


def sign(key: rsa.RSAPrivateKey, clock: Clock, **changes: Any) -> str:
    claims: dict[str, Any] = {
        "iss": CLIENT_ID,
        "sub": USER,
        "aud": LOGIN,
        "iat": int(clock()),
        "exp": int(clock()) + 180,
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jwt.encode(claims, key, algorithm="RS256")


def post_token(
    endpoint: SalesforceEndpoint,
    assertion: str,
    *,
    http: Any = requests,
    grant_type: str = JWT_BEARER_GRANT,
    **kwargs: Any,
) -> requests.Response:
    form = {"grant_type": grant_type, "assertion": assertion}
    return http.post(endpoint.token_url, data=form, timeout=5, **kwargs)


def mint(endpoint: SalesforceEndpoint, key: rsa.RSAPrivateKey, clock: Clock) -> str:
    reply = post_token(endpoint, sign(key, clock))
    assert reply.status_code == 200, reply.text
    return reply.json()["access_token"]


def userinfo(endpoint: SalesforceEndpoint, token: str) -> requests.Response:
    return requests.get(
        f"{endpoint.url}/services/oauth2/userinfo",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )


def assert_oauth_error(reply: requests.Response, error: str, description: str) -> None:
    assert reply.status_code == 400
    assert reply.json() == {"error": error, "error_description": description}
    assert reply.headers["Cache-Control"] == "no-store"


# ---------------------------------------------------------------------------- success


def test_success_returns_every_salesforce_field(sf, key_a, clock):
    """A good assertion gets 200 with Salesforce's fields, shapes and no-store."""
    reply = post_token(sf, sign(key_a, clock))
    assert reply.status_code == 200
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {
        "access_token", "instance_url", "id", "token_type", "scope", "issued_at", "signature"
    }
    assert TOKEN_SHAPE.match(body["access_token"])
    assert body["access_token"].startswith(sf.org_id + "!")
    assert body["instance_url"] == sf.url
    assert body["id"] == f"{sf.url}/id/{sf.org_id}/{sf.user_id(USER)}"
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "api"
    assert body["issued_at"] == str(int(T0 * 1000))
    assert len(base64.b64decode(body["signature"], validate=True)) == 32
    assert sf.issued == [body["access_token"]]
    assert sf.is_valid(body["access_token"])
    assert sf.token_log == [TokenAttempt(T0, CLIENT_ID, USER, "ok", None)]


def test_token_works_on_userinfo_and_query(sf, key_a, clock):
    """An issued token is accepted by userinfo and by the query resource, with and without /."""
    token = mint(sf, key_a, clock)
    info = userinfo(sf, token)
    assert info.status_code == 200
    data = info.json()
    assert data["preferred_username"] == USER
    assert data["user_id"] == sf.user_id(USER)
    assert data["organization_id"] == sf.org_id
    assert data["sub"] == f"{sf.url}/id/{sf.org_id}/{sf.user_id(USER)}"
    for suffix in ("query", "query/"):
        reply = requests.get(
            f"{sf.url}/services/data/v62.0/{suffix}",
            params={"q": "SELECT Id, Name FROM Organization"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert reply.status_code == 200
        assert reply.json() == {
            "totalSize": 1,
            "done": True,
            "records": [{
                "attributes": {
                    "type": "Organization",
                    "url": f"/services/data/v62.0/sobjects/Organization/{sf.org_id}",
                },
                "Id": sf.org_id,
                "Name": "rotator emulated org",
            }],
        }


def test_simple_salesforce_queries_with_an_issued_token(key_a, cert_a):
    """simple-salesforce (https only) queries the TLS endpoint with a minted token."""
    from simple_salesforce import Salesforce
    from simple_salesforce.exceptions import SalesforceExpiredSession

    with SalesforceEndpoint(tls=True) as sf:
        sf.register_app(CLIENT_ID, cert_a, users=[USER])
        assert sf.url.startswith("https://127.0.0.1:")
        clock = Clock(time.time())
        reply = post_token(sf, sign(key_a, clock, aud=sf.url), verify=sf.ca_bundle)
        assert reply.status_code == 200, reply.text
        token = reply.json()["access_token"]
        session = requests.Session()
        session.verify = sf.ca_bundle
        session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides session.verify
        client = Salesforce(instance_url=sf.url, session_id=token, session=session)
        result = client.query("SELECT Id FROM Organization")
        assert result["totalSize"] == 1
        assert result["records"][0]["Id"] == sf.org_id
        sf.revoke(token)
        with pytest.raises(SalesforceExpiredSession):
            client.query("SELECT Id FROM Organization")


def test_invalid_token_is_refused_with_invalid_session_id(sf):
    """userinfo and query answer 401 INVALID_SESSION_ID to an unknown or missing token."""
    assert userinfo(sf, "00Dnope!nope").status_code == 401
    assert userinfo(sf, "00Dnope!nope").json() == INVALID_SESSION
    no_auth = requests.get(f"{sf.url}/services/oauth2/userinfo", timeout=5)
    assert no_auth.status_code == 401
    query = requests.get(
        f"{sf.url}/services/data/v62.0/query/",
        params={"q": "SELECT Id FROM Organization"},
        headers={"Authorization": "Bearer 00Dnope!nope"},
        timeout=5,
    )
    assert query.status_code == 401
    assert query.json() == INVALID_SESSION


def test_query_without_q_is_malformed(sf, key_a, clock):
    """A query without q is 400 MALFORMED_QUERY."""
    token = mint(sf, key_a, clock)
    reply = requests.get(
        f"{sf.url}/services/data/v62.0/query/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert reply.status_code == 400
    assert reply.json()[0]["errorCode"] == "MALFORMED_QUERY"


def test_versions_list_and_unknown_path(sf):
    """/services/data/ lists versions including 62.0; an unknown path is 404 NOT_FOUND."""
    versions = requests.get(f"{sf.url}/services/data/", timeout=5)
    assert versions.status_code == 200
    assert {"label": "Winter '25", "url": "/services/data/v62.0", "version": "62.0"} in (
        versions.json()
    )
    missing = requests.get(f"{sf.url}/services/nothing/here", timeout=5)
    assert missing.status_code == 404
    assert missing.json() == [
        {"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}
    ]


def test_audience_may_be_test_site_or_own_url(sf, key_a, clock):
    """aud https://test.salesforce.com and the endpoint's own URL are accepted by default."""
    for audience in ("https://test.salesforce.com", sf.url):
        assert post_token(sf, sign(key_a, clock, aud=audience)).status_code == 200


def test_custom_audiences_replace_the_defaults(key_a, cert_a, clock):
    """audiences= restricts aud to the given values."""
    site = "https://acme.my.site.com"
    with SalesforceEndpoint(clock=clock, audiences=[site]) as sf:
        sf.register_app(CLIENT_ID, cert_a, users=[USER])
        assert post_token(sf, sign(key_a, clock, aud=site)).status_code == 200
        assert_oauth_error(
            post_token(sf, sign(key_a, clock)), "invalid_grant", "audience is invalid"
        )


# ---------------------------------------------------------------------------- errors


def test_wrong_grant_type_is_unsupported(sf, key_a, clock):
    """Any grant_type but jwt-bearer gives unsupported_grant_type."""
    reply = post_token(sf, sign(key_a, clock), grant_type="client_credentials")
    assert_oauth_error(reply, "unsupported_grant_type", "grant type not supported")
    assert sf.token_log[-1].outcome == "unsupported_grant_type"


def test_parameters_in_the_query_string_are_ignored(sf, key_a, clock):
    """grant_type and assertion only count when they are in the body."""
    reply = requests.post(
        sf.token_url,
        params={"grant_type": JWT_BEARER_GRANT, "assertion": sign(key_a, clock)},
        timeout=5,
    )
    assert_oauth_error(reply, "unsupported_grant_type", "grant type not supported")


@pytest.mark.parametrize("assertion", ["", "not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30"])
def test_unreadable_assertion_is_invalid(sf, assertion):
    """A missing or undecodable assertion is invalid_grant / invalid assertion."""
    assert_oauth_error(post_token(sf, assertion), "invalid_grant", "invalid assertion")


def test_non_rs256_assertion_is_invalid(sf, clock):
    """An HS256 assertion is refused as invalid assertion, even with a valid iss."""
    claims = {"iss": CLIENT_ID, "sub": USER, "aud": LOGIN, "exp": int(clock()) + 180}
    assertion = jwt.encode(claims, "a-shared-secret-that-is-long-enough!", algorithm="HS256")
    assert_oauth_error(post_token(sf, assertion), "invalid_grant", "invalid assertion")


def test_unknown_issuer_is_invalid_client_id(sf, key_a, clock):
    """An iss that is no registered consumer key gives invalid_client_id."""
    reply = post_token(sf, sign(key_a, clock, iss="someone-else"))
    assert_oauth_error(reply, "invalid_client_id", "client identifier invalid")
    assert sf.token_log[-1] == TokenAttempt(
        T0, "someone-else", USER, "invalid_client_id", "client identifier invalid"
    )


@pytest.mark.parametrize(
    "audience",
    [[LOGIN], "login.salesforce.com", "https://evil.example.com", None],
    ids=["array", "bare-host", "other-site", "missing"],
)
def test_bad_audience_is_invalid(sf, key_a, clock, audience):
    """An array, a bare host, a foreign URL or no aud gives audience is invalid."""
    reply = post_token(sf, sign(key_a, clock, aud=audience))
    assert_oauth_error(reply, "invalid_grant", "audience is invalid")


def test_wrong_key_is_invalid_assertion(sf, key_b, clock):
    """A signature by a key whose certificate is not on the app is invalid assertion."""
    assert_oauth_error(post_token(sf, sign(key_b, clock)), "invalid_grant", "invalid assertion")


def test_app_without_certificate_is_invalid_assertion(sf, key_a, clock):
    """An app with no certificate uploaded refuses every assertion as invalid assertion."""
    sf.register_app("no-cert-app", None, users=[USER])
    reply = post_token(sf, sign(key_a, clock, iss="no-cert-app"))
    assert_oauth_error(reply, "invalid_grant", "invalid assertion")


@pytest.mark.parametrize("exp", [None, "soon", "-5", 1e10], ids=["missing", "word", "signed", "float"])
def test_exp_missing_or_not_an_integer_is_expired(sf, key_a, clock, exp):
    """exp must be an integer (or its digits as a string): otherwise expired authorization code."""
    reply = post_token(sf, sign(key_a, clock, exp=exp))
    assert_oauth_error(reply, "invalid_grant", "expired authorization code")


def test_exp_as_digit_string_is_accepted(sf, key_a, clock):
    """simple-salesforce sends exp as a digit string; Salesforce accepts it, and so do we."""
    assert post_token(sf, sign(key_a, clock, exp=str(int(clock()) + 120))).status_code == 200


def test_three_minute_grace_after_exp(sf, key_a, clock):
    """exp 100 s (and exactly 180 s) past is accepted; 181 s and 200 s past are expired."""
    now = int(clock())
    for past in (100, 180):
        assert post_token(sf, sign(key_a, clock, exp=now - past)).status_code == 200
    for past in (181, 200):
        reply = post_token(sf, sign(key_a, clock, exp=now - past))
        assert_oauth_error(reply, "invalid_grant", "expired authorization code")


def test_app_not_admin_approved_is_invalid_app_access(sf, key_a, cert_a, clock):
    """admin_approved=False gives invalid_app_access for every login."""
    sf.register_app(CLIENT_ID, cert_a, users=[USER], admin_approved=False)
    reply = post_token(sf, sign(key_a, clock))
    assert_oauth_error(
        reply, "invalid_app_access", "user is not admin approved to access this app"
    )


def test_unknown_or_unapproved_user_has_not_approved(sf, key_a, clock):
    """A sub that is unknown, or known but not approved, gives user hasn't approved."""
    sf.add_user(CLIENT_ID, "pending@example.com", approved=False)
    for subject in ("stranger@example.com", "pending@example.com"):
        reply = post_token(sf, sign(key_a, clock, sub=subject))
        assert_oauth_error(reply, "invalid_grant", "user hasn't approved this consumer")
    sf.add_user(CLIENT_ID, "pending@example.com")
    assert post_token(sf, sign(key_a, clock, sub="pending@example.com")).status_code == 200


def test_errors_come_in_salesforce_check_order(sf, key_a, key_b, clock):
    """With several faults in one assertion, the earliest check in Salesforce's order wins."""
    cases = [
        ({"iss": "unknown", "aud": "bad"}, key_a, ("invalid_client_id", "client identifier invalid")),
        ({"aud": "bad"}, key_b, ("invalid_grant", "audience is invalid")),
        ({"exp": int(clock()) - 3600}, key_b, ("invalid_grant", "invalid assertion")),
        (
            {"exp": int(clock()) - 3600, "sub": "stranger@example.com"},
            key_a,
            ("invalid_grant", "expired authorization code"),
        ),
    ]
    for changes, key, (error, description) in cases:
        assert_oauth_error(post_token(sf, sign(key, clock, **changes)), error, description)


# ---------------------------------------------------------------------------- certificates, sessions


def test_upload_certificate_replaces_the_old_one(sf, key_a, key_b, cert_b, clock):
    """After upload_certificate the old key gets invalid assertion and the new key works."""
    assert post_token(sf, sign(key_b, clock)).status_code == 400
    sf.upload_certificate(CLIENT_ID, cert_b)
    assert_oauth_error(post_token(sf, sign(key_a, clock)), "invalid_grant", "invalid assertion")
    assert post_token(sf, sign(key_b, clock)).status_code == 200


def test_revoke_endpoint_and_method_end_the_session(sf, key_a, clock):
    """POST /revoke (200, empty) and revoke() both make a token stop working."""
    token = mint(sf, key_a, clock)
    reply = requests.post(f"{sf.url}/services/oauth2/revoke", data={"token": token}, timeout=5)
    assert reply.status_code == 200
    assert reply.content == b""
    assert not sf.is_valid(token)
    assert userinfo(sf, token).status_code == 401
    again = requests.post(f"{sf.url}/services/oauth2/revoke", data={"token": token}, timeout=5)
    assert again.status_code == 400
    other = mint(sf, key_a, clock)
    assert userinfo(sf, other).status_code == 200
    sf.revoke(other)
    assert userinfo(sf, other).status_code == 401


def test_idle_sessions_expire_and_use_extends_them(key_a, cert_a, clock):
    """A token dies after session_lifetime idle seconds; each API use restarts the count."""
    with SalesforceEndpoint(clock=clock, session_lifetime=100) as sf:
        sf.register_app(CLIENT_ID, cert_a, users=[USER])
        token = mint(sf, key_a, clock)
        clock.advance(60)
        assert userinfo(sf, token).status_code == 200  # use at t=60 extends to t=160
        clock.advance(60)
        assert sf.is_valid(token)  # 120 s after issue, 60 s idle
        clock.advance(40)
        assert not sf.is_valid(token)
        assert userinfo(sf, token).status_code == 401


def test_reuse_tokens_returns_the_live_token(key_a, cert_a, clock):
    """reuse_tokens=True repeats the live token; the default mints a new one each time."""
    with SalesforceEndpoint(clock=clock, reuse_tokens=True) as sf:
        sf.register_app(CLIENT_ID, cert_a, users=[USER])
        first, second = mint(sf, key_a, clock), mint(sf, key_a, clock)
        assert first == second
        sf.revoke(first)
        assert mint(sf, key_a, clock) != first
    with SalesforceEndpoint(clock=clock) as sf:
        sf.register_app(CLIENT_ID, cert_a, users=[USER])
        assert mint(sf, key_a, clock) != mint(sf, key_a, clock)


def test_login_rate_limit_counts_failures_and_rolls_over(key_a, key_b, cert_a, clock):
    """Beyond login_rate_limit requests an hour (failed ones count) logins get LOGIN_RATE_EXCEEDED."""
    with SalesforceEndpoint(clock=clock, login_rate_limit=3) as sf:
        sf.register_app(CLIENT_ID, cert_a, users=[USER])
        assert post_token(sf, sign(key_a, clock)).status_code == 200
        assert post_token(sf, sign(key_b, clock)).status_code == 400  # failed, still counted
        assert post_token(sf, sign(key_a, clock)).status_code == 200
        limited = post_token(sf, sign(key_a, clock))
        assert_oauth_error(limited, "invalid_grant", "LOGIN_RATE_EXCEEDED")
        clock.advance(3601)
        assert post_token(sf, sign(key_a, clock)).status_code == 200


# ---------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("kind", "options", "status", "content_type"),
    [
        ("5xx", {"status": 502}, 502, "application/json"),
        ("429", {"retry_after": 7}, 429, "application/json"),
        ("html", {}, 503, "text/html"),
        ("html200", {}, 200, "text/html"),
        ("badjson", {}, 200, "application/json"),
        ("missing_fields", {}, 200, "application/json"),
        ("huge", {}, 200, "application/json"),
    ],
)
def test_fault_replies_as_a_client_sees_them(sf, key_a, clock, kind, options, status, content_type):
    """Each reply fault has its status, type and body; count=1 clears itself afterwards."""
    sf.set_fault(kind, count=1, **options)
    reply = post_token(sf, sign(key_a, clock))
    assert reply.status_code == status
    assert reply.headers["Content-Type"].startswith(content_type)
    if kind == "5xx":
        assert reply.json()["error"]
    if kind == "429":
        assert reply.headers["Retry-After"] == "7"
        assert reply.json()["error"]
    if kind in ("html", "html200"):
        assert "<html" in reply.text.lower()
        with pytest.raises(ValueError):
            reply.json()
    if kind == "badjson":
        with pytest.raises(ValueError):
            json.loads(reply.content)
    if kind == "missing_fields":
        assert "access_token" not in reply.json()
    if kind == "huge":
        assert len(reply.content) == 5 * 1024 * 1024
    assert sf.token_log[-1].outcome == f"fault:{kind}"
    assert sf.issued == []
    assert post_token(sf, sign(key_a, clock)).status_code == 200  # the fault is used up


def test_reset_fault_is_a_connection_error(sf, key_a, clock):
    """The reset fault closes the connection with no reply: requests raises ConnectionError."""
    sf.set_fault("reset")
    with requests.Session() as http:
        for _ in range(2):  # lasts until cleared
            with pytest.raises(requests.ConnectionError) as caught:
                post_token(sf, sign(key_a, clock), http=http)
            assert "reset" in str(caught.value).lower()  # ECONNRESET, not a clean close
        sf.clear_faults()
        assert post_token(sf, sign(key_a, clock), http=http).status_code == 200
    assert [a.outcome for a in sf.token_log] == ["fault:reset", "fault:reset", "ok"]


def test_slow_fault_makes_a_client_time_out(sf, key_a, clock):
    """The slow fault answers after `delay`: a client with a shorter timeout times out."""
    sf.set_fault("slow", count=1, delay=5.0)
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.post(
            sf.token_url,
            data={"grant_type": JWT_BEARER_GRANT, "assertion": sign(key_a, clock)},
            timeout=0.5,
        )
    assert time.monotonic() - started < 3.0  # the client's 0.5s (slack for a busy machine), not 5s
    reply = post_token(sf, sign(key_a, clock))
    assert reply.status_code == 200


def test_fault_without_count_lasts_until_cleared(sf, key_a, clock):
    """count=None keeps faulting until clear_faults(); unknown kinds are refused."""
    sf.set_fault("5xx")
    assert [post_token(sf, sign(key_a, clock)).status_code for _ in range(3)] == [503] * 3
    sf.clear_faults()
    assert post_token(sf, sign(key_a, clock)).status_code == 200
    with pytest.raises(ValueError):
        sf.set_fault("gremlins")


def test_token_requests_counts_every_post(sf, key_a, key_b, clock):
    """token_requests counts ok, failed and faulted POSTs; GETs and other paths do not count."""
    post_token(sf, sign(key_a, clock))
    post_token(sf, sign(key_b, clock))
    sf.set_fault("html", count=1)
    post_token(sf, sign(key_a, clock))
    assert requests.get(sf.token_url, timeout=5).status_code == 405
    requests.get(f"{sf.url}/services/data/", timeout=5)
    assert sf.token_requests == 3
    assert [a.outcome for a in sf.token_log] == ["ok", "invalid_grant", "fault:html"]
    assert len(sf.issued) == 1
    sf.reset_counters()
    assert (sf.token_requests, sf.token_log, sf.issued) == (0, [], [])


# ---------------------------------------------------------------------------- transport


def test_keep_alive_token_exchanges_are_fast(sf, key_a, clock):
    """200 token requests on one kept-alive connection take under 7 s (a Nagle stall, 40 ms
    each, takes 8 s; an idle machine takes well under 1 s)."""
    assertion = sign(key_a, clock)
    with requests.Session() as http:
        started = time.monotonic()
        for _ in range(200):
            reply = post_token(sf, assertion, http=http)
            assert reply.status_code == 200
        elapsed = time.monotonic() - started
    assert elapsed < 7.0, f"200 exchanges took {elapsed:.1f}s"
    assert sf.token_requests == 200


def test_stop_drops_kept_alive_connections_promptly(cert_a, key_a, clock):
    """stop() returns quickly although a client still holds an idle keep-alive connection."""
    sf = SalesforceEndpoint(clock=clock).start()
    sf.register_app(CLIENT_ID, cert_a, users=[USER])
    http = requests.Session()
    assert post_token(sf, sign(key_a, clock), http=http).status_code == 200
    started = time.monotonic()
    sf.stop()
    assert time.monotonic() - started < 4.0  # not the 5s thread join nor the 60s idle timeout
    with pytest.raises(requests.ConnectionError):
        post_token(sf, sign(key_a, clock), http=http)
    http.close()


def test_module_entry_point_serves_until_interrupted(tmp_path: Path, key_a, cert_a):
    """python -m rotator.testing.salesforce prints its URL, serves tokens, exits on Ctrl-C."""
    cert_file = tmp_path / "app.crt"
    cert_file.write_text(cert_a)
    command = [
        sys.executable, "-m", "rotator.testing.salesforce", "--port", "0",
        "--client-id", CLIENT_ID, "--cert", str(cert_file), "--user", USER,
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
            assertion = sign(key_a, Clock(time.time()))
            reply = requests.post(
                f"{url}/services/oauth2/token",
                data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion},
                timeout=5,
            )
            assert reply.status_code == 200
            assert reply.json()["instance_url"] == url
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=5) == 0
        finally:
            if process.poll() is None:
                process.kill()
