"""Issue 15, item 4: instance_url and id from the token endpoint are checked before they are stored.

On a0100b0 any https instance_url was stored (every consumer would send its bearer token
there) and `id` was not checked at all (`javascript:...` was stored).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.errors import EndpointProtocolError
from rotator.providers.jwt_bearer import parse_oauth_success
from rotator.providers.salesforce import parse_success
from tests.conftest import write_config
from tests.security.hostile import HostileEndpoint, good_reply

pytestmark = pytest.mark.integration

REMOTE = "https://login.salesforce.com/services/oauth2/token"
LOCAL = "http://127.0.0.1:9/services/oauth2/token"


@pytest.fixture
def evil(secret_guard: Any) -> Iterator[HostileEndpoint]:
    with HostileEndpoint() as server:
        secret_guard.endpoints.append(server)
        yield server


def _setup(tmp_path: Path, evil: HostileEndpoint, run_cli: Any, **settings: Any) -> Path:
    config = write_config(
        tmp_path / "rotator.toml", login_url=evil.url, credentials={"sf": settings},
        daemon={"audit_log": "audit.jsonl"},
    )
    assert run_cli("--config", config, "keys", "init", "sf").code == 0
    return config


def _token(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "store" / "sf" / "token.json").read_text())


@pytest.mark.parametrize(("field", "value", "shown"), [
    ("instance_url", "https://evil.example", "evil.example"),
    ("instance_url", "https://acme.my.salesforce.com.evil.example", "acme.my.salesforce.com.evil.example"),
    ("instance_url", "https://salesforce.com@evil.example", "credentials in a URL"),
    ("instance_url", "https://evilsalesforce.com", "evilsalesforce.com"),
    ("id", "javascript:alert(document.cookie)", "not an http(s) URL"),
    ("id", "https://evil.example/id/00D/005", "evil.example"),
    ("id", "https://login.salesforce.com/services/data", "path is not /id/"),
])
def test_a_foreign_host_is_refused_audited_and_the_old_token_kept(
    tmp_path: Path, evil: HostileEndpoint, run_cli: Any, field: str, value: str, shown: str
) -> None:
    config = _setup(tmp_path, evil, run_cli)
    evil.answer(200, good_reply(evil))
    first = run_cli("--config", config, "rotate", "sf", "--force")
    assert first.code == 0, first.out + first.err
    before = _token(tmp_path)

    evil.answer(200, good_reply(evil, **{field: value}))
    result = run_cli("--config", config, "rotate", "sf", "--force")
    assert result.code == 1
    line = result.json_lines()[0]
    assert line["ok"] is False and f"{field} refused" in line["error"] and shown in line["error"]
    assert _token(tmp_path) == before  # the working token stays
    failed = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()
              if '"rotation.failed"' in x]
    assert failed and shown in failed[-1]["diagnosis"]


def test_salesforce_domains_and_listed_hosts_are_accepted(
    tmp_path: Path, evil: HostileEndpoint, run_cli: Any
) -> None:
    config = _setup(tmp_path, evil, run_cli, instance_hosts=["crm.example.com", "*.proxy.example"])
    for instance, identity in [
        ("https://acme.my.salesforce.com", "https://login.salesforce.com/id/00D/005"),
        ("https://acme--dev.sandbox.my.salesforce.com", "https://test.salesforce.com/id/00D/005"),
        ("https://acme.lightning.force.com", "https://acme.my.salesforce.com/id/00D/005"),
        ("https://crm.example.com", "https://crm.example.com/id/00D/005"),
        ("https://eu.proxy.example:8443", "https://eu.proxy.example/id/00D/005"),
    ]:
        evil.answer(200, good_reply(evil, instance_url=instance, id=identity))
        result = run_cli("--config", config, "rotate", "sf", "--force")
        assert result.code == 0, result.out + result.err
        assert _token(tmp_path)["instance_url"] == instance
        assert _token(tmp_path)["id"] == identity


def test_loopback_only_from_a_loopback_endpoint_or_when_listed() -> None:
    """The emulator (loopback endpoint, loopback instance_url) works; a remote endpoint
    pointing consumers at loopback does not, unless the operator listed the host."""
    local = {"access_token": "t", "instance_url": "http://127.0.0.1:9", "id": "http://127.0.0.1:9/id/o/u"}
    assert parse_success(LOCAL, local).instance_url == "http://127.0.0.1:9"
    with pytest.raises(EndpointProtocolError, match=r"loopback host 127\.0\.0\.1 from a remote endpoint"):
        parse_success(REMOTE, local)
    assert parse_success(REMOTE, local, instance_hosts=("127.0.0.1",)).id == "http://127.0.0.1:9/id/o/u"
    with pytest.raises(EndpointProtocolError, match="not a Salesforce domain"):
        parse_success(LOCAL, {**local, "instance_url": "https://evil.example"})


def test_jwt_bearer_keeps_https_or_loopback_with_the_new_parser() -> None:
    ok = parse_oauth_success(REMOTE, {"access_token": "t", "instance_url": "https://api.example"})
    assert ok.instance_url == "https://api.example"
    with pytest.raises(EndpointProtocolError, match="instance_url refused"):
        parse_oauth_success(REMOTE, {"access_token": "t", "instance_url": "http://evil.example\\.localhost/"})
    with pytest.raises(EndpointProtocolError, match="not in instance_hosts"):
        parse_oauth_success(REMOTE, {"access_token": "t", "instance_url": "https://evil.example"},
                            instance_hosts=("api.example",))
    # a generic server's id is kept only when it is a URL that passes the same rule
    assert parse_oauth_success(REMOTE, {"access_token": "t", "id": "javascript:alert(1)"}).id is None
    assert parse_oauth_success(REMOTE, {"access_token": "t", "id": "https://api.example/me"}).id == (
        "https://api.example/me"
    )


def test_instance_hosts_is_validated(tmp_path: Path, run_cli: Any) -> None:
    config = write_config(tmp_path / "rotator.toml", login_url="https://login.salesforce.com",
                          credentials={"sf": {"instance_hosts": ["evil.example/x"]}})
    result = run_cli("--config", config, "check")
    assert result.code == 2
    assert "credentials.sf.instance_hosts" in result.err
