"""The one rule for every URL rotator talks to: https, or http only on loopback.

The check parses a URL twice, the way the HTTP client does (urllib3's parse_url, which
requests uses) and the way the standard library does, and refuses a URL the two read
differently: `http://evil.example\\.localhost/` is host `evil.example` to urllib3 but
`evil.example\\.localhost` to urllib.parse, and a check that reads the second while the client
connects to the first is no check at all. Backslashes, `;`, whitespace and control characters
are refused outright, and "loopback" means the name `localhost` or a loopback IP literal
(127.0.0.0/8, ::1) — never `*.localhost`, which a resolver may send anywhere.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

MAX_URL_CHARS = 2048
# Anything below 0x21 (controls, space), DEL, C1 controls, the backslash, and Unicode spaces.
_BAD_CHARS = re.compile(
    r"[\x00-\x20\x7f-\x9f\\\u00a0\u1680\u2000-\u200f\u2028\u2029\u202f\u205f\u3000\ufeff]"
)


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback IP literal (brackets allowed around IPv6)."""
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(url: str) -> str:
    """The host of a URL that passed check_url, lowercase, without IPv6 brackets."""
    host = (parse_url(url).host or "").lower()
    return host[1:-1] if host.startswith("[") else host


def check_url(url: str) -> str:
    """Return `url` without a trailing slash, or raise ValueError saying what to write instead.

    The message never repeats the URL in full (it may come from a hostile endpoint)."""
    if not isinstance(url, str) or not url:
        raise ValueError("expected a URL such as https://login.salesforce.com")
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"URL longer than {MAX_URL_CHARS} characters")
    if _BAD_CHARS.search(url):
        raise ValueError("URL contains whitespace, a control character or a backslash")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url[:100]!r} is not an http(s) URL")
    if "@" in parts.netloc:
        raise ValueError("credentials in a URL are not allowed; use the auth settings")
    if ";" in parts.netloc:
        raise ValueError("';' is not allowed in a URL's host part")
    try:
        client = parse_url(url)
        port = parts.port
    except (LocationParseError, ValueError):
        raise ValueError("the host or port part does not parse") from None
    client_host = (client.host or "").lower().strip("[]")
    if client_host != parts.hostname.lower() or client.port != port or client.scheme != parts.scheme:
        raise ValueError("the host part is read differently by different URL parsers; write it plainly")
    if parts.scheme == "http" and not is_loopback_host(client_host):
        raise ValueError(
            "http:// is only allowed for loopback hosts (localhost, 127.0.0.0/8, ::1); "
            f"use https://{parts.netloc[:100]}"
        )
    return url.rstrip("/")
