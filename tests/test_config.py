"""Config loading: valid configs load; every bad one gets one line naming the key path, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.config import load_config, parse_config, parse_ref
from rotator.durations import format_duration, parse_duration
from rotator.errors import ConfigError
from tests.conftest import run_rotator, write_config

GOOD = {
    "provider": "salesforce",
    "client_id": "3MVG9abc",
    "username": "a@example.com",
    "login_url": "https://login.salesforce.com",
    "key": "local:sf/key",
    "token": "local:sf/token",
}


def _raw(**cred_overrides: object) -> dict:
    cred = {**GOOD, **cred_overrides}
    cred = {k: v for k, v in cred.items() if v is not None}
    return {"stores": {"local": {"type": "file", "path": "store"}}, "credentials": {"sf": cred}}


def test_valid_config_loads_with_defaults(tmp_path: Path) -> None:
    """A minimal config loads; durations, URLs and refs are parsed; paths resolve to the config dir."""
    config = parse_config(_raw(every="12h"), base_dir=tmp_path)
    cred = config.credential("sf")
    assert cred.every == 43200
    assert cred.effective_token_url == "https://login.salesforce.com/services/oauth2/token"
    assert cred.effective_audience == "https://login.salesforce.com"
    assert str(cred.key) == "local:sf/key"
    assert config.stores["local"].path == tmp_path / "store"
    assert config.daemon.listen == "127.0.0.1:9464"


def test_token_url_and_audience_are_separate(tmp_path: Path) -> None:
    """GovCloud / My Domain: post to the My Domain while aud stays the login URL."""
    config = parse_config(
        _raw(token_url="https://acme.my.salesforce.com/services/oauth2/token"), base_dir=tmp_path
    )
    cred = config.credential("sf")
    assert cred.effective_token_url.startswith("https://acme.my.salesforce.com")
    assert cred.effective_audience == "https://login.salesforce.com"


def test_loopback_http_is_allowed(tmp_path: Path) -> None:
    """http:// is fine for 127.0.0.1, ::1 and localhost (test endpoints)."""
    for url in ("http://127.0.0.1:8080", "http://[::1]:8080", "http://localhost:1"):
        assert parse_config(_raw(login_url=url), base_dir=tmp_path).credential("sf").login_url == url


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({**_raw(), "extra": {}}, "extra: unknown section"),
        (_raw(client_id=None), "credentials.sf.client_id: required key is missing"),
        (_raw(usernme="x"), "credentials.sf.usernme: unknown key"),
        (_raw(username=None), "credentials.sf: salesforce needs username"),
        (_raw(every="soon"), "credentials.sf.every: 'soon' is not a duration"),
        (_raw(every="10x"), "credentials.sf.every: '10x' is not a duration"),
        (_raw(every=""), "credentials.sf.every: empty duration"),
        (_raw(every="0s"), "credentials.sf.every: must be at least 1s"),
        (_raw(jitter="1h", every="30m"), "jitter must be smaller than every"),
        (_raw(every=True), "credentials.sf.every"),
        (_raw(client_id=42), "credentials.sf.client_id: Input should be a valid string"),
        (_raw(key="nostore"), "credentials.sf.key: expected STORE:PATH"),
        (_raw(key="other:sf/key"), "credentials.sf.key: unknown store 'other'"),
        (_raw(key="local:../etc/passwd"), "credentials.sf.key: '../etc/passwd' contains '.' or '..'"),
        (_raw(key="local:/abs/path"), "credentials.sf.key: '/abs/path' is absolute"),
        (_raw(key="local:a b"), "credentials.sf.key: 'a b' has characters"),
        (_raw(token="local:sf/key"), "credentials.sf.token: must differ from key"),
        (_raw(login_url="http://login.salesforce.com"), "http:// is only allowed for loopback hosts"),
        (_raw(login_url="ftp://x"), "credentials.sf.login_url: 'ftp://x' is not an http(s) URL"),
        (_raw(login_url="https://u:p@host"), "credentials in a URL are not allowed"),
        (_raw(provider="oauth"), "credentials.sf.provider: Input should be 'salesforce' or 'jwt-bearer'"),
        (_raw(algorithm="ES256"), "salesforce accepts only RS256"),
        (_raw(assertion_lifetime="10m"), "assertion_lifetime <= 3m"),
        (_raw(extra_claims={"exp": 1}), "cannot override exp"),
        (_raw(provider="jwt-bearer"), "jwt-bearer needs token_url"),
        (_raw(retry_min="1h", retry_max="1m"), "retry_min is larger than retry_max"),
        (_raw(max_requests_per_hour=0), "credentials.sf.max_requests_per_hour"),
        ({"stores": {"x": {"type": "s3"}}}, "stores.x.type: expected one of file, vault, aws"),
        ({"stores": {"x": {"type": "file"}}}, "stores.x.path: required key is missing"),
        ({"stores": {"v": {"type": "vault", "url": "http://vault.example:8200"}}},
         "stores.v.url: http:// is only allowed for loopback hosts"),
        ({"stores": {"v": {"type": "vault", "url": "https://v", "auth": {"method": "approle"}}}},
         "stores.v.auth: approle auth needs role_id_file and secret_id_file"),
        ({"stores": {"v": {"type": "vault", "url": "https://v", "auth": {"method": "ldap"}}}},
         "stores.v.auth.method"),
        ({"daemon": {"listen": "nonsense"}}, "daemon.listen: 'nonsense' is not HOST:PORT"),
        ({"daemon": {"workers": 0}}, "daemon.workers"),
        ({"credentials": {"bad name!": {}}}, "credentials.bad name!: names use letters"),
        ({"credentials": []}, "credentials: expected a table"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, raw: dict, expected: str) -> None:
    """Each malformed config raises ConfigError whose one line names the key path."""
    with pytest.raises(ConfigError) as info:
        parse_config(raw, base_dir=tmp_path)
    line = info.value.diagnostics()
    assert expected in line
    assert "\n" not in line
    assert info.value.exit_code == 2


def test_file_errors(tmp_path: Path) -> None:
    """Missing file, invalid TOML and non-UTF-8 each get a one-line error naming the file."""
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[credentials.sf\n")
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML"):
        load_config(bad)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


def test_aws_rate_warning(tmp_path: Path) -> None:
    """A token on Secrets Manager rotated faster than every 10 minutes draws a warning."""
    raw = _raw(token="aws:sf/token", every="1m")
    raw["stores"]["aws"] = {"type": "aws", "region": "us-east-1"}
    config = parse_config(raw, base_dir=tmp_path)
    assert any("PutSecretValue" in w for w in config.warnings)
    raw = _raw(token="aws:sf/token", every="30m")
    raw["stores"]["aws"] = {"type": "aws", "region": "us-east-1"}
    assert parse_config(raw, base_dir=tmp_path).warnings == ()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("1h30m", 5400), ("500ms", 0.5)],
)
def test_durations(text: str, seconds: float) -> None:
    """Operators' duration spellings parse to seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "1h 30m", "-5s", "5 s", "1y", "3650000d"])
def test_bad_durations(text: str) -> None:
    """Anything else is refused with a message saying how to write one."""
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration() -> None:
    """Durations print back in the shortest exact form."""
    assert format_duration(5400) == "1h30m"
    assert format_duration(0) == "0s"


def test_parse_ref_rejects_traversal() -> None:
    """STORE:PATH refs cannot climb out of a store."""
    assert parse_ref("vault:salesforce/prod/key").path == "salesforce/prod/key"
    for bad in ("vault:a/../b", "vault:", "vault:./a", "vault:a//b"):
        with pytest.raises(ValueError):
            parse_ref(bad)


def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    """A bad config through the real CLI: exit 2, one stderr line naming the key, no traceback."""
    path = write_config(tmp_path / "r.toml", login_url="http://login.salesforce.com")
    proc = run_rotator("--config", path, "check")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "credentials.sf.login_url" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_unknown_command_exits_2(tmp_path: Path) -> None:
    """Bad usage: exit 2 with one line."""
    proc = run_rotator("frobnicate")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
