"""`python -m rotator.testing.salesforce`: serve an emulated org until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rotator.testing.salesforce._endpoint import SalesforceEndpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rotator.testing.salesforce",
        description="Serve an emulated Salesforce org (OAuth, REST, Metadata API) until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--client-id", help="consumer key of the connected app")
    parser.add_argument("--cert", type=Path, help="PEM certificate uploaded to the app")
    parser.add_argument(
        "--user", action="append", default=[], help="pre-authorized username (repeatable)"
    )
    parser.add_argument(
        "--audience", action="append", help="accepted aud (repeatable; default login/test/self)"
    )
    parser.add_argument("--app-name", help="the app's API name in the Metadata API")
    parser.add_argument("--kind", choices=["connected-app", "external-client-app"], default="connected-app")
    parser.add_argument("--jwt-access-tokens", action="store_true", help="issue JWT-based access tokens")
    parser.add_argument(
        "--grant", action="append", default=[], metavar="PERMISSION",
        help="user permission for every --user, e.g. ModifyMetadata (repeatable)",
    )
    parser.add_argument(
        "--session-timeout", "--session-lifetime", dest="session_timeout", type=float, default=7200.0,
        help="seconds a session lives after its last use",
    )
    parser.add_argument("--login-rate-limit", type=int, default=3600)
    parser.add_argument(
        "--reuse-sessions", "--reuse-tokens", dest="reuse_sessions", action="store_true",
        help="a new login returns the token of the user's still active session",
    )
    parser.add_argument("--tls", action="store_true", help="serve https with a throwaway CA")
    args = parser.parse_args(argv)
    if (args.cert or args.user) and not args.client_id:
        parser.error("--cert and --user need --client-id")
    endpoint = SalesforceEndpoint(
        host=args.host,
        port=args.port,
        login_rate_limit=args.login_rate_limit,
        session_timeout=args.session_timeout,
        audiences=args.audience,
        reuse_sessions=args.reuse_sessions,
        tls=args.tls,
    )
    if args.client_id:
        certificate = args.cert.read_bytes() if args.cert else None
        endpoint.register_app(args.client_id, certificate, users=args.user, name=args.app_name,
                              kind=args.kind, jwt_access_tokens=args.jwt_access_tokens)
        try:
            for user in args.user:
                endpoint.grant_permissions(user, *args.grant)
        except ValueError as problem:
            parser.error(f"--grant: {problem}")
    endpoint.start()
    # Ctrl-C may come as soon as the URL is out (a script that got its answer): the handler
    # must already be in place when it is printed, or the interrupt escapes as a traceback.
    try:
        print(endpoint.url, flush=True)
        if endpoint.ca_bundle:
            print(f"CA bundle: {endpoint.ca_bundle}", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        endpoint.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
