"""A tiny stand-in for the Kubernetes TokenReview API, so a real Vault runs Kubernetes auth.

Vault's (and OpenBao's) Kubernetes auth method validates a service-account JWT by POSTing a
``TokenReview`` to ``<kubernetes_host>/apis/authentication.k8s.io/v1/tokenreviews``. This
server answers that one call on loopback: a JWT registered with :meth:`TokenReviewServer.add`
is "authenticated" as the given service account, any other is not. Configure the auth mount
with :meth:`TokenReviewServer.vault_config` (``kubernetes_host=<server.url>``,
``disable_local_ca_jwt=true`` and a throwaway CA, which Vault insists on); the real server then
runs its real login code path (role binding checks, token issue)::

    with TokenReviewServer() as k8s:
        jwt = k8s.add(namespace="rotator", service_account="rotator")
        # vault write auth/kubernetes/config kubernetes_host=$URL disable_local_ca_jwt=true

Vault also parses the JWT itself (unverified) for its ``sub``/namespace claims when
``use_annotations_as_alias_metadata`` or audience checks are on, so :meth:`add` issues a
well-formed unsigned JWT naming the service account. ``reviews`` counts the calls.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time

from rotator.testing._http import EmulatorHandler, EmulatorServer

__all__ = ["TokenReviewServer", "service_account_jwt"]

REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


def _throwaway_ca() -> str:
    from cryptography.hazmat.primitives.asymmetric import ec

    from rotator.keys.crypto import cert_to_pem, self_signed_certificate

    key = ec.generate_private_key(ec.SECP256R1())
    return cert_to_pem(self_signed_certificate(key, common_name="tokenreview-ca", days=2))


def service_account_jwt(*, namespace: str, service_account: str) -> str:
    """A well-formed, unsigned-in-spirit service-account JWT (random signature bytes): Vault
    reads its claims before asking TokenReview, which alone decides whether it is valid."""
    claims = {"iss": "kubernetes/serviceaccount", "iat": int(time.time()),
              "sub": f"system:serviceaccount:{namespace}:{service_account}",
              "kubernetes.io/serviceaccount/namespace": namespace,
              "kubernetes.io/serviceaccount/service-account.name": service_account,
              "kubernetes.io/serviceaccount/service-account.uid": secrets.token_hex(8),
              "jti": secrets.token_hex(8)}
    return ".".join([_b64(b'{"alg":"RS256","typ":"JWT"}'), _b64(json.dumps(claims).encode()),
                     _b64(secrets.token_bytes(32))])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Handler(EmulatorHandler):
    server_version = "rotator-tokenreview"
    max_request_body = 1 << 20
    body_too_large_message = "request body too large"
    review: TokenReviewServer

    def _dispatch(self, body: bytes) -> None:
        if self.command != "POST" or self.path.split("?", 1)[0] != REVIEW_PATH:
            return self._reply(404, {"kind": "Status", "status": "Failure", "code": 404})
        try:
            request = json.loads(body)
            token = request["spec"]["token"]
        except (ValueError, KeyError, TypeError):
            return self._reply(400, {"kind": "Status", "status": "Failure", "code": 400})
        with self.review.lock:
            self.review.reviews += 1
            account = self.review.accounts.get(token) if isinstance(token, str) else None
        status: dict[str, object] = {"authenticated": False, "error": "invalid token"}
        if account is not None:
            namespace, name, uid = account
            status = {"authenticated": True, "user": {
                "username": f"system:serviceaccount:{namespace}:{name}", "uid": uid,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]}}
        self._reply(201, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                          "status": status})

    def _reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, status: int, message: str) -> None:
        self.send_error(status, message)
        self.close_connection = True


class TokenReviewServer:
    """Answers TokenReviews for the service-account JWTs registered with :meth:`add`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.accounts: dict[str, tuple[str, str, str]] = {}
        self.reviews = 0
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"review": self})
        self._server = EmulatorServer((host, 0), handler)
        self.url = self._server.base_url()
        self.ca_pem = _throwaway_ca()

    def vault_config(self) -> dict[str, object]:
        """The body for ``auth/<mount>/config`` that points Vault at this server."""
        # Vault insists on a CA when it may not read the pod's own; plain http ignores it.
        return {"kubernetes_host": self.url, "disable_local_ca_jwt": True,
                "kubernetes_ca_cert": self.ca_pem}

    def register(self, jwt: str, *, namespace: str, service_account: str) -> None:
        """Make an existing ``jwt`` review as ``namespace/service_account``. Vault checks the
        review's uid against the JWT's service-account uid claim, so it is taken from there."""
        try:
            payload = jwt.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            uid = str(claims["kubernetes.io/serviceaccount/service-account.uid"])
        except (IndexError, ValueError, KeyError, TypeError):
            uid = secrets.token_hex(8)
        with self.lock:
            self.accounts[jwt] = (namespace, service_account, uid)

    def add(self, *, namespace: str, service_account: str) -> str:
        """A new JWT for ``namespace/service_account`` that reviews as authenticated."""
        jwt = service_account_jwt(namespace=namespace, service_account=service_account)
        self.register(jwt, namespace=namespace, service_account=service_account)
        return jwt

    def start(self) -> TokenReviewServer:
        self._server.serve_in_thread("tokenreview")
        return self

    def stop(self) -> None:
        self._server.stop_serving()

    def __enter__(self) -> TokenReviewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
