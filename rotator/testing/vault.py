"""A HashiCorp Vault emulator (KV v2 + token, AppRole and Kubernetes auth) on loopback, for tests.

No Vault binary can be installed where rotator is developed, so this module serves Vault's
HTTP API from a real HTTP/1.1 server (keep-alive, one thread per connection) that hvac, or any
other Vault client, talks to over a socket. Response bodies, status codes and error strings are
Vault's own, so code tested here behaves the same against ``vault server -dev``.

Use it in your own tests::

    import hvac, pytest
    from rotator.testing.vault import VaultEmulator

    @pytest.fixture
    def vault():
        with VaultEmulator() as emulator:            # serves on 127.0.0.1:<free port>
            yield emulator

    def test_my_store(vault):
        vault.kv_put("secret", "app/db", {"password": "old"})          # seed, bypasses auth
        vault.add_policy("app", {"secret/data/app/*": ["create", "read", "update"]})
        role_id, secret_id = vault.add_approle("rotator", policies=["app"])

        client = hvac.Client(url=vault.url)
        client.auth.approle.login(role_id, secret_id)
        client.secrets.kv.v2.create_or_update_secret("app/db", secret={"password": "new"}, cas=1)
        assert vault.kv_get("secret", "app/db") == {"password": "new"}

        vault.set_fault("5xx", count=1, path_prefix="/v1/secret/data/")  # next KV call gets a 500
        assert ("POST", "/v1/secret/data/app/db") in vault.requests

``vault.url`` is the address (give it to ``hvac.Client(url=...)``), ``vault.root_token`` a
token that bypasses every policy. The root token is a fixed, well-known test value
(``root-token-for-tests`` unless you pass ``root_token=``): this is a test tool, never a place
for real secrets.

What is emulated (paths under ``/v1/``):

* ``sys/health`` (GET and HEAD, no token, answers while sealed; honours ``activecode`` and
  ``sealedcode``) and ``sys/seal-status`` (no token, answers while sealed, as in Vault).
* Auth: ``auth/<mount>/login`` for AppRole (``{"role_id","secret_id"}``) and Kubernetes
  (``{"role","jwt"}``) mounts created by :meth:`VaultEmulator.add_approle` and
  :meth:`VaultEmulator.add_kubernetes_role`; ``auth/token/lookup-self``, ``renew-self``,
  ``revoke-self``, ``create``, ``create-orphan``, ``lookup``, ``renew`` and ``revoke``.
* KV v2 on every mount in ``kv_mounts``: ``data/`` (read, ``?version=N``, write with
  ``options.cas``, soft delete, JSON merge ``PATCH``), ``metadata/`` (read, write, ``PATCH``,
  delete, ``LIST`` or ``GET ?list=true``), ``delete/``, ``undelete/``, ``destroy/`` and
  ``config``. Versions beyond ``max_versions`` (per path via metadata, else the mount's
  ``config``, else 10) are dropped oldest first, exactly as Vault's sliding window does;
  ``delete_version_after`` is honoured. Like Vault, metadata reports ``max_versions: 0`` for a
  path that has no override of its own.

Behaviour worth knowing:

* Every other request needs ``X-Vault-Token`` (or ``Authorization: Bearer``). A missing,
  unknown, revoked or expired token gets 403 ``{"errors":["permission denied"]}``; a request a
  policy does not allow gets 403 with Vault's multierror text
  ``"1 error occurred:\\n\\t* permission denied\\n\\n"``; an unknown path gets 404
  ``no handler for route "...". route entry not found.``.
* Policies (:meth:`VaultEmulator.add_policy`) use Vault's path syntax and priority rules: an
  exact path, a trailing ``*`` prefix glob, ``+`` for one segment; ``deny`` wins. KV v2 is
  checked on ``<mount>/data/<path>`` / ``<mount>/metadata/<path>`` and a write needs ``create``
  when the path has no metadata yet and ``update`` when it has. Every token also gets Vault's
  ``default`` policy (lookup/renew/revoke of itself), which you may replace with
  ``add_policy("default", ...)``. Token policies are reported sorted, as Vault does.
* Time comes from ``clock`` (a callable returning epoch seconds, default ``time.time``): pass
  your own to expire or age tokens without sleeping. It drives token TTLs, ``created_time``,
  ``deletion_time`` and ``delete_version_after``. Timestamps are RFC 3339 with nanoseconds,
  UTC, the way Vault formats them. Renewals follow Vault's ``CalculateTTL``: ``increment``
  (seconds or ``"1h"``) or else the token's original TTL, capped at the max TTL counted from
  the token's creation, with Vault's ``TTL of "1h" exceeded the effective max_ttl of
  "10m"; TTL value is capped accordingly`` warning.
* ``X-Vault-Namespace`` is accepted and recorded in ``namespaces_seen``; KV data is kept
  separate per namespace (the helpers take ``namespace=``) and policies see such paths as
  ``<namespace>/<mount>/...``, as a root-namespace token does in Vault Enterprise. Tokens,
  policies and auth roles are global (all live in the root namespace).
* :meth:`VaultEmulator.seal` makes every request except ``sys/health`` and
  ``sys/seal-status`` answer 503 ``{"errors":["Vault is sealed"]}``.
* Faults for retry tests (:meth:`VaultEmulator.set_fault`): ``"5xx"``, ``"429"``, ``"slow"``
  and ``"reset"`` (TCP RST, no reply), for ``count`` requests or until
  :meth:`VaultEmulator.clear_faults`, optionally only on paths starting with ``path_prefix``.
* ``requests`` lists ``(method, path)`` of every request received (no query string; the method
  as sent, so hvac's ``list_secrets`` shows ``LIST``), ``issued`` every client token and
  AppRole secret ID minted (for leak checks); :meth:`kv_put`, :meth:`kv_get` and
  :meth:`kv_versions` seed and inspect KV data directly, bypassing auth.
* Replies carry ``Content-Type: application/json`` and ``Content-Length`` (a 204 carries
  neither, as HTTP requires and Vault does); the handler disables Nagle and buffers each reply
  so it leaves in one segment (no 40 ms Nagle/delayed-ACK stall per request on keep-alive).

Not emulated: other auth methods and secrets engines, ``sys/policies`` (HCL), response
wrapping, batch tokens, periodic tokens, token use counts and child-token revocation.

From a shell: ``python -m rotator.testing.vault --port 8200`` serves until Ctrl-C and prints
``VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=root-token-for-tests`` on one line.

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import copy
import hmac
import json
import math
import re
import secrets
import string
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rotator.testing._http import EmulatorHandler, EmulatorServer

__all__ = ["DEFAULT_ROOT_TOKEN", "VERSION", "VaultEmulator"]

VERSION = "1.17.0-emulator"
DEFAULT_ROOT_TOKEN = "root-token-for-tests"  # a fixed, public test value; never a real secret

_SYSTEM_DEFAULT_TTL = 32 * 24 * 3600  # Vault's default_lease_ttl / max_lease_ttl: 768h
_SYSTEM_MAX_TTL = 32 * 24 * 3600
_DEFAULT_MAX_VERSIONS = 10
_MAX_REQUEST_BODY = 32 * 1024 * 1024  # Vault's default max_request_size
_CAPABILITIES = frozenset(
    {"create", "read", "update", "delete", "list", "patch", "sudo", "deny"}
)
_PERMISSION_DENIED = "permission denied"  # bad/missing/expired token
_POLICY_DENIED = "1 error occurred:\n\t* permission denied\n\n"  # an ACL said no
_FAULT_KINDS = frozenset({"5xx", "429", "slow", "reset"})
# Vault's built-in `default` policy, reduced to what the emulator serves.
_DEFAULT_POLICY: dict[str, frozenset[str]] = {
    "auth/token/lookup-self": frozenset({"read"}),
    "auth/token/renew-self": frozenset({"update"}),
    "auth/token/revoke-self": frozenset({"update"}),
    "sys/capabilities-self": frozenset({"update"}),
}
_BASE62 = string.ascii_letters + string.digits


class _HTTPError(Exception):
    def __init__(self, status: int, errors: list[str] | None = None) -> None:
        super().__init__(status, errors)
        self.status = status
        self.errors = errors if errors is not None else []


def _bad(message: str) -> _HTTPError:
    return _HTTPError(400, [message])


def _denied() -> _HTTPError:
    return _HTTPError(403, [_POLICY_DENIED])


def _no_route(rel: str) -> _HTTPError:
    return _HTTPError(404, [f'no handler for route "{rel}". route entry not found.'])


def _unsupported() -> _HTTPError:
    return _HTTPError(405, ["1 error occurred:\n\t* unsupported operation\n\n"])


# ---------------------------------------------------------------------------- state


@dataclass
class _Token:
    id: str
    accessor: str
    policies: tuple[str, ...]
    created: float
    ttl: float  # creation TTL (the backend TTL used when renewing without an increment)
    max_ttl: float  # backend max TTL (role token_max_ttl), 0 = system max
    explicit_max_ttl: float
    expires: float | None  # None: never (root)
    renewable: bool
    path: str
    display_name: str
    meta: dict[str, str] | None
    orphan: bool
    entity_id: str = ""
    last_renewal: float | None = None

    @property
    def is_root(self) -> bool:
        return "root" in self.policies


@dataclass
class _AppRole:
    name: str
    role_id: str
    secret_ids: set[str]
    policies: tuple[str, ...]
    token_ttl: float
    token_max_ttl: float


@dataclass
class _K8sRole:
    name: str
    jwt: str
    policies: tuple[str, ...]
    token_ttl: float
    token_max_ttl: float


@dataclass
class _Version:
    created: float
    data: dict[str, Any] | None
    deletion_time: float | None = None
    destroyed: bool = False


@dataclass
class _KeyMeta:
    created: float | None = None
    updated: float | None = None
    current_version: int = 0
    oldest_version: int = 0
    max_versions: int = 0
    cas_required: bool = False
    delete_version_after: float = 0
    custom_metadata: dict[str, str] | None = None
    versions: dict[int, _Version] = field(default_factory=dict)


@dataclass
class _KvConfig:
    max_versions: int = 0
    cas_required: bool = False
    delete_version_after: float = 0


@dataclass
class _KvStore:
    config: _KvConfig = field(default_factory=_KvConfig)
    keys: dict[str, _KeyMeta] = field(default_factory=dict)


@dataclass
class _Fault:
    kind: str
    remaining: int | None
    path_prefix: str
    status: int
    delay: float


@dataclass
class _Ctx:
    token: _Token
    namespace: str
    rules: dict[str, frozenset[str]]
    now: float


# ---------------------------------------------------------------------------- the emulator


class VaultEmulator:
    """Vault's HTTP API (KV v2, token/AppRole/Kubernetes auth) on ``127.0.0.1:<port>``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        root_token: str = DEFAULT_ROOT_TOKEN,
        clock: Callable[[], float] = time.time,
        kv_mounts: Iterable[str] = ("secret",),
    ) -> None:
        self.host = host
        self.port = port
        self.root_token = root_token
        self.url = ""
        self.requests: list[tuple[str, str]] = []
        self.namespaces_seen: set[str] = set()
        self.issued: list[str] = []
        self._clock = clock
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._sealed = False
        self._cluster_id = str(uuid.uuid4())
        mounts = [m.strip("/") for m in kv_mounts]
        if not mounts or any(not m for m in mounts):
            raise ValueError("kv_mounts must name at least one non-empty mount path")
        self._kv_mounts = tuple(sorted(set(mounts), key=len, reverse=True))  # longest first
        self._kv: dict[tuple[str, str], _KvStore] = {}
        self._policies: dict[str, dict[str, frozenset[str]]] = {"default": dict(_DEFAULT_POLICY)}
        self._tokens: dict[str, _Token] = {}
        self._auth_mounts: dict[str, str] = {}  # mount -> "approle" | "kubernetes"
        self._approles: dict[str, dict[str, _AppRole]] = {}
        self._k8s_roles: dict[str, dict[str, _K8sRole]] = {}
        self._faults: list[_Fault] = []
        now = clock()
        self._tokens[root_token] = _Token(
            id=root_token, accessor=_random_id(24), policies=("root",), created=now, ttl=0,
            max_ttl=0, explicit_max_ttl=0, expires=None, renewable=False,
            path="auth/token/root", display_name="root", meta=None, orphan=True,
        )

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> VaultEmulator:
        """Bind and serve in a daemon thread; ``url`` is set when this returns."""
        if self._server is not None:
            raise RuntimeError("the Vault emulator is already running")
        self._stopping.clear()
        server = _Server((self.host, self.port), self)
        self.port = server.server_address[1]
        self.url = server.base_url()
        self._server = server
        self._thread = server.serve_in_thread(f"vault-emulator-{self.port}")
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes "slow" faults
        server.stop_serving()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> VaultEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------ policies and auth

    def add_policy(self, name: str, rules: Mapping[str, Sequence[str]]) -> None:
        """Define (or replace) ACL policy ``name``: ``{path glob: [capabilities]}``."""
        if name == "root":
            raise ValueError('"root" is a built-in policy and cannot be changed')
        parsed: dict[str, frozenset[str]] = {}
        for path, caps in rules.items():
            if isinstance(caps, str):
                raise TypeError(f"capabilities for {path!r} must be a list, not a string")
            unknown = set(caps) - _CAPABILITIES
            if unknown:
                raise ValueError(f"unknown capabilities for {path!r}: {sorted(unknown)}")
            key = path.lstrip("/")
            if "*" in key[:-1]:
                raise ValueError(f"{path!r}: '*' is only allowed at the end of a path")
            parsed[key] = frozenset(caps)
        with self._lock:
            self._policies[name] = parsed

    def create_token(
        self,
        *,
        policies: Sequence[str] = ("default",),
        ttl: float = 3600,
        renewable: bool = True,
        max_ttl: float = 86400,
        token: str | None = None,
    ) -> str:
        """A service token (``hvs.``-prefixed unless ``token`` is given); ``max_ttl`` is explicit.

        ``ttl`` <= 0 means Vault's default (768h). Like Vault, ``default`` is always added.
        """
        with self._lock:
            if token is not None and token in self._tokens:
                raise ValueError("a token with that ID already exists")
            entry = self._issue_token(
                policies, ttl=ttl, max_ttl=0, explicit_max_ttl=max_ttl, renewable=renewable,
                token_id=token, path="auth/token/create", display_name="token", meta=None,
                orphan=False,
            )
            return entry.id

    def add_approle(
        self,
        role_name: str,
        *,
        policies: Sequence[str],
        token_ttl: float = 3600,
        token_max_ttl: float = 86400,
        mount: str = "approle",
    ) -> tuple[str, str]:
        """Create or update an AppRole role; returns ``(role_id, new secret_id)``.

        Calling it again for the same role keeps the role ID and adds another valid secret ID.
        """
        mount = mount.strip("/")
        with self._lock:
            self._claim_auth_mount(mount, "approle")
            roles = self._approles.setdefault(mount, {})
            role = roles.get(role_name)
            secret_id = str(uuid.uuid4())
            if role is None:
                role = _AppRole(role_name, str(uuid.uuid4()), set(), (), 0, 0)
                roles[role_name] = role
            role.policies = tuple(policies)
            role.token_ttl = token_ttl
            role.token_max_ttl = token_max_ttl
            role.secret_ids.add(secret_id)
            self.issued.append(secret_id)
            return role.role_id, secret_id

    def add_kubernetes_role(
        self,
        role: str,
        *,
        jwt: str,
        policies: Sequence[str],
        token_ttl: float = 3600,
        token_max_ttl: float = 86400,
        mount: str = "kubernetes",
    ) -> None:
        """Create or replace a Kubernetes auth role; login succeeds only with exactly ``jwt``."""
        mount = mount.strip("/")
        with self._lock:
            self._claim_auth_mount(mount, "kubernetes")
            self._k8s_roles.setdefault(mount, {})[role] = _K8sRole(
                role, jwt, tuple(policies), token_ttl, token_max_ttl
            )

    def revoke_token(self, token: str) -> None:
        """Revoke a token (unknown tokens are ignored)."""
        with self._lock:
            self._tokens.pop(token, None)

    def seal(self) -> None:
        with self._lock:
            self._sealed = True

    def unseal(self) -> None:
        with self._lock:
            self._sealed = False

    # ------------------------------------------------------------------------ faults

    def set_fault(
        self,
        kind: str,
        *,
        count: int | None = None,
        path_prefix: str = "",
        status: int = 500,
        delay: float = 5.0,
    ) -> None:
        """Inject a fault into the next ``count`` matching requests (``None``: until cleared).

        ``"5xx"``: answer ``status`` with ``{"errors":["internal error"]}``; ``"429"``: Vault's
        rate-limit quota error; ``"slow"``: wait ``delay`` seconds, then answer normally;
        ``"reset"``: read the request, then abort the connection (RST, no reply). Only
        request paths starting with ``path_prefix`` (e.g. ``"/v1/secret/data/"``) match; the
        first matching fault, in the order set, applies.
        """
        if kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {sorted(_FAULT_KINDS)}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None for 'until clear_faults()')")
        if kind == "5xx" and not 500 <= status <= 599:
            raise ValueError("status must be a 5xx code")
        with self._lock:
            self._faults.append(_Fault(kind, count, path_prefix, status, delay))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # ------------------------------------------------------------------------ direct KV access

    def kv_put(
        self,
        mount: str,
        path: str,
        data: dict[str, Any],
        *,
        custom_metadata: dict[str, str] | None = None,
        namespace: str = "",
    ) -> int:
        """Write a new version directly (no auth, no CAS); returns its version number."""
        with self._lock:
            store = self._store(namespace, mount)
            key = path.strip("/")
            if not key:
                raise ValueError("path must not be empty")
            meta = store.keys.get(key)
            if meta is None:
                meta = store.keys[key] = _KeyMeta()
            if custom_metadata is not None:
                meta.custom_metadata = _custom_metadata(custom_metadata, patch=False)
            return self._add_version(store, meta, _json_copy(data), self._clock())

    def kv_get(
        self, mount: str, path: str, version: int | None = None, *, namespace: str = ""
    ) -> dict[str, Any] | None:
        """The data of ``version`` (default: the latest); None if missing, deleted or destroyed."""
        with self._lock:
            meta = self._store(namespace, mount).keys.get(path.strip("/"))
            if meta is None:
                return None
            entry = meta.versions.get(version or meta.current_version)
            if entry is None or entry.destroyed or _is_deleted(entry, self._clock()):
                return None
            return _json_copy(entry.data)

    def kv_versions(self, mount: str, path: str, *, namespace: str = "") -> dict[int, dict]:
        """Every version still kept (deleted ones included, destroyed ones not): ``{n: data}``."""
        with self._lock:
            meta = self._store(namespace, mount).keys.get(path.strip("/"))
            if meta is None:
                return {}
            return {
                number: _json_copy(entry.data)
                for number, entry in sorted(meta.versions.items())
                if entry.data is not None
            }

    # ------------------------------------------------------------------------ internals: state

    def _claim_auth_mount(self, mount: str, kind: str) -> None:
        if not mount or mount == "token":
            raise ValueError(f"{mount!r} cannot be used as an auth mount")
        existing = self._auth_mounts.setdefault(mount, kind)
        if existing != kind:
            raise ValueError(f"auth mount {mount!r} is already a {existing} mount")

    def _store(self, namespace: str, mount: str) -> _KvStore:
        mount = mount.strip("/")
        if mount not in self._kv_mounts:
            raise ValueError(f"{mount!r} is not a KV v2 mount of this emulator ({self._kv_mounts})")
        key = (namespace.strip("/"), mount)
        store = self._kv.get(key)
        if store is None:
            store = self._kv[key] = _KvStore()
        return store

    def _issue_token(
        self,
        policies: Iterable[str],
        *,
        ttl: float,
        max_ttl: float,
        explicit_max_ttl: float,
        renewable: bool,
        token_id: str | None,
        path: str,
        display_name: str,
        meta: dict[str, str] | None,
        orphan: bool,
        no_default_policy: bool = False,
    ) -> _Token:
        wanted = {p for p in policies if p}
        if "root" in wanted:
            names: tuple[str, ...] = ("root",)
        else:
            if not no_default_policy:
                wanted.add("default")
            names = tuple(sorted(wanted))
        now = self._clock()
        effective_ttl = ttl if ttl > 0 else _SYSTEM_DEFAULT_TTL
        cap = _effective_max(max_ttl, explicit_max_ttl)
        effective_ttl = min(effective_ttl, cap)
        entry = _Token(
            id=token_id or "hvs." + _random_id(24),
            accessor=_random_id(24),
            policies=names,
            created=now,
            ttl=effective_ttl,
            max_ttl=max_ttl,
            explicit_max_ttl=explicit_max_ttl,
            expires=now + effective_ttl,
            renewable=renewable,
            path=path,
            display_name=display_name,
            meta=meta,
            orphan=orphan,
            entity_id=str(uuid.uuid4()) if path != "auth/token/create" else "",
        )
        self._tokens[entry.id] = entry
        self.issued.append(entry.id)
        return entry

    def _live_token(self, token_id: str | None, now: float) -> _Token | None:
        if not token_id:
            return None
        entry = self._tokens.get(token_id)
        if entry is None:
            return None
        if entry.expires is not None and now >= entry.expires:
            del self._tokens[token_id]  # Vault's expiration manager revokes it
            return None
        return entry

    def _rules_for(self, entry: _Token) -> dict[str, frozenset[str]]:
        merged: dict[str, frozenset[str]] = {}
        for name in entry.policies:
            for path, caps in self._policies.get(name, {}).items():
                both = merged.get(path, frozenset()) | caps
                merged[path] = frozenset({"deny"}) if "deny" in both else both
        return merged

    def _check(self, ctx: _Ctx, path: str, capability: str, *, is_list: bool = False) -> None:
        if ctx.token.is_root:
            return
        caps = _acl_capabilities(ctx.rules, path, is_list=is_list)
        if caps is None or "deny" in caps or capability not in caps:
            raise _denied()

    def _add_version(
        self, store: _KvStore, meta: _KeyMeta, data: dict[str, Any], now: float
    ) -> int:
        """Vault's KeyMetadata.AddVersion: append, then slide the max_versions window."""
        after = meta.delete_version_after or store.config.delete_version_after
        deletion = now + after if after > 0 else None
        meta.current_version += 1
        meta.versions[meta.current_version] = _Version(now, data, deletion)
        meta.updated = now
        if meta.created is None:
            meta.created = now
        keep = max(meta.max_versions, store.config.max_versions) or _DEFAULT_MAX_VERSIONS
        if meta.current_version - meta.oldest_version >= keep:
            drop_through = meta.current_version - keep
            for number in range(meta.oldest_version, drop_through + 1):
                meta.versions.pop(number, None)
            meta.oldest_version = drop_through + 1
        return meta.current_version

    # ------------------------------------------------------------------------ internals: HTTP

    def _record(self, method: str, path: str, namespace: str) -> _Fault | None:
        """Log the request and take the first matching fault (consuming one of its count)."""
        with self._lock:
            self.requests.append((method, path))
            if namespace:
                self.namespaces_seen.add(namespace)
            for fault in self._faults:
                if path.startswith(fault.path_prefix):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
            return None

    def _handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes,
        namespace: str,
    ) -> tuple[int, dict[str, Any] | None]:
        try:
            return self._route(method, path, query, headers, body, namespace)
        except _HTTPError as error:
            return error.status, {"errors": error.errors}

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes,
        namespace: str,
    ) -> tuple[int, dict[str, Any] | None]:
        if not path.startswith("/v1/"):
            raise _HTTPError(404)
        rel = path[len("/v1/"):]
        op = method
        if op == "GET" and _first(query, "list") in ("true", "1"):
            op = "LIST"
        if op == "LIST" and not rel.endswith("/"):
            rel += "/"  # Vault's HTTP layer does this for every list request
        with self._lock:
            now = self._clock()
            if rel == "sys/health":
                return self._health(op, query, now)
            if rel == "sys/seal-status":
                return 200, self._seal_status()
            if self._sealed:
                raise _HTTPError(503, ["Vault is sealed"])
            data = _parse_body(body) if op in ("POST", "PUT", "PATCH") else {}
            if op in ("POST", "PUT"):
                mount = _login_mount(rel)
                kind = self._auth_mounts.get(mount) if mount else None
                if kind == "approle":
                    return self._approle_login(mount, data)
                if kind == "kubernetes":
                    return self._kubernetes_login(mount, data)
            token = self._live_token(_request_token(headers), now)
            if token is None:
                raise _HTTPError(403, [_PERMISSION_DENIED])
            ctx = _Ctx(token, namespace, self._rules_for(token), now)
            if rel.startswith("auth/token/"):
                return self._token_api(ctx, op, rel, data, headers)
            if rel.startswith("sys/internal/ui/mounts/") and op == "GET":
                return self._mount_info(rel.removeprefix("sys/internal/ui/mounts/"))
            for mount in self._kv_mounts:
                if rel.startswith(mount + "/"):
                    return self._kv_api(ctx, op, rel, mount, query, data, headers)
            raise _no_route(rel)

    # ---- sys

    def _mount_info(self, path: str) -> tuple[int, dict[str, Any] | None]:
        """sys/internal/ui/mounts/<path>: the KV v2 mount holding `path` (Vault answers an
        unknown mount, or one the token cannot see, with a 403 "preflight" error)."""
        for mount in self._kv_mounts:
            if (path.strip("/") + "/").startswith(mount + "/"):
                return 200, _envelope(data={
                    "type": "kv", "path": mount + "/", "options": {"version": "2"},
                    "accessor": "kv_" + mount.replace("/", "_"), "description": "", "local": False,
                    "config": {"default_lease_ttl": 0, "max_lease_ttl": 0},
                })
        raise _HTTPError(403, ["preflight capability check returned 403, please ensure client's "
                               f'policies grant access to path "{path.strip("/")}/"'])

    def _health(
        self, op: str, query: dict[str, list[str]], now: float
    ) -> tuple[int, dict[str, Any] | None]:
        if op not in ("GET", "HEAD"):
            raise _unsupported()
        body: dict[str, Any] = {
            "initialized": True,
            "sealed": self._sealed,
            "standby": self._sealed,
            "performance_standby": False,
            "replication_performance_mode": "unknown" if self._sealed else "disabled",
            "replication_dr_mode": "unknown" if self._sealed else "disabled",
            "server_time_utc": int(now),
            "version": VERSION,
            "enterprise": False,
        }
        if not self._sealed:
            body.update(cluster_name="vault-emulator", cluster_id=self._cluster_id,
                        echo_duration_ms=0, clock_skew_ms=0)
        key, default = ("sealedcode", 503) if self._sealed else ("activecode", 200)
        try:
            status = int(_first(query, key) or default)
        except ValueError:
            status = default
        return status, body

    def _seal_status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "shamir", "initialized": True, "sealed": self._sealed, "t": 1, "n": 1,
            "progress": 0, "nonce": "", "version": VERSION, "build_date": "2024-06-10T10:11:34Z",
            "migration": False, "recovery_seal": False, "storage_type": "inmem",
        }
        if not self._sealed:
            body.update(cluster_name="vault-emulator", cluster_id=self._cluster_id)
        return body

    # ---- auth

    def _approle_login(self, mount: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        role_id = data.get("role_id")
        if not role_id:
            raise _bad("missing role_id")
        secret_id = data.get("secret_id")
        if not secret_id:
            raise _bad("missing secret_id")
        role = next(
            (r for r in self._approles.get(mount, {}).values()
             if hmac.compare_digest(str(r.role_id), str(role_id))),
            None,
        )
        if role is None or not any(
            hmac.compare_digest(s, str(secret_id)) for s in role.secret_ids
        ):
            raise _bad("invalid role or secret ID")
        entry = self._issue_token(
            role.policies, ttl=role.token_ttl, max_ttl=role.token_max_ttl, explicit_max_ttl=0,
            renewable=True, token_id=None, path=f"auth/{mount}/login", display_name="approle",
            meta={"role_name": role.name}, orphan=True,
        )
        return 200, _envelope(auth=_auth_block(entry), mount_type="approle")

    def _kubernetes_login(self, mount: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        role_name = data.get("role")
        if not role_name:
            raise _bad("missing role")
        jwt = data.get("jwt")
        if not jwt:
            raise _bad("missing jwt")
        role = self._k8s_roles.get(mount, {}).get(str(role_name))
        if role is None:
            raise _bad(f'invalid role name "{role_name}"')
        if not hmac.compare_digest(str(jwt).encode(), role.jwt.encode()):
            raise _HTTPError(403, [_PERMISSION_DENIED])
        account = _service_account(role.jwt)
        meta = {"role": role.name, **account}
        entry = self._issue_token(
            role.policies, ttl=role.token_ttl, max_ttl=role.token_max_ttl, explicit_max_ttl=0,
            renewable=True, token_id=None, path=f"auth/{mount}/login",
            display_name=f"{mount}-{account['service_account_namespace']}-"
                         f"{account['service_account_name']}",
            meta=meta, orphan=True,
        )
        return 200, _envelope(auth=_auth_block(entry), mount_type="kubernetes")

    def _token_api(
        self, ctx: _Ctx, op: str, rel: str, data: dict[str, Any], headers: Any
    ) -> tuple[int, dict[str, Any] | None]:
        name = rel[len("auth/token/"):]
        write = op in ("POST", "PUT")
        if name == "lookup-self" and op in ("GET", "POST", "PUT"):
            self._check(ctx, rel, "read" if op == "GET" else "update")
            return 200, _envelope(_lookup_data(ctx.token, ctx.now), mount_type="token")
        if name == "renew-self" and write:
            self._check(ctx, rel, "update")
            return self._renew(ctx.token, data.get("increment"), ctx.now)
        if name == "revoke-self" and write:
            self._check(ctx, rel, "update")
            self._tokens.pop(ctx.token.id, None)
            return 204, None
        if name in ("create", "create-orphan") and write:
            self._check(ctx, rel, "update")
            return self._create_child(ctx, data, orphan=name == "create-orphan")
        if name in ("lookup", "renew", "revoke") and write:
            self._check(ctx, rel, "update")
            if not data.get("token"):
                raise _bad("missing token")
            target = self._live_token(str(data["token"]), ctx.now)
            if name == "revoke":
                if target is not None:
                    self._tokens.pop(target.id, None)
                return 204, None
            if target is None:
                raise _HTTPError(403, ["bad token"])
            if name == "lookup":
                return 200, _envelope(_lookup_data(target, ctx.now), mount_type="token")
            return self._renew(target, data.get("increment"), ctx.now)
        if name in ("lookup-self", "renew-self", "revoke-self", "create", "create-orphan",
                    "lookup", "renew", "revoke"):
            raise _unsupported()
        raise _no_route(rel)

    def _renew(
        self, entry: _Token, increment_raw: Any, now: float
    ) -> tuple[int, dict[str, Any]]:
        if entry.expires is None:
            raise _bad("invalid lease ID")  # root tokens have no lease
        if not entry.renewable:
            raise _bad("lease is not renewable")
        try:
            increment = _parse_duration(increment_raw)
        except ValueError as error:
            raise _bad(f"invalid increment: {error}") from None
        # framework.CalculateTTL, with times truncated to the second as Vault does.
        max_ttl = _effective_max(entry.max_ttl, entry.explicit_max_ttl)
        ttl = increment if increment > 0 else (entry.ttl or _SYSTEM_DEFAULT_TTL)
        max_valid_ttl = math.floor(entry.created) + max_ttl - math.floor(now)
        if max_valid_ttl <= 0:
            raise _bad("past the max TTL, cannot renew")
        warnings = []
        if max_valid_ttl - ttl < 0:
            warnings.append(
                f'TTL of "{_human_duration(ttl)}" exceeded the effective max_ttl of '
                f'"{_human_duration(max_valid_ttl)}"; TTL value is capped accordingly'
            )
            ttl = max_valid_ttl
        entry.expires = now + ttl
        entry.last_renewal = now
        return 200, _envelope(auth=_auth_block(entry, ttl), warnings=warnings, mount_type="token")

    def _create_child(
        self, ctx: _Ctx, data: dict[str, Any], *, orphan: bool
    ) -> tuple[int, dict[str, Any]]:
        parent = ctx.token
        policies = data.get("policies") or [p for p in parent.policies if p != "root"] or []
        if isinstance(policies, str):
            policies = [p.strip() for p in policies.split(",") if p.strip()]
        if not isinstance(policies, list) or not all(isinstance(p, str) for p in policies):
            raise _bad("policies must be a list of strings")
        if not parent.is_root:
            if not set(policies) - {"default"} <= set(parent.policies):
                raise _bad("child policies must be subset of parent")
            if data.get("id"):
                raise _bad("root or sudo privileges required to specify token id")
            if orphan:
                raise _bad("root or sudo privileges required to create orphan token")
        elif not data.get("policies"):
            policies = ["root"]
        token_id = data.get("id") or None
        if token_id is not None and (not isinstance(token_id, str) or token_id in self._tokens):
            raise _bad("cannot use a token ID that is in use")
        try:
            ttl = _parse_duration(data.get("ttl"))
            explicit = _parse_duration(data.get("explicit_max_ttl"))
        except ValueError as error:
            raise _bad(str(error)) from None
        renewable = data.get("renewable", True)
        meta = data.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise _bad("meta must be a map of strings")
        if "root" in policies:
            ttl = ttl if ttl > 0 else 0
        entry = self._issue_token(
            policies, ttl=ttl, max_ttl=0, explicit_max_ttl=explicit,
            renewable=bool(renewable), token_id=token_id, path="auth/token/create",
            display_name="token" + (f"-{data['display_name']}" if data.get("display_name")
                                    else ""),
            meta={str(k): str(v) for k, v in meta.items()} if meta else None,
            orphan=orphan, no_default_policy=bool(data.get("no_default_policy")),
        )
        if entry.is_root and ttl <= 0:
            entry.expires = None  # a root token without a TTL never expires
            entry.ttl = 0
            entry.renewable = False
        return 200, _envelope(auth=_auth_block(entry), mount_type="token")

    # ---- KV v2

    def _kv_api(
        self, ctx: _Ctx, op: str, rel: str, mount: str, query: dict[str, list[str]],
        data: dict[str, Any], headers: Any,
    ) -> tuple[int, dict[str, Any] | None]:
        store = self._store(ctx.namespace, mount)
        sub = rel[len(mount) + 1:]
        acl = f"{ctx.namespace}/{rel}" if ctx.namespace else rel
        if sub == "config":
            if op == "GET":
                self._check(ctx, acl, "read")
                return 200, _envelope(_config_data(store.config), mount_type="kv")
            if op in ("POST", "PUT"):
                self._check(ctx, acl, "update")
                return self._kv_config_write(store, data)
            raise _unsupported()
        section, slash, key = sub.partition("/")
        if not slash:
            raise _no_route(rel)
        if section == "data":
            return self._kv_data(ctx, store, op, acl, key, query, data, headers)
        if section == "metadata":
            return self._kv_metadata(ctx, store, op, acl, key, data, headers)
        if section in ("delete", "undelete", "destroy"):
            if op not in ("POST", "PUT"):
                raise _unsupported()
            self._check(ctx, acl, "update")
            return self._kv_versions_op(store, section, key, data, ctx.now)
        raise _no_route(rel)

    def _kv_config_write(
        self, store: _KvStore, data: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | None]:
        config = store.config
        if "max_versions" in data:
            config.max_versions = _as_uint(data["max_versions"], "max_versions")
        if "cas_required" in data:
            config.cas_required = _as_bool(data["cas_required"], "cas_required")
        if "delete_version_after" in data:
            config.delete_version_after = _as_duration(data["delete_version_after"])
        return 204, None

    def _kv_data(
        self, ctx: _Ctx, store: _KvStore, op: str, acl: str, key: str,
        query: dict[str, list[str]], data: dict[str, Any], headers: Any,
    ) -> tuple[int, dict[str, Any] | None]:
        meta = store.keys.get(key)
        if op == "GET":
            self._check(ctx, acl, "read")
            raw_version = _first(query, "version") or "0"
            try:
                number = int(raw_version)
            except ValueError:
                raise _bad(
                    f'1 error occurred:\n\t* error converting input {raw_version} for field '
                    '"version"\n\n'
                ) from None
            if meta is None:
                raise _HTTPError(404)
            number = number if number > 0 else meta.current_version
            entry = meta.versions.get(number)
            if entry is None:
                raise _HTTPError(404)
            payload: dict[str, Any] = {
                "data": None, "metadata": _version_metadata(meta, number, entry),
            }
            if entry.destroyed or _is_deleted(entry, ctx.now):
                return 404, _envelope(payload, mount_type="kv")  # Vault: 404 with metadata
            payload["data"] = _json_copy(entry.data)
            return 200, _envelope(payload, mount_type="kv")
        if op in ("POST", "PUT"):
            self._check(ctx, acl, "update" if meta is not None else "create")
            if not key:
                raise _bad("missing path")
            secret = data.get("data")
            if not isinstance(secret, dict):
                raise _bad("no data provided")
            check_meta = meta or _KeyMeta()
            _check_cas(data.get("options"), store.config, check_meta)
            if meta is None:
                meta = store.keys[key] = _KeyMeta()
            number = self._add_version(store, meta, _json_copy(secret), ctx.now)
            return 200, _envelope(
                _version_metadata(meta, number, meta.versions[number]), mount_type="kv"
            )
        if op == "DELETE":
            self._check(ctx, acl, "delete")
            if meta is not None:
                latest = meta.versions.get(meta.current_version)
                if latest is not None and not latest.destroyed and not _is_deleted(latest, ctx.now):
                    latest.deletion_time = ctx.now
            return 204, None
        if op == "PATCH":
            self._check(ctx, acl, "patch")
            _require_merge_patch(headers)
            patch = data.get("data")
            if not isinstance(patch, dict):
                raise _bad("no data provided")
            if meta is None:
                raise _HTTPError(404)
            _check_cas(data.get("options"), store.config, meta)
            current = meta.versions.get(meta.current_version)
            if current is None:
                raise _HTTPError(404)
            if current.destroyed or _is_deleted(current, ctx.now):
                return 404, _envelope(
                    _version_metadata(meta, meta.current_version, current), mount_type="kv"
                )
            merged = _merge_patch(_json_copy(current.data) or {}, patch)
            number = self._add_version(store, meta, merged, ctx.now)
            return 200, _envelope(
                _version_metadata(meta, number, meta.versions[number]), mount_type="kv"
            )
        raise _unsupported()

    def _kv_metadata(
        self, ctx: _Ctx, store: _KvStore, op: str, acl: str, key: str, data: dict[str, Any],
        headers: Any,
    ) -> tuple[int, dict[str, Any] | None]:
        meta = store.keys.get(key)
        if op == "LIST":
            list_acl = acl if acl.endswith("/") else acl + "/"
            self._check(ctx, list_acl, "list", is_list=True)
            prefix = key if not key or key.endswith("/") else key + "/"
            keys = sorted({
                name[len(prefix):].split("/", 1)[0] + ("/" if "/" in name[len(prefix):] else "")
                for name in store.keys
                if name.startswith(prefix) and len(name) > len(prefix)
            })
            if not keys:
                raise _HTTPError(404)
            return 200, _envelope({"keys": keys}, mount_type="kv")
        if op == "GET":
            self._check(ctx, acl, "read")
            if meta is None:
                raise _HTTPError(404)
            return 200, _envelope(_metadata_data(meta), mount_type="kv")
        if op in ("POST", "PUT"):
            self._check(ctx, acl, "update" if meta is not None else "create")
            if not key:
                raise _bad("missing path")
            fields = {k: data[k] for k in
                      ("max_versions", "cas_required", "delete_version_after", "custom_metadata")
                      if k in data}
            if not fields:
                return 204, None  # Vault's fast path: nothing to set, nothing created
            custom = None
            if "custom_metadata" in fields:
                raw = fields["custom_metadata"]
                if raw is not None and not isinstance(raw, dict):
                    raise _bad("custom_metadata validation failed: expected a map")
                custom = _custom_metadata(raw or {}, patch=False)
            max_versions = (_as_uint(fields["max_versions"], "max_versions")
                            if "max_versions" in fields else None)
            cas_required = (_as_bool(fields["cas_required"], "cas_required")
                            if "cas_required" in fields else None)
            after = (_as_duration(fields["delete_version_after"])
                     if "delete_version_after" in fields else None)
            if meta is None:
                meta = store.keys[key] = _KeyMeta(created=ctx.now, updated=ctx.now)
            if max_versions is not None:
                meta.max_versions = max_versions
            if cas_required is not None:
                meta.cas_required = cas_required
            if after is not None:
                meta.delete_version_after = after
            if custom is not None:
                meta.custom_metadata = custom
            if cas_required is False and store.config.cas_required:
                return 200, _envelope(None, warnings=[
                    '"cas_required" set to false, but is mandated by backend config. '
                    "This value will be ignored."
                ], mount_type="kv")
            return 204, None
        if op == "PATCH":
            self._check(ctx, acl, "patch")
            _require_merge_patch(headers)
            if meta is None:
                raise _HTTPError(404)
            if "max_versions" in data and data["max_versions"] is not None:
                meta.max_versions = _as_uint(data["max_versions"], "max_versions")
            if "cas_required" in data and data["cas_required"] is not None:
                meta.cas_required = _as_bool(data["cas_required"], "cas_required")
            if "delete_version_after" in data and data["delete_version_after"] is not None:
                meta.delete_version_after = _as_duration(data["delete_version_after"])
            if "custom_metadata" in data:
                raw = data["custom_metadata"]
                if raw is None:
                    meta.custom_metadata = None
                elif isinstance(raw, dict):
                    merged = dict(meta.custom_metadata or {})
                    for k, v in raw.items():
                        if v is None:
                            merged.pop(k, None)
                        else:
                            merged[k] = v
                    meta.custom_metadata = _custom_metadata(merged, patch=True)
                else:
                    raise _bad("custom_metadata validation failed: expected a map")
            return 204, None
        if op == "DELETE":
            self._check(ctx, acl, "delete")
            store.keys.pop(key, None)
            return 204, None
        raise _unsupported()

    def _kv_versions_op(
        self, store: _KvStore, section: str, key: str, data: dict[str, Any], now: float
    ) -> tuple[int, dict[str, Any] | None]:
        raw = data.get("versions")
        if isinstance(raw, (int, str)) and not isinstance(raw, bool):
            raw = [raw]
        if not raw or not isinstance(raw, list):
            raise _bad("no version number provided")
        try:
            numbers = [int(v) for v in raw]
        except (TypeError, ValueError):
            raise _bad("versions must be integers") from None
        meta = store.keys.get(key)
        if meta is None:
            return 204, None
        for number in numbers:
            entry = meta.versions.get(number)
            if entry is None or entry.destroyed:
                continue
            if section == "delete":
                if not _is_deleted(entry, now):
                    entry.deletion_time = now
            elif section == "undelete":
                entry.deletion_time = None
            else:
                entry.destroyed = True
                entry.data = None
        return 204, None


# ---------------------------------------------------------------------------- ACL


def _acl_capabilities(
    rules: Mapping[str, frozenset[str]], path: str, *, is_list: bool
) -> frozenset[str] | None:
    """Vault's ACL lookup: exact path first, else the highest-priority glob/segment match."""
    if path in rules and not path.endswith("*") and "+" not in path:
        return rules[path]
    if is_list and path.endswith("/"):
        trimmed = path[:-1]
        if trimmed in rules and "+" not in trimmed:
            return rules[trimmed]
    # (first wildcard position, not a prefix, -number of + segments, length, path) -> max wins
    candidates: list[tuple[tuple[int, bool, int, int, str], frozenset[str]]] = []
    best_prefix: str | None = None
    for rule in rules:
        if rule.endswith("*") and "+" not in rule:
            prefix = rule[:-1]
            if path.startswith(prefix) and (best_prefix is None or len(prefix) > len(best_prefix)):
                best_prefix = prefix
    if best_prefix is not None:
        candidates.append(
            ((len(best_prefix), False, 0, len(best_prefix), best_prefix), rules[best_prefix + "*"])
        )
    parts = path.split("/")
    for rule, caps in rules.items():
        if "+" not in rule:
            continue
        is_prefix = rule.endswith("*")
        pattern = rule[:-1] if is_prefix else rule
        pattern_parts = pattern.split("/")
        if len(parts) < len(pattern_parts):
            continue
        if not is_prefix and len(parts) != len(pattern_parts):
            continue
        wildcards = 0
        for index, segment in enumerate(pattern_parts):
            last = index == len(pattern_parts) - 1
            if segment == "+":
                wildcards += 1
            elif segment != parts[index] and not (
                is_prefix and last and parts[index].startswith(segment)
            ):
                break
        else:
            rank = (rule.index("+"), not is_prefix, -wildcards, len(pattern), pattern)
            candidates.append((rank, caps))
    if not candidates:
        return None
    return max(candidates, key=lambda item: item[0])[1]


# ---------------------------------------------------------------------------- HTTP plumbing


class _Server(EmulatorServer):
    def __init__(self, address: tuple[str, int], emulator: VaultEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)


class _Handler(EmulatorHandler):
    server_version = "vault-emulator"
    max_request_body = _MAX_REQUEST_BODY
    body_too_large_message = "http: request body too large"
    server: _Server

    def version_string(self) -> str:
        return self.server_version  # no trailing " " + sys_version in the Server header

    do_LIST = EmulatorHandler.do_GET

    def _dispatch(self, body: bytes) -> None:
        emulator = self.server.emulator
        parts = urlsplit(self.path)
        namespace = self.headers.get("X-Vault-Namespace", "").strip().strip("/")
        fault = emulator._record(self.command, parts.path, namespace)
        if fault is not None:
            if fault.kind == "reset":
                self._reset_connection()
                return
            if fault.kind == "5xx":
                self._send(fault.status, {"errors": ["internal error"]})
                return
            if fault.kind == "429":
                rel = parts.path.removeprefix("/v1/")
                self._send(429, {"errors": [f'request path "{rel}": rate limit quota exceeded']})
                return
            emulator._stopping.wait(fault.delay)  # "slow"
        query = parse_qs(parts.query, keep_blank_values=True)
        try:
            status, payload = emulator._handle(
                self.command, parts.path, query, self.headers, body, namespace
            )
        except Exception as error:  # a bug in the emulator: still answer, like Vault's 500
            status, payload = 500, {"errors": [f"vault emulator error: {error!r}"]}
        self._send(status, payload)

    def _send(self, status: int, payload: dict[str, Any] | None) -> None:
        data = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        if data:
            data += b"\n"
        self.send_response(status)
        self.send_header("Cache-Control", "no-store")
        if status != 204:  # HTTP forbids a body (and Content-Length) on 204; Vault sends neither
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status != 204 and self.command != "HEAD":
            self.wfile.write(data)

    def _refuse(self, status: int, message: str) -> None:
        self.close_connection = True
        self._send(status, {"errors": [message]})


# ---------------------------------------------------------------------------- helpers


def _envelope(
    data: Any = None, *, auth: dict[str, Any] | None = None, warnings: list[str] | None = None,
    mount_type: str = "",
) -> dict[str, Any]:
    return {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": warnings or None,
        "auth": auth,
        "mount_type": mount_type,
    }


def _auth_block(entry: _Token, lease: float | None = None) -> dict[str, Any]:
    duration = entry.ttl if lease is None else lease
    return {
        "client_token": entry.id,
        "accessor": entry.accessor,
        "policies": list(entry.policies),
        "token_policies": list(entry.policies),
        "metadata": dict(entry.meta) if entry.meta is not None else None,
        "lease_duration": 0 if entry.expires is None else int(duration),
        "renewable": entry.renewable,
        "entity_id": entry.entity_id,
        "token_type": "service",
        "orphan": entry.orphan,
        "mfa_requirement": None,
        "num_uses": 0,
    }


def _lookup_data(entry: _Token, now: float) -> dict[str, Any]:
    data: dict[str, Any] = {
        "accessor": entry.accessor,
        "creation_time": int(entry.created),
        "creation_ttl": int(entry.ttl),
        "display_name": entry.display_name,
        "entity_id": entry.entity_id,
        "expire_time": None if entry.expires is None else _rfc3339(entry.expires),
        "explicit_max_ttl": int(entry.explicit_max_ttl),
        "id": entry.id,
        "issue_time": _rfc3339(entry.created),
        "meta": dict(entry.meta) if entry.meta is not None else None,
        "num_uses": 0,
        "orphan": entry.orphan,
        "path": entry.path,
        "policies": list(entry.policies),
        "renewable": entry.renewable,
        "ttl": 0 if entry.expires is None else max(0, int(entry.expires - now)),
        "type": "service",
    }
    if entry.last_renewal is not None:
        data["last_renewal"] = _rfc3339(entry.last_renewal)
        data["last_renewal_time"] = int(entry.last_renewal)
    return data


def _version_metadata(meta: _KeyMeta, number: int, entry: _Version) -> dict[str, Any]:
    return {
        "created_time": _rfc3339(entry.created),
        "custom_metadata": dict(meta.custom_metadata) if meta.custom_metadata is not None
        else None,
        "deletion_time": "" if entry.deletion_time is None else _rfc3339(entry.deletion_time),
        "destroyed": entry.destroyed,
        "version": number,
    }


def _metadata_data(meta: _KeyMeta) -> dict[str, Any]:
    return {
        "cas_required": meta.cas_required,
        "created_time": _rfc3339(meta.created) if meta.created is not None else "",
        "current_version": meta.current_version,
        "custom_metadata": dict(meta.custom_metadata) if meta.custom_metadata is not None
        else None,
        "delete_version_after": _go_duration(meta.delete_version_after),
        "max_versions": meta.max_versions,
        "oldest_version": meta.oldest_version,
        "updated_time": _rfc3339(meta.updated) if meta.updated is not None else "",
        "versions": {
            str(number): {
                "created_time": _rfc3339(entry.created),
                "deletion_time": "" if entry.deletion_time is None
                else _rfc3339(entry.deletion_time),
                "destroyed": entry.destroyed,
            }
            for number, entry in sorted(meta.versions.items())
        },
    }


def _config_data(config: _KvConfig) -> dict[str, Any]:
    return {
        "cas_required": config.cas_required,
        "delete_version_after": _go_duration(config.delete_version_after),
        "max_versions": config.max_versions,
    }


def _check_cas(options: Any, config: _KvConfig, meta: _KeyMeta) -> None:
    """Vault's validateCheckAndSetOption."""
    if options is not None and not isinstance(options, dict):
        raise _bad("options must be a map")
    if options and "cas" in options:
        raw = options["cas"]
        try:
            if isinstance(raw, bool) or (isinstance(raw, float) and raw.is_integer()):
                cas = int(raw)
            elif isinstance(raw, int):
                cas = raw
            elif isinstance(raw, str):
                cas = int(raw.strip() or "0")
            else:
                raise ValueError(raw)
        except ValueError:
            raise _bad("error parsing check-and-set parameter") from None
        if cas != meta.current_version:
            raise _bad("check-and-set parameter did not match the current version")
    elif config.cas_required or meta.cas_required:
        raise _bad("check-and-set parameter required for this call")


def _custom_metadata(raw: Mapping[str, Any], *, patch: bool) -> dict[str, str]:
    """parseCustomMetadata + validateCustomMetadata: weakly decoded to strings, then checked."""
    prefix = "custom_metadata validation failed"
    result: dict[str, str] = {}
    for key, value in raw.items():
        if value is None and patch:
            continue
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, float):
            text = str(int(value)) if value.is_integer() else repr(value)
        elif isinstance(value, (int, str)):
            text = str(value)
        elif value is None:
            text = ""
        else:
            raise _bad(f"{prefix}: '' expected type 'string', got unconvertible type "
                       f"'{type(value).__name__}'")
        result[str(key)] = text
    if len(result) > 64:
        raise _bad(f"{prefix}: payload must contain at most 64 keys, provided {len(result)}")
    problems = []
    for key, value in result.items():
        if not 0 < len(key) <= 128:
            problems.append(f"{prefix}: length of key {_go_quote(key)} is {len(key)} but must "
                            "be 0 < len(key) <= 128")
        if not 0 < len(value) <= 512:
            problems.append(f"{prefix}: length of value for key {_go_quote(key)} is "
                            f"{len(value)} but must be 0 < len(value) <= 512")
        if not key.isprintable():
            problems.append(f"{prefix}: key {_go_quote(key)} ({key}) contains unprintable "
                            "characters")
        if not value.isprintable():
            problems.append(f"{prefix}: value for key {_go_quote(key)} contains unprintable "
                            "characters")
    if problems:
        lines = "".join(f"\t* {p}\n" for p in problems)
        count = len(problems)
        raise _bad(f"{count} error{'s' if count > 1 else ''} occurred:\n{lines}\n")
    return result


def _go_quote(text: str) -> str:
    """Roughly Go's %q: a double-quoted string with escapes."""
    return json.dumps(text, ensure_ascii=False)


def _require_merge_patch(headers: Any) -> None:
    content_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if content_type != "application/merge-patch+json":
        raise _HTTPError(415, [
            "PATCH requires Content-Type of application/merge-patch+json, got "
            f'"{content_type}"'
        ])


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _is_deleted(entry: _Version, now: float) -> bool:
    return entry.deletion_time is not None and entry.deletion_time <= now


def _effective_max(backend_max: float, explicit_max: float) -> float:
    cap = float(_SYSTEM_MAX_TTL)
    if 0 < backend_max < cap:
        cap = backend_max
    if 0 < explicit_max < cap:
        cap = explicit_max
    return cap


def _parse_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except ValueError as error:
        raise _bad(f"failed to parse JSON input: {error}") from None
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise _bad("failed to parse JSON input: json: cannot unmarshal into a map")
    return parsed


def _login_mount(rel: str) -> str | None:
    if rel.startswith("auth/") and rel.endswith("/login"):
        mount = rel[len("auth/"):-len("/login")]
        return mount or None
    return None


def _request_token(headers: Any) -> str | None:
    token = headers.get("X-Vault-Token")
    if token:
        return token.strip()
    authorization = headers.get("Authorization") or ""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _service_account(jwt: str) -> dict[str, str]:
    """Best-effort service account fields from an (unverified) Kubernetes JWT's claims."""
    claims: dict[str, Any] = {}
    parts = jwt.split(".")
    if len(parts) == 3:
        segment = parts[1] + "=" * (-len(parts[1]) % 4)
        with contextlib.suppress(ValueError, binascii.Error, UnicodeDecodeError):
            decoded = json.loads(base64.urlsafe_b64decode(segment))
            if isinstance(decoded, dict):
                claims = decoded
    projected = claims.get("kubernetes.io") if isinstance(claims.get("kubernetes.io"), dict) else {}
    account = projected.get("serviceaccount") if isinstance(projected, dict) else None
    account = account if isinstance(account, dict) else {}
    name = account.get("name") or claims.get("kubernetes.io/serviceaccount/service-account.name")
    namespace = projected.get("namespace") or claims.get("kubernetes.io/serviceaccount/namespace")
    uid = account.get("uid") or claims.get("kubernetes.io/serviceaccount/service-account.uid")
    subject = str(claims.get("sub") or "")
    if subject.startswith("system:serviceaccount:") and not (name and namespace):
        _, _, rest = subject.partition("system:serviceaccount:")
        namespace, _, name = rest.partition(":")
    return {
        "service_account_name": str(name or "default"),
        "service_account_namespace": str(namespace or "default"),
        "service_account_secret_name": str(
            claims.get("kubernetes.io/serviceaccount/secret.name") or ""
        ),
        "service_account_uid": str(uid or ""),
    }


def _json_copy(value: Any) -> Any:
    return None if value is None else json.loads(json.dumps(value))


def _random_id(length: int) -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(length))


def _rfc3339(moment: float) -> str:
    """Go's RFC3339Nano in UTC: fractional digits without trailing zeros."""
    whole = math.floor(moment)
    nanos = round((moment - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d)")
_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
    "h": 3600.0, "d": 86400.0,
}


def _parse_duration(value: Any) -> float:
    """Vault's ParseDurationSecond: seconds as a number or string, or a Go duration (+ "d")."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        raise ValueError(f"cannot parse {value!r} as a duration")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return float(int(text))
    sign = -1.0 if text.startswith("-") else 1.0
    rest = text.lstrip("+-")
    total, position = 0.0, 0
    while position < len(rest):
        match = _DURATION_PART.match(rest, position)
        if match is None:
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not rest:
        raise ValueError(f"time: invalid duration {text!r}")
    return sign * total


def _as_duration(value: Any) -> float:
    try:
        seconds = _parse_duration(value)
    except ValueError as error:
        raise _bad(str(error)) from None
    if seconds < 0:
        raise _bad("delete_version_after cannot be negative")
    return seconds


def _as_uint(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < 0:
        raise _bad(f'1 error occurred:\n\t* error converting input {value} for field "{name}"\n\n')
    return number


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "t", "f"):
        return value.lower() in ("true", "1", "t")
    if isinstance(value, int):
        return value != 0
    raise _bad(f'1 error occurred:\n\t* error converting input {value} for field "{name}"\n\n')


def _go_duration(seconds: float) -> str:
    """Go's time.Duration.String() for whole and fractional seconds (>= 1s or 0)."""
    nanos = round(seconds * 1e9)
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if nanos >= size:
                return sign + _trim_fraction(nanos / size) + unit
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = _trim_fraction(rest / 1e9)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def _trim_fraction(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def _human_duration(seconds: float) -> str:
    """Vault's humanDuration: Go's duration string without zero elements ("1h", "10m")."""
    text = _go_duration(seconds)
    if text.endswith("m0s"):
        text = text[:-2]
    index = text.find("h0m")
    if index > 0:
        text = text[: index + 1] + text[index + 3:]
    return text


# ---------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rotator.testing.vault",
        description="Serve the Vault emulator (KV v2 + token/AppRole/Kubernetes auth) until "
                    "Ctrl-C. The root token is a fixed test value, never a real secret.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200, help="0 picks a free port")
    parser.add_argument("--root-token", default=DEFAULT_ROOT_TOKEN)
    parser.add_argument("--kv-mount", action="append", dest="kv_mounts", metavar="MOUNT",
                        help="a KV v2 mount path (repeatable; default: secret)")
    args = parser.parse_args(argv)
    emulator = VaultEmulator(
        host=args.host, port=args.port, root_token=args.root_token,
        kv_mounts=args.kv_mounts or ("secret",),
    )
    emulator.start()
    try:  # Ctrl-C may come as soon as the address is out: be ready for it before printing
        print(f"VAULT_ADDR={emulator.url} VAULT_TOKEN={emulator.root_token}", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
