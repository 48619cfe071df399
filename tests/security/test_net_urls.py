"""Issue 15, item 3: the https-or-loopback rule cannot be bypassed by parser differences.

Each bypass below passed `check_url` on a0100b0 while requests/urllib3 would have connected
to another host (or to one a resolver picks) over plain http.
"""

from __future__ import annotations

import pytest

from rotator.config import ConfigError, parse_config
from rotator.urls import check_url

BYPASSES = [
    # urllib3 reads host "evil.example"; urllib.parse read "evil.example\.localhost"
    "http://evil.example\\.localhost/services/oauth2/token",
    "http://evil.example\\.localhost:8200",
    # ';' in the authority
    "http://evil.example;.localhost/",
    "http://evil.example;@localhost/",
    # *.localhost names may resolve through DNS
    "http://evil.localhost/",
    "http://a.b.localhost:9000/x",
    "http://localhost./",
    # whitespace and control characters
    "http://local host/",
    "http://localhost\t/",
    "http://127.0.0.1\r\nHost: evil.example/",
    "http://127.0.0.1\x00.evil.example/",
    "http://localhost\u00a0/",
    # parsers disagreeing about '@' / '#'
    "http://evil.example\\@localhost/",
    "http://evil.example#@localhost/",
    # not a loopback literal
    "http://127.0.0.1.nip.io/",
    "http://0x7f.0.0.1/",
    "http://[::ffff:7f00:1]/",
]


@pytest.mark.parametrize("url", BYPASSES)
def test_bypass_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_url(url)


@pytest.mark.parametrize("url", BYPASSES[:6])
def test_bypass_is_refused_in_the_config(url: str, tmp_path) -> None:
    raw = {
        "stores": {"v": {"type": "vault", "url": url}},
    }
    with pytest.raises(ConfigError, match=r"^stores\.v\.url: "):
        parse_config(raw, base_dir=tmp_path)


@pytest.mark.parametrize("url", [
    "http://localhost:8200",
    "http://LOCALHOST:8200/",
    "http://127.0.0.1:9000/x",
    "http://127.9.8.7/",
    "http://[::1]:8200",
    "https://login.salesforce.com",
    "https://vault.example.com:8200/",
    "https://[2001:db8::1]/",
])
def test_plain_urls_still_pass(url: str) -> None:
    assert check_url(url) == url.rstrip("/")


def test_refusal_message_is_short_and_plain() -> None:
    huge = "http://" + "a" * 5000 + ".example/"
    with pytest.raises(ValueError) as info:
        check_url(huge)
    assert len(str(info.value)) < 200


def test_is_loopback_url_is_gone() -> None:
    """The unused second loopback helper (with the old, looser rule) does not come back."""
    import rotator.urls

    assert not hasattr(rotator.urls, "is_loopback_url")
