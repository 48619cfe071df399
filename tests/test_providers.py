"""Providers: the generic RFC 7523 grant, algorithms, response parsing and error mapping."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest

from rotator.config import load_config
from rotator.engine import Engine
from rotator.errors import EndpointProtocolError
from rotator.keys.crypto import generate_ec_key, generate_rsa_key
from rotator.keys.signer import PemSigner as Signer
from rotator.providers.base import HttpReply, retry_after_seconds, unavailable_for
from rotator.providers.jwt_bearer import parse_oauth_success
from rotator.providers.salesforce import hint_for, parse_success
from tests.conftest import CLIENT_ID, USERNAME, write_config


def test_jwt_bearer_against_rfc7523_endpoint(run_cli, endpoint, tmp_path: Path) -> None:
    """provider jwt-bearer with token_url + audience works against any RFC 7523 server."""
    config = write_config(tmp_path / "r.toml", login_url=endpoint.url, credentials={"sf": {
        "provider": "jwt-bearer", "login_url": None, "token_url": endpoint.token_url,
        "audience": endpoint.url, "extra_claims": {"tenant": "acme"}, "scope": "api",
    }})
    cert = run_cli("--config", config, "keys", "init", "sf").out
    endpoint.register_app(CLIENT_ID, cert, users=[USERNAME])
    result = Engine(load_config(config)).rotate("sf")
    assert result.ok, result.error
    assertion = run_cli("--config", config, "jwt", "sf", guard=False).out.strip()
    claims = jwt.decode(assertion, options={"verify_signature": False})
    assert claims["tenant"] == "acme" and claims["scope"] == "api" and claims["jti"]
    assert claims["aud"] == endpoint.url


@pytest.mark.parametrize(("alg", "key"), [("RS256", "rsa"), ("PS256", "rsa"), ("ES256", "ec")])
def test_signer_algorithms(alg: str, key: str) -> None:
    """RS256, PS256 and ES256 assertions verify with the matching public key."""
    private = generate_rsa_key() if key == "rsa" else generate_ec_key()
    token = Signer(private, alg, "f" * 64).sign({"iss": "x", "exp": 2_000_000_000})
    assert jwt.get_unverified_header(token)["alg"] == alg
    assert jwt.decode(token, private.public_key(), algorithms=[alg])["iss"] == "x"


def test_salesforce_success_parsing() -> None:
    """issued_at in epoch milliseconds becomes the token's issue time; no lifetime is invented."""
    parsed = parse_success("u", {"access_token": "00Dx!abc", "instance_url": "https://na1.my.salesforce.com",
                                 "issued_at": "1764331200000", "token_type": "Bearer"})
    assert parsed.issued_at == datetime(2025, 11, 28, 12, 0, tzinfo=UTC)
    assert parsed.expires_at is None


@pytest.mark.parametrize("body", [
    {"instance_url": "https://x"},
    {"access_token": 5, "instance_url": "https://x"},
    {"access_token": "t"},
    {"access_token": "t", "instance_url": "http://evil.example"},
    {"access_token": "t", "instance_url": "https://x", "scope": 3},
    {"access_token": "t" * 10000, "instance_url": "https://x"},
])
def test_salesforce_bad_success_bodies(body: dict) -> None:
    """A 200 without a usable token or with a non-https instance_url is refused."""
    with pytest.raises(EndpointProtocolError):
        parse_success("u", body)


def test_oauth_expires_in() -> None:
    """expires_in becomes expires_at; nonsense is refused."""
    parsed = parse_oauth_success("u", {"access_token": "t", "expires_in": 3600})
    assert parsed.expires_at is not None
    assert 3590 < (parsed.expires_at - parsed.issued_at).total_seconds() <= 3600
    for bad in ("soon", -1, 10**9):
        with pytest.raises(EndpointProtocolError):
            parse_oauth_success("u", {"access_token": "t", "expires_in": bad})


def test_retry_after_forms() -> None:
    """Retry-After as seconds or an HTTP date, capped at an hour; junk ignored."""
    assert retry_after_seconds({"retry-after": "7"}) == 7
    assert retry_after_seconds({"retry-after": "999999"}) == 3600
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_unavailable_classification() -> None:
    """429 and 5xx are retryable; 4xx are not this function's business."""
    assert unavailable_for("u", HttpReply(503, {}, b"")).retryable  # type: ignore[union-attr]
    assert unavailable_for("u", HttpReply(429, {"retry-after": "3"}, b"")).retry_after == 3  # type: ignore[union-attr]
    assert unavailable_for("u", HttpReply(400, {}, b"")) is None


def test_every_documented_error_has_its_own_hint() -> None:
    """Each SALESFORCE.md error maps to a distinct remediation."""
    pairs = [("invalid_grant", "invalid assertion"), ("invalid_grant", "audience is invalid"),
             ("invalid_grant", "expired authorization code"),
             ("invalid_grant", "user hasn't approved this consumer"),
             ("invalid_client_id", "client identifier invalid"),
             ("invalid_app_access", "user is not admin approved to access this app"),
             ("unsupported_grant_type", "grant type not supported"),
             ("invalid_grant", "LOGIN_RATE_EXCEEDED")]
    hints = [hint_for(error, description) for error, description in pairs]
    assert all(hints)
    assert len(set(hints)) == len(hints)


def test_simple_salesforce_jwt_login_is_accepted(endpoint, rsa_keys) -> None:
    """simple-salesforce's own JWT login (exp as a digit string) works against the emulator."""
    import requests
    from simple_salesforce import SalesforceLogin

    endpoint.register_app(CLIENT_ID, rsa_keys[0].cert_pem, users=[USERNAME])

    class ToEndpoint(requests.adapters.HTTPAdapter):
        def send(self, request, **kwargs):  # type: ignore[override]
            request.url = request.url.replace("https://login.salesforce.com", endpoint.url, 1)
            return super().send(request, **kwargs)

    session = requests.Session()
    session.mount("https://", ToEndpoint())
    session_id, instance = SalesforceLogin(username=USERNAME, consumer_key=CLIENT_ID,
                                           privatekey=rsa_keys[0].key_pem, domain="login",
                                           session=session)
    assert endpoint.is_valid(session_id)
    assert endpoint.url.split("//")[1] in instance


def test_oauth_instance_url_follows_the_url_rule() -> None:
    """A generic server's instance_url, when present, must be https (or loopback http)."""
    ok = parse_oauth_success("u", {"access_token": "t", "instance_url": "https://api.example"})
    assert ok.instance_url == "https://api.example"
    assert parse_oauth_success("u", {"access_token": "t"}).instance_url is None
    for bad in ("http://evil.example", 5):
        with pytest.raises(EndpointProtocolError):
            parse_oauth_success("u", {"access_token": "t", "instance_url": bad})


def test_token_requests_reuse_one_connection_and_a_proxy_is_still_honoured(endpoint, monkeypatch) -> None:
    """Without a proxy the token POST goes through urllib3's pools (one kept-alive connection
    for many requests); with one configured it goes through requests, which applies it."""
    from rotator.errors import EndpointUnavailable
    from rotator.providers import base

    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                 "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    url = endpoint.url + "/services/oauth2/token"
    base.reset_shared_session()
    try:
        for _ in range(3):
            reply = base.post_form(url, {"grant_type": "nonsense"}, timeout=10)
            assert reply.status == 400 and reply.is_json
        pools = base.shared_pools()
        assert pools is not None
        pool = pools.connection_from_url(url)
        assert (pool.num_connections, pool.num_requests) == (1, 3)
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens on discard
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
        base.reset_shared_session()
        assert base.shared_pools() is None
        with pytest.raises(EndpointUnavailable, match="connection failed"):
            base.post_form(url, {"grant_type": "nonsense"}, timeout=10)
    finally:
        base.reset_shared_session()


def test_the_daemon_and_a_token_request_do_not_load_requests(endpoint) -> None:
    """requests (~9 MiB resident) stays out of a process whose token requests need no proxy:
    the idle daemon's memory (issue 21). It is loaded by what uses it (Vault, verify, proxies).
    So do rich and pygments, which structlog would import for features rotator does not use."""
    import subprocess
    import sys

    from tests.conftest import REPO, rotator_subprocess_env

    token_url = endpoint.url + "/services/oauth2/token"
    code = (
        "import sys\n"
        "import rotator.cli.app, rotator.daemon.service, rotator.engine, rotator.stores.file\n"
        "from rotator.providers import base\n"
        f"reply = base.post_form({token_url!r}, {{'grant_type': 'x'}}, timeout=10)\n"
        "print(reply.status, 'requests' in sys.modules, 'rich' in sys.modules)\n"
    )
    env = {k: v for k, v in rotator_subprocess_env().items() if "proxy" not in k.lower()}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["400", "False", "False"]
