"""HashiCorp Vault KV v2 store, on hvac.

Records are the data maps of KV v2 secrets under one mount (``mount``, default ``secret``):
``PATH "sf/token"`` is ``<mount>/data/sf/token``. An operator creates the key record the usual
way (``vault kv put secret/sf/key private_key=@server.key certificate=@server.crt``); rotator
reads it, and writes every token as a new KV version that consumers read with their own Vault
clients (``vault kv get -field=access_token secret/sf/token``).

* ``Record.version`` is the KV version number as a string. ``Record.meta`` has the version's
  ``created_time`` and the secret's ``custom_metadata``.
* Writes are check-and-set: ``cas`` = the version the caller read, ``cas=0`` when it read
  nothing (``expected_version=None``: the secret must not exist yet). A CAS mismatch — another
  writer got there first — is StoreConflict and is never retried over the other writer.
* After a successful data write, the ``metadata`` labels (credential, key_sha256, rotation_id,
  written_by, plus ``version``: the KV version they belong to) are POSTed as the secret's
  ``custom_metadata``. KV v2 keeps custom_metadata per *secret*, not per version: it describes
  the latest write by rotator. Compare its ``version`` with the version you read; a failed
  metadata write (the token is already stored) is audited as ``store.metadata.failed`` and does
  not fail the rotation. rotator owns custom_metadata on token paths: other keys are replaced.
* ``request_id`` is not used: KV v2 has no idempotency key. A retried write after a lost reply
  fails its CAS and the engine then finds its own fresh token (``superseded``).
* Login, renewal and re-login live in :mod:`rotator.stores.vault_auth`. A request answered 403
  with a dead token (revoked, expired) is retried once after a new login; a 403 with a live
  token is the policy saying no: StoreAccessDenied naming the path and the missing capability.
* Every hvac / requests exception is converted here into rotator's errors; nothing from hvac
  or requests leaves this module. One hvac.Client per store; TLS is always verified (against
  ``ca_cert`` when set); ``namespace`` is sent as ``X-Vault-Namespace``.
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import Callable, Mapping
from typing import Any

import hvac
import hvac.exceptions as hvac_errors
import requests
from hvac.adapters import JSONAdapter
from hvac.utils import format_url

from rotator.audit import pipeline as audit
from rotator.config import VaultStoreConfig, check_store_path
from rotator.errors import (
    RecordError,
    StoreAccessDenied,
    StoreConflict,
    StoreError,
)
from rotator.stores.base import Record, WriteResult
from rotator.stores.vault_auth import CONVERTED, VaultAuth, convert_error, vault_message
from rotator.stores.vault_http import GuardedSession

_CAS_MISMATCH = "check-and-set parameter did not match"
_POLICY_FILE = "deploy/vault/rotator-policy.hcl"


class _Adapter(JSONAdapter):
    """hvac's JSON adapter, keeping the HTTP status and Retry-After on the exception."""

    def _raise_for_error(self, method: str, url: str, response: requests.Response) -> None:
        try:
            super()._raise_for_error(method, url, response)
        except hvac_errors.VaultError as exc:
            exc.status = response.status_code  # type: ignore[attr-defined]
            exc.retry_after = response.headers.get("Retry-After")  # type: ignore[attr-defined]
            raise


class VaultStore:
    def __init__(
        self,
        name: str,
        config: VaultStoreConfig,
        *,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.mount = config.mount.strip("/")
        self.address = config.url.rstrip("/")
        self.namespace = (config.namespace or "").strip("/") or None
        # TLS is always verified: against ca_cert when given, else the system trust store.
        verify: str | bool = str(config.ca_cert) if config.ca_cert is not None else True
        # Redirects only to this host (or redirect_hosts), and a deadline on every request:
        # see rotator.stores.vault_http.
        session = GuardedSession(self.address, deadline=config.timeout,
                                 redirect_hosts=tuple(config.redirect_hosts))
        session.verify = verify  # hvac takes the session's verify over its own argument
        self._client = hvac.Client(
            url=self.address, token="", verify=verify, timeout=config.timeout,
            namespace=self.namespace, adapter=_Adapter, session=session, allow_redirects=False,
        )
        self._kv2_checked = False  # the mount was seen to be KV version 2 (once per process)
        self.auth = VaultAuth(
            self._client, config.auth, store=name, address=self.address, clock=clock,
            random=random, environ=environ,
        )

    def __repr__(self) -> str:
        return f"<VaultStore {self.name!r} {self.describe()} auth={self.config.auth.method}>"

    @property
    def client(self) -> hvac.Client:
        """The store's hvac client, for other engines on the same Vault (Transit signing in
        rotator.keys.remote). Its token belongs to `auth`: call ``auth.ensure()`` before each
        request and ``auth.handle_rejection`` after a 401/403, as `_call` does."""
        return self._client

    # ------------------------------------------------------------------ interface

    def read(self, path: str) -> Record | None:
        """The latest version at `path`, or None. A deleted or destroyed latest version is a
        RecordError carrying that version (so a writer can replace it with CAS)."""
        return self._read(path, None)

    def read_version(self, path: str, version: str | int) -> Record | None:
        """One version of the secret at `path`; None if Vault keeps no such version."""
        try:
            number = int(version)
        except (TypeError, ValueError):
            raise StoreError(self.name, path, f"{version!r} is not a KV v2 version number") \
                from None
        if number < 1:
            raise StoreError(self.name, path, f"{version!r} is not a KV v2 version number")
        return self._read(path, number)

    def read_metadata(self, path: str) -> dict[str, Any] | None:
        """The secret's KV v2 metadata (current_version, versions, custom_metadata, ...)."""
        self._check_path(path)
        self._ensure_kv2(path)
        where = f"{self.mount}/metadata/{path}"
        reply = self._call(
            lambda: self._client.secrets.kv.v2.read_secret_metadata(
                path=path, mount_point=self.mount),
            path=path, action=f"read {where}", denied=_lacks('"read"', where, self.namespace),
            on_404=lambda exc: self._no_route(exc, path, where),
        )
        if reply is None:
            return None
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, dict):
            raise self._unexpected(path, where)
        return data

    def write(
        self,
        path: str,
        data: dict[str, Any],
        *,
        expected_version: str | None,
        request_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> WriteResult:
        self._check_path(path)
        self._ensure_kv2(path)
        if expected_version is None:
            cas = 0
        else:
            try:
                cas = int(expected_version)
            except (TypeError, ValueError):
                raise StoreError(
                    self.name, path,
                    f"expected version {expected_version!r} is not a KV v2 version number",
                ) from None
        where = f"{self.mount}/data/{path}"
        if cas == 0:
            denied = _lacks('"create" (first write)', where, self.namespace,
                            also='writes need "create" (first write) or "update" (later ones)')
        else:
            denied = _lacks('"update"', where, self.namespace,
                            also='writes need "create" (first write) or "update" (later ones)')
        reply = self._call(
            lambda: self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=data, cas=cas, mount_point=self.mount),
            path=path, action=f"write {where}", denied=denied,
            conflict=f"the record changed since it was read (expected version "
                     f"{expected_version or 'none'}; Vault: {_CAS_MISMATCH} the current version)",
        )
        written = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(written, dict) or "version" not in written:
            raise self._unexpected(path, where)
        version = str(written["version"])
        if metadata:
            self._write_custom_metadata(path, version, metadata)
        return WriteResult(version, str(cas) if cas else None)

    def check(self) -> None:
        """Log in, look up our own token (auth works) and check that the mount is KV version 2.
        Reads no secret, writes nothing."""
        self._call(
            lambda: self._client.adapter.get("/v1/auth/token/lookup-self"),
            path="", action="look up the token (auth/token/lookup-self)",
            denied=_lacks('"read"', "auth/token/lookup-self", None),
        )
        self._ensure_kv2("")

    def _ensure_kv2(self, path: str) -> None:
        """Refuse a mount that is not KV version 2 before the first read or write.

        On a KV v1 mount a read of <mount>/data/<path> says "no record" and a write creates a
        v1 secret literally named data/<path> (the private key included): so ask first, with
        sys/internal/ui/mounts/<mount>, which every token with access under the mount may read.
        """
        if self._kv2_checked:
            return
        where = f"sys/internal/ui/mounts/{self.mount}"
        reply = self._call(
            lambda: self._client.adapter.get(f"/v1/{where}"),
            path=path, action=f"look up the mount {self.mount}/ ({where})",
            denied=f"cannot look up the mount {self.mount}/ ({where}): no such mount, or the "
                   f"token's policy grants nothing under {self.mount}/",
            on_404=lambda exc: self._no_route(exc, path, where),
        )
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, dict):
            raise self._unexpected(path, where)
        options = data.get("options") if isinstance(data.get("options"), dict) else {}
        version = str((options or {}).get("version") or "1")
        if data.get("type") not in ("kv", "generic") or version != "2":
            kind = f"KV version {version}" if data.get("type") in ("kv", "generic") \
                else f"a {str(data.get('type'))[:40]!r} mount, not KV"
            raise StoreError(
                self.name, path,
                f"mount {self.mount}/ at {self.address} is {kind}; rotator needs KV version 2",
                hint=f"upgrade it (vault kv enable-versioning {self.mount}/; existing secrets are "
                     "kept) or set the store's mount to a KV version 2 mount",
            )
        self._kv2_checked = True

    def maintain(self) -> None:
        """Renew the token or log in again if due (a daemon may call this periodically)."""
        self.auth.maintain()

    def describe(self) -> str:
        where = f"vault {self.address} mount {self.mount}"
        return where + (f" namespace {self.namespace}" if self.namespace else "")

    def start_renewer(self, on_trouble: Callable[[Any], None] | None = None) -> None:
        """Renew the Vault token on a timer (the daemon calls this once the store is checked)."""
        self.auth.start_renewer(on_trouble)

    def close(self) -> None:
        self.auth.stop_renewer()
        if self.config.auth.revoke_on_close:
            self.auth.revoke(timeout=min(self.config.timeout, 2.0))
        self._client.adapter.close()

    # ------------------------------------------------------------------ helpers

    def _read(self, path: str, version: int | None) -> Record | None:
        self._check_path(path)
        self._ensure_kv2(path)
        where = f"{self.mount}/data/{path}"
        shown = f"{self.name}:{path}" + (f" (version {version})" if version else "")

        def not_found(exc: BaseException) -> None:
            self._no_route(exc, path, where)
            meta = _deleted_metadata(exc)
            if meta is None:
                return None
            number = meta.get("version", version)
            state = "destroyed" if meta.get("destroyed") else "deleted"
            raise RecordError(
                shown, f"KV version {number} is {state}",
                hint=(f"vault kv undelete -versions={number} {self.mount}/{path}, or write a new "
                      "version" if state == "deleted" else "write a new version"),
                version=str(number) if number is not None else None,
            )

        reply = self._call(
            lambda: self._client.secrets.kv.v2.read_secret_version(
                path=path, version=version, mount_point=self.mount,
                raise_on_deleted_version=True),
            path=path, action=f"read {where}", denied=_lacks('"read"', where, self.namespace),
            on_404=not_found,
        )
        if reply is None:
            return None
        body = reply.get("data") if isinstance(reply, dict) else None
        meta = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(meta, dict) or "version" not in meta:
            raise self._unexpected(path, where)
        number = str(meta["version"])
        data = body.get("data")
        if not isinstance(data, dict):
            raise RecordError(shown, "record is not a JSON object (the secret's data is not a map)",
                              version=number)
        return Record(data, number, {
            "created_time": meta.get("created_time"),
            "custom_metadata": dict(meta.get("custom_metadata") or {}),
        })

    def _write_custom_metadata(self, path: str, version: str, metadata: dict[str, str]) -> None:
        labels = {str(k): str(v)[:512] for k, v in metadata.items() if v not in (None, "")}
        labels["version"] = version  # custom_metadata is per secret: say which write it describes
        where = f"{self.mount}/metadata/{path}"
        url = format_url("/v1/{mount}/metadata/{path}", mount=self.mount, path=path)
        try:
            # A bare POST of custom_metadata only: hvac's update_metadata would also send
            # delete_version_after="0s" and undo an operator's setting.
            self._call(
                lambda: self._client.adapter.post(url, json={"custom_metadata": labels}),
                path=path, action=f"write custom_metadata at {where}",
                denied=_lacks('"update"', where, self.namespace,
                              also="needed for custom_metadata only; the token itself is stored"),
            )
        except StoreError as exc:
            audit.emit("store.metadata.failed", level="warning", outcome="failure",
                       error_class=exc.kind, store=self.name, path=path, version=version,
                       diagnosis=exc.diagnostics())

    def _call(
        self,
        fn: Callable[[], Any],
        *,
        path: str,
        action: str,
        denied: str,
        on_404: Callable[[BaseException], Any] | None = None,
        conflict: str | None = None,
    ) -> Any:
        """Run one hvac request with a live token; retry once after a re-login if Vault
        rejected a dead token; convert every failure into a rotator error."""
        for attempt in (1, 2):
            generation = self.auth.ensure()
            try:
                return fn()
            except (hvac_errors.Forbidden, hvac_errors.Unauthorized) as exc:
                kind, failure = "rejected", exc
            except hvac_errors.InvalidPath as exc:
                kind, failure = "missing", exc
            except CONVERTED as exc:
                kind, failure = "failed", exc
            # Handled outside the except blocks: nothing we raise chains an hvac exception.
            if kind == "missing" and on_404 is not None:
                return on_404(failure)
            if kind == "rejected" and attempt == 1 and \
                    self.auth.handle_rejection(generation, failure):
                continue
            raise self._convert(failure, path, action, denied, conflict)
        raise AssertionError("unreachable")  # pragma: no cover

    def _convert(
        self, exc: BaseException, path: str, action: str, denied: str, conflict: str | None
    ) -> StoreError:
        if isinstance(exc, hvac_errors.Forbidden):
            return StoreAccessDenied(self.name, path, f"permission denied: {denied}",
                                     hint=f"grant it in the token's policy; see {_POLICY_FILE}")
        if conflict is not None and isinstance(exc, hvac_errors.InvalidRequest) \
                and _CAS_MISMATCH in vault_message(exc):
            return StoreConflict(self.name, path, conflict,
                                 hint="another writer got there first; re-read and decide again")
        if isinstance(exc, ValueError) and not isinstance(exc, requests.exceptions.RequestException):
            return self._unexpected(path, action)
        return convert_error(exc, store=self.name, path=path, address=self.address, action=action)

    def _no_route(self, exc: BaseException, path: str, where: str) -> None:
        """A missing secret is a 404 with no errors; a 404 *with* one ("no handler for
        route") means the mount does not exist: say so instead of reading "no record"."""
        if getattr(exc, "errors", None):
            raise StoreError(
                self.name, path, f"cannot read {where}: {vault_message(exc)}",
                hint=f"is {self.mount!r} the path of a KV version 2 mount (store setting mount)?",
            )

    def _unexpected(self, path: str, where: str) -> StoreError:
        return StoreError(self.name, path, f"{where}: unexpected reply from {self.address} "
                          f"(is {self.mount!r} a KV version 2 mount?)")

    def _check_path(self, path: str) -> None:
        try:
            check_store_path(path)
        except ValueError as exc:
            raise StoreError(self.name, path, str(exc)) from None


def _lacks(capability: str, where: str, namespace: str | None, *, also: str | None = None) -> str:
    text = f"the Vault policy lacks {capability} on {where}"
    if namespace:
        text += f" (namespace {namespace})"
    if also:
        text += f"; {also}"
    return text


def _deleted_metadata(exc: BaseException) -> dict[str, Any] | None:
    """Vault answers a deleted/destroyed version with 404 *and* the version's metadata."""
    body = getattr(exc, "json", None)
    if not isinstance(body, dict):
        return None
    data = body.get("data")
    meta = data.get("metadata") if isinstance(data, dict) else None
    if isinstance(meta, dict) and (meta.get("deletion_time") or meta.get("destroyed")):
        return meta
    return None
