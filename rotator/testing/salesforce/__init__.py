"""A Salesforce-compatible org on loopback, for tests: OAuth JWT bearer, REST, Metadata CRUD.

A real HTTP/1.1 server (keep-alive, one thread per connection) that checks assertions the
way Salesforce does (the same check order, the same ``{"error", "error_description"}``
strings, the 3-minute ``exp`` grace, one certificate per app, the login rate limit, idle
session expiry, revocation), serves what a real client does right after login (versions,
resource map, a SOQL subset over a small org, describe, limits, identity), serves the
Metadata API's ``readMetadata``/``updateMetadata`` for an app's certificate — plus
injectable faults (5xx, 429, HTML pages, resets, slow or malformed replies). What it serves
and its switches: docs/testing-emulators.md.

Use it in your own tests::

    import time, jwt, requests
    from rotator.testing.salesforce import SalesforceEndpoint

    def test_my_client(rsa_key, certificate_pem):
        with SalesforceEndpoint() as sf:                      # serves on 127.0.0.1:<free port>
            sf.register_app("CONSUMER_KEY", certificate_pem, users=["bot@example.com"])
            assertion = jwt.encode(
                {"iss": "CONSUMER_KEY", "sub": "bot@example.com",
                 "aud": "https://login.salesforce.com", "exp": int(time.time()) + 180},
                rsa_key, algorithm="RS256")
            reply = requests.post(sf.token_url, data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion})
            token = reply.json()["access_token"]
            assert sf.is_valid(token)
            sf.set_fault("5xx", count=1)                      # the next token request gets a 503
            assert sf.token_requests == 1

Post assertions to ``sf.token_url`` (``sf.url + "/services/oauth2/token"``); ``aud`` may be
``https://login.salesforce.com``, ``https://test.salesforce.com`` or ``sf.url`` (each also
with a trailing slash) unless you pass ``audiences``. Pass ``clock=`` (a callable returning
epoch seconds) to move time in tests: it drives ``exp`` checks, session expiry, the
rate-limit window and ``issued_at``.

``SalesforceEndpoint(tls=True)`` serves https with a throwaway CA whose certificate is at
``sf.ca_bundle`` (give it to ``requests`` as ``verify=``); clients that hard-code https, like
simple-salesforce, need that::

    s = requests.Session()
    s.verify = sf.ca_bundle
    s.trust_env = False  # otherwise REQUESTS_CA_BUNDLE, if set, overrides s.verify
    Salesforce(instance_url=sf.url, session_id=token, session=s).query("SELECT Id FROM User")

From a shell: ``python -m rotator.testing.salesforce --port 8080 --client-id ID --cert app.crt
--user bot@example.com`` serves until Ctrl-C and prints its URL.

Only the standard library and cryptography are used (clients usually sign with PyJWT).
"""

from rotator.testing.salesforce._cli import main
from rotator.testing.salesforce._endpoint import (
    API_VERSION,
    DEFAULT_AUDIENCES,
    FAULT_KINDS,
    FAULT_TARGETS,
    JWT_BEARER_GRANT,
    MetadataCall,
    SalesforceEndpoint,
    TokenAttempt,
)
from rotator.testing.salesforce._metadata import (
    CUSTOMIZE_APPLICATION,
    MANAGE_CONNECTED_APPS,
    MODIFY_ALL_DATA,
    MODIFY_METADATA,
)
from rotator.testing.salesforce._rest import VERSIONS

__all__ = [
    "API_VERSION",
    "CUSTOMIZE_APPLICATION",
    "DEFAULT_AUDIENCES",
    "FAULT_KINDS",
    "FAULT_TARGETS",
    "JWT_BEARER_GRANT",
    "MANAGE_CONNECTED_APPS",
    "MODIFY_ALL_DATA",
    "MODIFY_METADATA",
    "VERSIONS",
    "MetadataCall",
    "SalesforceEndpoint",
    "TokenAttempt",
    "main",
]
