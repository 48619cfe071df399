"""Which hosts a token endpoint may point consumers at (`instance_url`, `id`).

Every consumer sends its bearer token to the stored `instance_url`, so a compromised or
misdirected endpoint that names another host would collect every token. For Salesforce the
host must be a Salesforce domain (below) or one the operator lists in `instance_hosts`; the
`id` (identity) URL gets the same test plus the path Salesforce gives it (/id/ORG/USER).

Loopback (the emulator, a local proxy) is accepted without listing only when the token endpoint
itself is on loopback: then nothing remote takes part in the exchange. A remote endpoint that
answers with a loopback `instance_url` is refused unless the operator listed the host.
"""

from __future__ import annotations

import functools
from typing import Any

from rotator import urls
from rotator.errors import EndpointProtocolError
from rotator.sanitize import sanitize_remote

# Every token reply is checked (instance_url, id) with the same few values: the checks are pure,
# so this path memoises them, bounded because a hostile endpoint chooses the values (string
# arguments only: check_returned_url refuses anything else first). Memoised here rather than
# in rotator.urls, whose functions stay plain: mutmut does not mutate decorated functions.
check_url = functools.lru_cache(maxsize=256)(urls.check_url)
url_host = functools.lru_cache(maxsize=256)(urls.url_host)
is_loopback_host = functools.lru_cache(maxsize=256)(urls.is_loopback_host)

# Salesforce's own domains (help.salesforce.com: "Allow the Required Domains"); an org on a
# custom domain or behind a proxy lists its host in instance_hosts.
SALESFORCE_DOMAINS = (
    "salesforce.com",
    "force.com",
    "salesforce.mil",
    "cloudforce.com",
    "sfcrmproducts.cn",
    "salesforce-setup.com",
    "site.com",
    "my.salesforce-sites.com",
)


def host_listed(host: str, allowed: tuple[str, ...]) -> bool:
    """`host` equals an entry, or is under a `*.domain` entry."""
    for entry in allowed:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def is_salesforce_host(host: str) -> bool:
    return any(host.endswith("." + domain) for domain in SALESFORCE_DOMAINS)


def check_returned_url(
    token_url: str,
    field: str,
    value: Any,
    *,
    allowed: tuple[str, ...],
    salesforce: bool,
    path_prefix: str | None = None,
) -> str:
    """`value` as a URL consumers may use, or EndpointProtocolError naming the (capped) host."""
    if not isinstance(value, str):
        raise EndpointProtocolError(token_url, f"{field} is not a string")
    try:
        url = check_url(value)
    except ValueError as exc:
        raise EndpointProtocolError(token_url, f"{field} refused: {exc}") from None
    host = url_host(url)
    shown = sanitize_remote(host)
    if host_listed(host, allowed):
        pass
    elif allowed and not salesforce:
        raise EndpointProtocolError(token_url, f"{field} refused: {shown} is not in instance_hosts")
    elif not salesforce:
        pass  # generic servers: the https-or-loopback rule alone, as for every configured URL
    elif is_loopback_host(host):
        if not is_loopback_host(url_host(token_url)):
            raise EndpointProtocolError(
                token_url, f"{field} refused: loopback host {shown} from a remote endpoint",
                hint="list the host in the credential's instance_hosts if this is intended",
            )
    elif not url.startswith("https://") or not is_salesforce_host(host):
        raise EndpointProtocolError(
            token_url, f"{field} refused: {shown} is not a Salesforce domain",
            hint="an org on a custom domain lists it in the credential's instance_hosts",
        )
    if path_prefix is not None:
        path = url.split("://", 1)[1].partition("/")[2]
        if not ("/" + path).startswith(path_prefix):
            raise EndpointProtocolError(
                token_url, f"{field} refused: path is not {path_prefix}... on {shown}"
            )
    return url
