"""rotator/urls.py, the one URL rule, as unit tests of pure logic: each boundary and each message.

tests/security/test_net_urls.py holds the bypass catalogue (parser differences an attacker would
try); this file pins the rule itself, so that `make mutate` (rotator/urls.py against this file)
notices any change to it: which hosts count as loopback, what `url_host` returns, the length
limit, the order of the checks (each refusal says why, and the message is the contract), and the
trailing-slash normalisation every caller relies on when it appends a path.
"""

from __future__ import annotations

import pytest

from rotator.urls import MAX_URL_CHARS, check_url, is_loopback_host, url_host

# -- is_loopback_host -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", [
    "localhost", "LOCALHOST", "LocalHost",
    "127.0.0.1", "127.255.255.254", "127.9.8.7",
    "::1", "[::1]", "[0:0:0:0:0:0:0:1]",
    "[localhost]",
])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host) is True


@pytest.mark.parametrize("host", [
    "", "example.com", "localhost.", "evil.localhost", "localhost.example.com",
    "128.0.0.1", "10.0.0.1", "0.0.0.0", "::",  # noqa: S104 "[::]", "::2", "[::ffff:7f00:1]x",
    # brackets only count as a pair: one bracket alone is not stripped (and so is no IP)
    "[::1", "::1]", "[127.0.0.1", "127.0.0.1]",
    # a bracket pair is stripped only when it is at both ends
    "x127.0.0.1]", "[127.0.0.1x", "x[::1]",
])
def test_non_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host) is False


# -- url_host ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "host"), [
    ("https://login.salesforce.com", "login.salesforce.com"),
    ("https://Login.Salesforce.COM/services/oauth2/token", "login.salesforce.com"),
    ("https://vault.example.com:8200/v1/secret", "vault.example.com"),
    ("http://127.0.0.1:9000", "127.0.0.1"),
    ("http://[::1]:8200", "::1"),
    ("https://[2001:DB8::1]/", "2001:db8::1"),
])
def test_url_host(url: str, host: str) -> None:
    assert url_host(url) == host


def test_url_host_of_a_url_without_a_host_is_empty() -> None:
    assert url_host("https:///path") == ""


# -- check_url: what passes, and what it returns -----------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("https://login.salesforce.com", "https://login.salesforce.com"),
    ("https://login.salesforce.com/", "https://login.salesforce.com"),
    ("https://login.salesforce.com///", "https://login.salesforce.com"),
    ("https://test.salesforce.com/services/", "https://test.salesforce.com/services"),
    ("https://vault.example.com:8200", "https://vault.example.com:8200"),
    ("http://localhost:8200/", "http://localhost:8200"),
    ("http://127.0.0.1:9000/x", "http://127.0.0.1:9000/x"),
    ("http://[::1]:8200", "http://[::1]:8200"),
    ("https://EXAMPLE.com", "https://EXAMPLE.com"),
    ("HTTPS://example.com", "HTTPS://example.com"),
    ("https://example.com/a/b?c=d#e", "https://example.com/a/b?c=d#e"),
    # only slashes are stripped, whatever letter the URL ends in
    ("https://example.com/X", "https://example.com/X"),
    ("https://example.com/pathX/", "https://example.com/pathX"),
    ("https://example.com/!$&'()*+,=~", "https://example.com/!$&'()*+,=~"),
])
def test_accepted_urls_come_back_without_trailing_slashes(url: str, expected: str) -> None:
    assert check_url(url) == expected


def test_the_length_limit_is_inclusive() -> None:
    base = "https://example.com/"
    longest = base + "a" * (MAX_URL_CHARS - len(base))
    assert len(longest) == MAX_URL_CHARS == 2048
    assert check_url(longest) == longest
    with pytest.raises(ValueError, match=r"^URL longer than 2048 characters$"):
        check_url(longest + "a")


# -- check_url: each refusal and its message ----------------------------------------------------


@pytest.mark.parametrize("value", ["", None, 8200, b"https://example.com"])
def test_not_a_url_at_all(value: object) -> None:
    with pytest.raises(ValueError, match=r"^expected a URL such as https://login\.salesforce\.com$"):
        check_url(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("url", [
    "https://example.com/a b",
    "https://example.com/\x00",
    "https://example.com/\x1f",
    "https://example.com/\x7f",
    "https://example.com/\x9f",
    "https://example.com/a\\b",
    "https://example.com/\u00a0",
    "https://example.com/\u1680",
    "https://example.com/\u2000",
    "https://example.com/\u200f",
    "https://example.com/\u2028",
    "https://example.com/\u2029",
    "https://example.com/\u202f",
    "https://example.com/\u205f",
    "https://example.com/\u3000",
    "https://example.com/\ufeff",
    "\thttps://example.com",
])
def test_whitespace_controls_and_backslashes(url: str) -> None:
    with pytest.raises(ValueError, match=r"^URL contains whitespace, a control character or a backslash$"):
        check_url(url)


@pytest.mark.parametrize("char", ["\x21", "\xa1", "\u2010", "\u2030", "\u3001"])
def test_characters_just_outside_the_refused_ranges_pass(char: str) -> None:
    url = f"https://example.com/{char}"
    assert check_url(url) == url


@pytest.mark.parametrize("url", [
    "ftp://example.com",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "example.com",
    "//example.com/x",
    "https:///path",
    "https://",
    "http://:8200",
])
def test_not_http_or_no_host(url: str) -> None:
    with pytest.raises(ValueError, match=r"is not an http\(s\) URL$") as info:
        check_url(url)
    assert str(info.value) == f"{url!r} is not an http(s) URL"


def test_a_long_refused_url_is_cut_to_100_characters_in_the_message() -> None:
    url = "ftp://" + "a" * 300 + ".example"
    with pytest.raises(ValueError) as info:
        check_url(url)
    assert str(info.value) == f"{url[:100]!r} is not an http(s) URL"


@pytest.mark.parametrize("url", [
    "https://user@example.com",
    "https://user:pass@example.com",
    "https://:pass@example.com",
    "https://@example.com",
    "http://user@localhost:8200",
])
def test_credentials_in_the_url(url: str) -> None:
    with pytest.raises(ValueError, match=r"^credentials in a URL are not allowed; use the auth settings$"):
        check_url(url)


def test_an_at_sign_outside_the_host_part_is_fine() -> None:
    assert check_url("https://example.com/a@b?c=@") == "https://example.com/a@b?c=@"


@pytest.mark.parametrize("url", ["https://a;b.example.com", "https://example.com;x/", "http://localhost;:8200"])
def test_semicolon_in_the_host_part(url: str) -> None:
    with pytest.raises(ValueError, match=r"^';' is not allowed in a URL's host part$"):
        check_url(url)


def test_a_semicolon_in_the_path_is_fine() -> None:
    assert check_url("https://example.com/a;b") == "https://example.com/a;b"


@pytest.mark.parametrize("url", [
    "https://example.com:99999",
    "https://example.com:65536/",
    "https://example.com:abc",
    "https://[v1.x]/",
])
def test_host_or_port_that_does_not_parse(url: str) -> None:
    with pytest.raises(ValueError, match=r"^the host or port part does not parse$"):
        check_url(url)


def test_the_highest_port_parses() -> None:
    assert check_url("https://example.com:65535") == "https://example.com:65535"


@pytest.mark.parametrize("url", [
    # urllib3 decodes %6d to "m" (it would connect to example.com); urllib.parse does not
    "https://exa%6dple.com/",
    # urllib3 IDNA-encodes the name (xn--bcher-kva.example); urllib.parse keeps it as written
    "https://bücher.example/",
])
def test_a_host_the_two_parsers_read_differently(url: str) -> None:
    with pytest.raises(ValueError, match=r"^the host part is read differently by different URL parsers"):
        check_url(url)


@pytest.mark.parametrize("url", [
    "http://example.com",
    "http://example.com:80/services/oauth2/token",
    "http://10.0.0.1:8200",
    "http://evil.localhost/",
    "http://[::2]/",
])
def test_plain_http_only_on_loopback(url: str) -> None:
    with pytest.raises(ValueError, match=r"^http:// is only allowed for loopback hosts \(localhost, "
                                         r"127\.0\.0\.0/8, ::1\); use https://"):
        check_url(url)


def test_the_https_suggestion_names_the_host_part() -> None:
    with pytest.raises(ValueError) as info:
        check_url("http://vault.example.com:8200/v1")
    assert str(info.value).endswith("use https://vault.example.com:8200")


def test_the_https_suggestion_is_cut_to_100_characters() -> None:
    host = "h" * 150 + ".example"
    with pytest.raises(ValueError) as info:
        check_url(f"http://{host}/")
    assert str(info.value).endswith(f"use https://{host[:100]}")


def test_https_is_not_held_to_the_loopback_rule() -> None:
    assert check_url("https://10.0.0.1:8200") == "https://10.0.0.1:8200"
