"""The one rule for every URL rotator talks to: https, or http only on loopback."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    """Return `url` without a trailing slash, or raise ValueError saying what to write instead."""
    if not isinstance(url, str) or not url:
        raise ValueError("expected a URL such as https://login.salesforce.com")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ValueError("credentials in a URL are not allowed; use the auth settings")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(
            f"http:// is only allowed for loopback hosts; use https://{parts.netloc}"
        )
    return url.rstrip("/")


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname
    return bool(host) and is_loopback_host(host or "")
