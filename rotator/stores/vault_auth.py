"""Vault login and token lifecycle for the Vault store, the way Vault Agent does it.

* Login with the configured method: ``token`` (``token_file``, else the environment variable
  ``token_env``), ``approle`` (``role_id_file`` + ``secret_id_file``) or ``kubernetes``
  (``role`` + ``jwt_file``). Credential files are re-read at every login, so a rotated
  secret ID, a refreshed projected service-account token or a new ``token_file`` is picked up.
* After login the token's TTL is known (the login reply's lease, or ``lookup-self`` for the
  token method). At about 2/3 of the TTL the token is renewed (``renew-self``), checked lazily
  before each request (:meth:`VaultAuth.ensure`) and by :meth:`VaultAuth.maintain`, which a
  daemon may call periodically. A renewal that is refused, or that comes back capped by the
  token's max TTL, leads to a fresh login instead; a token past its TTL is never used.
* A request answered 403 may mean a revoked or expired token, or a policy that says no. The
  store asks :meth:`VaultAuth.handle_rejection`, which probes with ``lookup-self``: a token that
  still works means the policy said no (no login); a dead token means log in again and retry
  the request once. For the token method the only way to "log in again" is to re-read
  ``token_file`` / the environment: the same dead token is not tried twice.
* Failed logins back off with jitter, 1 s doubling to 5 min. A login wanted while backing off
  raises StoreAuthError at once, saying how long is left: Vault is never hammered.

The Vault token lives only in the hvac client's adapter. It is never logged, never put into
an exception message or an audit event (not even its accessor), and not part of any repr.
Audit events: ``store.auth.login``, ``store.auth.renewed``, ``store.auth.failed``.

This module also holds :func:`convert_error`, the one place where hvac and requests
exceptions become rotator errors (used by the store for data requests too).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random as _random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import hvac.exceptions as hvac_errors
import requests

from rotator.audit import pipeline as audit
from rotator.audit.pipeline import redact_text
from rotator.config import VaultAuthConfig
from rotator.errors import (
    RotatorError,
    StoreAccessDenied,
    StoreAuthError,
    StoreError,
    StoreUnavailable,
)
from rotator.stores.vault_http import DeadlineExceeded, RedirectRefused

# what talking to Vault can raise, all converted into rotator errors (anything else is a bug)
CONVERTED = (hvac_errors.VaultError, requests.exceptions.RequestException, OSError, ValueError)
MIN_BACKOFF = 1.0
MAX_BACKOFF = 300.0
RENEW_FRACTION = 2 / 3  # Vault Agent's rule: renew when 2/3 of the lease has passed
BACKOFF_JITTER = 0.25  # a delay is drawn from (1 - 0.25, 1] x the nominal one


class _LoginLedger:
    """Failed AppRole logins per (Vault, mount, role_id) in this process, so that every store
    and retry together stay under Vault's user-lockout threshold."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}
        self._locked_until: dict[str, float] = {}

    def recent(self, key: str, now: float, window: float) -> int:
        """Failures that Vault still counts: its counter resets only after `window` passes
        with no failed login at all (lockout_counter_reset), not one failure at a time."""
        with self._lock:
            failures = self._failures.get(key, [])
            if failures and now - failures[-1] >= window:
                failures.clear()
            return len(failures)

    def failed(self, key: str, now: float) -> None:
        with self._lock:
            self._failures.setdefault(key, []).append(now)

    def locked(self, key: str, now: float, until: float | None = None) -> float:
        """Seconds left of a lockout we saw (0: none); with `until`, record one."""
        with self._lock:
            if until is not None:
                self._locked_until[key] = until
            return max(0.0, self._locked_until.get(key, 0.0) - now)

    def clear(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
            self._locked_until.pop(key, None)


LOGIN_LEDGER = _LoginLedger()


class VaultAuth:
    """Owns the hvac client's token: login, TTL bookkeeping, renewal, re-login, backoff."""

    def __init__(
        self,
        client: Any,
        config: VaultAuthConfig,
        *,
        store: str,
        address: str,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        environ: Mapping[str, str] | None = None,
        min_backoff: float = MIN_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self._client = client
        self.config = config
        self.method = config.method
        self.mount = (config.mount or config.method).strip("/")
        self.store = store
        self.address = address
        self._clock = clock
        self._random = random
        self._environ = environ if environ is not None else os.environ
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._lock = threading.RLock()
        # token state (no token value kept here: it lives in the client's adapter)
        self._have_token = False
        self._from_login = False  # the token came from an approle/kubernetes login of ours
        self._generation = 0
        self._login_ttl = 0.0  # TTL granted at login (what a renewal should restore)
        self._expires_at: float | None = None  # None: never (a root token, ttl 0)
        self._refresh_at: float | None = None
        self._refresh_by_login = False  # not renewable, or renewals capped by max TTL
        self._token_digest: str | None = None  # token method: SHA-256 of the token in use
        self._rejected_digest: str | None = None  # token method: a token Vault refused
        # login backoff
        self._failures = 0
        self._next_login_at = 0.0
        self._last_failure = ""
        self._failed_creds: str | None = None  # digest of the credential files that failed
        # the renewal timer (a daemon's; one-shot commands renew lazily in ensure())
        self._renewer: threading.Thread | None = None
        self._stop_renewer = threading.Event()
        self._on_trouble: Callable[[RotatorError | None], Any] | None = None
        self.trouble: str | None = None  # why the token cannot be kept alive (None: fine)

    def __repr__(self) -> str:
        return f"<VaultAuth store={self.store!r} method={self.method} mount={self.mount}>"

    # ------------------------------------------------------------------ public

    @property
    def generation(self) -> int:
        """Bumped at every successful login: lets callers see that the token changed."""
        return self._generation

    @property
    def expires_at(self) -> float | None:
        return self._expires_at

    @property
    def refresh_at(self) -> float | None:
        """When the token is next renewed (or replaced by a login), by the store's clock."""
        return self._refresh_at

    def ensure(self) -> int:
        """Make sure a live token is in place (login, renew or re-login as due); returns the
        token generation to hand back to :meth:`handle_rejection` if the request fails."""
        with self._lock:
            now = self._clock()
            if not self._have_token or (self._expires_at is not None and now >= self._expires_at):
                if self._have_token:
                    self._drop_token()
                self._login()
            elif self._refresh_at is not None and now >= self._refresh_at:
                if self._refresh_by_login:
                    self._login_keeping_current()
                else:
                    self._renew()
            return self._generation

    def maintain(self) -> None:
        """Renew or re-login if due; for a daemon's periodic timer. Raises StoreError subclasses."""
        self.ensure()

    def start_renewer(self, on_trouble: Callable[[RotatorError | None], Any] | None = None
                      ) -> None:
        """Keep the token alive on a timer, like Vault Agent: at 2/3 of its TTL renew it (or
        log in afresh where renewal is refused or capped), whether or not requests are made.

        When the token cannot be kept alive (login refused, a token_file token that cannot be
        renewed and is not replaced), the failure is audited (``store.auth.failed``, level
        error), :attr:`trouble` says why, and `on_trouble` is called (the daemon marks the
        store not ready on /readyz). Stopped by :meth:`stop_renewer` (the store's close)."""
        with self._lock:
            if self._renewer is not None:
                return
            self._on_trouble = on_trouble
            self._stop_renewer.clear()
            self._renewer = threading.Thread(target=self._renew_loop, daemon=True,
                                             name=f"vault-renew-{self.store}")
            self._renewer.start()

    def stop_renewer(self, timeout: float = 5.0) -> None:
        self._stop_renewer.set()
        thread, self._renewer = self._renewer, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _renew_loop(self) -> None:
        stalled_until = 0.0
        while True:
            now = self._clock()
            with self._lock:
                if not self._have_token:
                    wake = max(self._next_login_at, now)
                elif self._refresh_at is None:
                    wake = now + 300  # a token without TTL: nothing to renew; look again later
                else:
                    wake = max(self._refresh_at, stalled_until)
            if self._stop_renewer.wait(min(300.0, max(0.05, wake - now))):
                return
            with self._lock:
                before = self._expires_at
                now = self._clock()
                due = self._refresh_at is not None and now >= self._refresh_at
            try:
                self.ensure()
            except RotatorError as exc:
                self._trouble(exc)
                stalled_until = self._clock() + 1.0
                continue
            except Exception as exc:  # the timer must outlive any bug
                self._trouble(StoreError(self.store, "", f"token renewal failed: "
                                         f"unexpected {type(exc).__name__}"))
                stalled_until = self._clock() + 5.0
                continue
            now = self._clock()
            expires = self._expires_at
            if due and expires is not None and before is not None and expires <= before + 1:
                # renewal was due but the expiry did not move: the token cannot be kept alive
                left = max(0.0, expires - now)
                self._trouble(StoreAuthError(
                    self.store, "", f"the Vault token expires in {left:.0f}s and could not be "
                    "renewed or replaced" + (" (put a fresh token in its source)"
                                             if self.method == "token" else "")))
                stalled_until = now + max(1.0, left / 2)
                continue
            stalled_until = 0.0
            if self.trouble is not None:
                self.trouble = None
                audit.emit("store.auth.renewed", store=self.store, method=self.method,
                           ttl_s=int((expires or now) - now))
                if self._on_trouble is not None:
                    self._on_trouble(None)  # recovered

    def _trouble(self, exc: RotatorError) -> None:
        self.trouble = exc.diagnostics()
        self._failed(exc.kind, exc.diagnostics(), level="error", timer=True)
        if self._on_trouble is not None:
            with contextlib.suppress(Exception):
                self._on_trouble(exc)

    def handle_rejection(self, generation: int, exc: BaseException) -> bool:
        """A request with token `generation` got 401/403. True: a new token is in place,
        retry the request once. False: the token is fine, the policy said no."""
        with self._lock:
            if generation != self._generation:
                return True  # another thread logged in meanwhile: retry with the new token
            if _status(exc) == 403 and self._token_works():
                return False
            self._failed("StoreAuthError",
                         "Vault rejected the token (revoked or expired); logging in again")
            if self.method == "token":
                self._rejected_digest = self._token_digest
            self._drop_token()
            self._login()
            return True

    def revoke(self, timeout: float) -> None:
        """Best effort: revoke a token we obtained by logging in (never an operator's token)."""
        with self._lock:
            if not (self._have_token and self._from_login):
                return
            # closing must not fail: if Vault is away, the token's TTL ends it anyway
            with contextlib.suppress(*CONVERTED):
                self._client.adapter.post("/v1/auth/token/revoke-self", timeout=timeout)
            self._drop_token()

    # ------------------------------------------------------------------ login

    def _login_keeping_current(self) -> None:
        """A scheduled re-login while the current token still works: if it fails, keep going
        with the current token until it expires (the failure is audited and backs off)."""
        try:
            self._login()
        except StoreError:
            now = self._clock()
            if self._expires_at is not None and now >= self._expires_at:
                raise

    def _creds_digest(self) -> str | None:
        """SHA-256 over the credential files as they are now, modification time included (None
        if unreadable): a changed file (a corrected secret_id, a new token, or a `touch` after
        an unlock) is worth an attempt at once."""
        paths = {"token": [self.config.token_file], "approle": [self.config.role_id_file,
                 self.config.secret_id_file], "kubernetes": [self.config.jwt_file]}[self.method]
        digest = hashlib.sha256()
        for path in paths:
            if path is None:
                return None
            try:
                digest.update(path.read_bytes() + str(path.stat().st_mtime_ns).encode() + b"\0")
            except OSError:
                return None
        return digest.hexdigest()

    def _login(self) -> None:
        now = self._clock()
        changed = self._failed_creds is not None and self._creds_digest() not in (
            None, self._failed_creds)
        if now < self._next_login_at and not changed:
            left = self._next_login_at - now
            raise StoreAuthError(
                self.store, "",
                f"Vault {self.method} login is backing off after {self._failures} failed "
                f"attempt(s); next attempt in {left:.1f}s (last failure: {self._last_failure})",
                hint="fix the cause above; rotator retries by itself",
            )
        previous = self._client.token
        try:
            ttl, renewable = self._method_login()
        except RotatorError as err:
            self._failed_creds = self._creds_digest()
            # a scheduled re-login that failed: keep using the current token while it lives
            self._client.token = previous if self._have_token else None
            self._failures += 1
            nominal = min(self._max_backoff, self._min_backoff * 2 ** (self._failures - 1))
            delay = nominal * (1 - BACKOFF_JITTER * self._random())
            self._next_login_at = self._clock() + delay
            self._last_failure = err.message.removeprefix(f"store {self.store!r}, /: ")
            self._failed(err.kind, err.diagnostics(), retry_in_s=round(delay, 3))
            raise
        self._failures = 0
        self._next_login_at = 0.0
        self._last_failure = ""
        self._failed_creds = None
        self._set_lease(ttl, renewable, at_login=True)
        self._have_token = True
        self._generation += 1
        audit.emit("store.auth.login", store=self.store, method=self.method,
                   ttl_s=int(ttl), renewable=renewable)

    def _method_login(self) -> tuple[float, bool]:
        if self.method == "token":
            return self._token_login()
        lockout_key = ""
        if self.method == "approle":
            assert self.config.role_id_file and self.config.secret_id_file  # config checks it
            role_id = _read_secret_file(self.config.role_id_file, "role_id_file", self.store)
            secret_id = _read_secret_file(self.config.secret_id_file, "secret_id_file", self.store)
            body = {"role_id": role_id, "secret_id": secret_id}
            lockout_key = self._approle_guard(role_id, secret_id)
        else:
            jwt = _read_secret_file(self.config.jwt_file, "jwt_file", self.store)
            body = {"role": self.config.role, "jwt": jwt}
        self._client.token = None  # a dead token sent along can make Vault refuse the login
        where = f"auth/{self.mount}/login"
        try:
            reply = self._client.adapter.post(f"/v1/{where}", json=body)
        except CONVERTED as exc:
            if self.method == "approle":
                raise self._approle_refused(exc, where, lockout_key, body["role_id"]) from None
            raise self._login_error(exc, where) from None
        finally:
            body.clear()
        if self.method == "approle":
            LOGIN_LEDGER.clear(lockout_key)
        auth = reply.get("auth") if isinstance(reply, dict) else None
        token = auth.get("client_token") if isinstance(auth, dict) else None
        if not token:
            raise StoreAuthError(self.store, "", f"{where}: the login reply has no token "
                                 f"(is {self.address} a Vault server?)")
        self._client.token = token
        self._from_login = True
        return _seconds(auth.get("lease_duration")), bool(auth.get("renewable"))

    def _approle_guard(self, role_id: str, secret_id: str) -> str:
        """Refuse to try a login that could lock the role out (returns the ledger key).

        Vault locks a role_id after lockout_threshold failures within lockout_window, and
        then refuses even the right secret_id. Unchanged credentials that failed get at most
        threshold - 2 attempts per window; the last slot below the threshold is kept for a
        corrected secret_id file, which is tried at once."""
        key = hashlib.sha256(f"{self.address}\0{self.mount}\0{role_id}".encode()).hexdigest()
        now = self._clock()
        window = self.config.lockout_window
        unchanged = self._failed_creds is not None and self._creds_digest() == self._failed_creds
        locked = LOGIN_LEDGER.locked(key, now)
        if locked and unchanged:
            raise StoreAuthError(
                self.store, "", f"Vault approle login not attempted: the role is locked out "
                f"(seen {int(window - locked)}s ago); next attempt in {locked:.0f}s or when "
                "role_id_file/secret_id_file change", hint=self._unlock_hint(role_id))
        failures = LOGIN_LEDGER.recent(key, now, window)
        allowed = self.config.lockout_threshold - (2 if unchanged else 1)
        if failures >= allowed:
            raise StoreAuthError(
                self.store, "",
                f"Vault approle login not attempted: {failures} failed login(s) for this role in "
                f"the last {window:g}s, and {self.config.lockout_threshold} would lock it out "
                "(auth.lockout_threshold)",
                hint="fix secret_id_file: a changed file is tried at the next attempt",
            )
        return key

    def _approle_refused(self, exc: BaseException, where: str, key: str, role_id: str
                         ) -> RotatorError:
        status = _status(exc)
        if status not in (400, 403):
            return self._login_error(exc, where)
        now = self._clock()
        LOGIN_LEDGER.failed(key, now)
        if status == 403:  # a wrong secret_id is a 400; a 403 at login means "locked out"
            LOGIN_LEDGER.locked(key, now, until=now + self.config.lockout_window)
            return StoreAuthError(
                self.store, "",
                f"Vault approle login at {where} was refused with \"permission denied\": the "
                "role is locked out after repeated failed logins (Vault's user lockout; even the "
                "right secret_id is refused until it ends, 15 min by default)",
                hint=self._unlock_hint(role_id),
            )
        return self._login_error(exc, where)

    def _unlock_hint(self, role_id: str) -> str:
        return ("unlock it now: vault write -f sys/locked-users/"
                f"$(vault read -field=accessor sys/auth/{self.mount})/unlock/{role_id}")

    def _token_login(self) -> tuple[float, bool]:
        token, source = self._read_token()
        digest = hashlib.sha256(token.encode()).hexdigest()
        if digest == self._rejected_digest:
            raise StoreAuthError(
                self.store, "",
                f"the Vault token from {source} was rejected (revoked or expired) and has not "
                "been replaced",
                hint=f"put a fresh token in {source}",
            )
        self._client.token = token
        self._from_login = False
        try:
            reply = self._client.adapter.get("/v1/auth/token/lookup-self")
        except (hvac_errors.Forbidden, hvac_errors.Unauthorized):
            self._client.token = None
            self._rejected_digest = digest
            raise StoreAuthError(
                self.store, "",
                f"Vault at {self.address} rejected the token from {source} (permission denied: "
                "revoked, expired, or not a token of this Vault)",
                hint=f"put a valid token in {source}",
            ) from None
        except CONVERTED as exc:
            self._client.token = None
            raise convert_error(exc, store=self.store, path="", address=self.address,
                                action="look up the token") from None
        self._token_digest = digest
        self._rejected_digest = None
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, dict):
            raise StoreAuthError(self.store, "", "auth/token/lookup-self: unexpected reply")
        return _seconds(data.get("ttl")), bool(data.get("renewable"))

    def _read_token(self) -> tuple[str, str]:
        if self.config.token_file is not None:
            source = f"token_file {self.config.token_file}"
            return _read_secret_file(self.config.token_file, "token_file", self.store), source
        name = self.config.token_env
        value = (self._environ.get(name) or "").strip()
        if not value:
            raise StoreAuthError(
                self.store, "", f"no Vault token: environment variable {name} is not set",
                hint=f"export {name}, or set token_file in the store's auth section",
            )
        return value, f"environment variable {name}"

    def _login_error(self, exc: BaseException, where: str) -> RotatorError:
        status = _status(exc)
        if status in (400, 401, 403):
            return StoreAuthError(
                self.store, "",
                f"Vault {self.method} login at {where} was refused: {vault_message(exc)}",
                hint=_LOGIN_HINTS.get(self.method),
            )
        if isinstance(exc, hvac_errors.InvalidPath):
            return StoreAuthError(
                self.store, "", f"{where}: no such auth method at {self.address} (404)",
                hint=f"enable it (vault auth enable {self.method}) or set auth.mount",
            )
        return convert_error(exc, store=self.store, path="", address=self.address,
                             action=f"log in ({where})")

    # ------------------------------------------------------------------ renewal

    def _renew(self) -> None:
        increment = self.config.renew_increment
        body = {"increment": int(increment)} if increment else {}
        try:
            reply = self._client.adapter.post("/v1/auth/token/renew-self", json=body)
        except CONVERTED as exc:
            status = _status(exc)
            if status in (400, 401, 403):
                self._failed("StoreAuthError", f"token renewal refused: {vault_message(exc)}; "
                             "logging in again")
                # 400: e.g. past the max TTL; 403 with a token that works: the policy does not
                # allow renew-self. Either way the token still works for now.
                if status == 400 or (status == 403 and self._token_works()):
                    self._refresh_by_login = True
                    self._login_keeping_current()
                else:
                    if self.method == "token":
                        self._rejected_digest = self._token_digest
                    self._drop_token()
                    self._login()
                return
            # Vault unreachable, sealed, 5xx: the token is still valid; the request decides.
            err = convert_error(exc, store=self.store, path="", address=self.address,
                                action="renew the token")
            self._failed(err.kind, err.diagnostics())
            return
        auth = reply.get("auth") if isinstance(reply, dict) else None
        if not isinstance(auth, dict):
            return
        ttl = _seconds(auth.get("lease_duration"))
        self._set_lease(ttl, bool(auth.get("renewable")), at_login=False)
        wanted = float(increment) if increment else self._login_ttl
        if ttl + 1 < wanted:
            # Capped by the token's max TTL: renewing again gains ever less. Log in afresh
            # at 2/3 of what is left, as Vault Agent does.
            self._refresh_by_login = True
        audit.emit("store.auth.renewed", store=self.store, method=self.method, ttl_s=int(ttl))

    # ------------------------------------------------------------------ helpers

    def _failed(self, error_class: str, diagnosis: str, *, level: str = "warning",
                **extra: Any) -> None:
        audit.emit("store.auth.failed", level=level, outcome="failure",
                   error_class=error_class, store=self.store, method=self.method,
                   diagnosis=diagnosis, **extra)

    def _set_lease(self, ttl: float, renewable: bool, *, at_login: bool) -> None:
        now = self._clock()
        if at_login:
            self._login_ttl = ttl
        if ttl <= 0:  # a token without a TTL (root) never expires and is never renewed
            self._expires_at = self._refresh_at = None
            self._refresh_by_login = False
            return
        self._expires_at = now + ttl
        self._refresh_at = now + ttl * RENEW_FRACTION
        self._refresh_by_login = not renewable

    def _token_works(self) -> bool:
        try:
            self._client.adapter.get("/v1/auth/token/lookup-self")
        except (hvac_errors.Forbidden, hvac_errors.Unauthorized):
            return False
        except CONVERTED as exc:
            raise convert_error(exc, store=self.store, path="", address=self.address,
                                action="look up the token") from None
        return True

    def _drop_token(self) -> None:
        self._client.token = None
        self._have_token = False
        self._from_login = False
        self._expires_at = self._refresh_at = None


_LOGIN_HINTS = {
    "approle": "check role_id_file and secret_id_file (a secret ID may have expired or run out "
               "of uses: issue a new one)",
    "kubernetes": "check the role's bound service account names/namespaces and jwt_file",
    "token": "check the token",
}


def _read_secret_file(path: Path, field: str, store: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise StoreAuthError(store, "", f"auth.{field} {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise StoreAuthError(store, "", f"auth.{field} {path}: cannot read ({reason})") from None
    if not value:
        raise StoreAuthError(store, "", f"auth.{field} {path}: file is empty")
    return value


def _seconds(value: Any) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 0.0


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    for kind, code in _STATUS_OF.items():
        if isinstance(exc, kind):
            return code
    return None


_STATUS_OF: dict[type[BaseException], int] = {
    hvac_errors.InvalidRequest: 400,
    hvac_errors.Unauthorized: 401,
    hvac_errors.Forbidden: 403,
    hvac_errors.InvalidPath: 404,
    hvac_errors.RateLimitExceeded: 429,
    hvac_errors.InternalServerError: 500,
    hvac_errors.VaultNotInitialized: 501,
    hvac_errors.BadGateway: 502,
    hvac_errors.VaultDown: 503,
}


def vault_message(exc: BaseException) -> str:
    """Vault's own error text (not secret), on one line, without hvac's 'on GET url' suffix."""
    if isinstance(exc, hvac_errors.VaultError):
        errors = exc.errors
        if errors:
            text = "; ".join(str(e) for e in errors)
        else:
            text = str(exc.args[0]) if exc.args and exc.args[0] else (exc.text or "")
        text = " ".join(text.replace("1 error occurred:", "").replace("* ", "").split())
        return redact_text(text[:300])
    return ""


def convert_error(
    exc: BaseException, *, store: str, path: str, address: str, action: str
) -> StoreError:
    """An hvac or requests exception as a rotator StoreError (the generic mapping; the store
    refines 403 and 404 with the path and capability)."""
    if isinstance(exc, StoreError):
        return exc
    status = _status(exc)
    message = vault_message(exc)
    if isinstance(exc, hvac_errors.VaultError):
        if status == 503:
            return StoreUnavailable(
                store, path,
                f"cannot {action}: Vault at {address} is sealed or standby (503"
                + (f": {message})" if message else ")"),
                hint="unseal Vault, or point url at the active node or the load balancer",
            )
        if status == 429:
            return StoreUnavailable(
                store, path, f"cannot {action}: throttled by Vault at {address} (429"
                + (f": {message})" if message else ")"),
                retry_after=_retry_after(exc),
            )
        if (status is not None and status >= 500) or isinstance(exc, hvac_errors.UnexpectedError):
            shown = status if status is not None else "an unexpected status"
            return StoreUnavailable(
                store, path, f"cannot {action}: Vault at {address} answered {shown}"
                + (f" ({message})" if message else ""),
                retry_after=_retry_after(exc),
            )
        if status == 401:
            return StoreAuthError(store, path, f"cannot {action}: Vault says unauthorized"
                                  + (f" ({message})" if message else ""))
        if status == 403:
            return StoreAccessDenied(store, path, f"cannot {action}: permission denied")
        if status == 404:
            return StoreError(store, path, f"cannot {action}: not found at {address}")
        return StoreError(store, path, f"cannot {action}: Vault said: {message or 'bad request'}")
    if isinstance(exc, requests.exceptions.RequestException):
        return StoreUnavailable(store, path, f"cannot {action}: {_network_reason(exc, address)}",
                                hint=_network_hint(exc))
    if isinstance(exc, OSError):  # e.g. requests cannot open the ca_cert bundle
        return StoreError(store, path, f"cannot {action}: {exc.strerror or type(exc).__name__}"
                          + (f" ({exc.filename})" if exc.filename else ""))
    return StoreError(store, path, f"cannot {action}: unexpected {type(exc).__name__} "
                      f"talking to Vault at {address}")


def _retry_after(exc: BaseException) -> float | None:
    raw = getattr(exc, "retry_after", None)
    try:
        return float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def _network_reason(exc: BaseException, address: str) -> str:
    chain = _chain(exc)
    if isinstance(exc, RedirectRefused):
        return f"Vault at {address} answered with a redirect; {exc}"
    if isinstance(exc, DeadlineExceeded):
        return f"Vault at {address} did not answer in time (total deadline: {exc})"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS verification with Vault at {address} failed"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"connecting to Vault at {address} timed out"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"Vault at {address} did not answer in time (read timeout)"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return f"cannot connect to Vault at {address}: connection refused"
    if any(isinstance(e, ConnectionResetError) for e in chain) or "reset" in str(exc).lower():
        return f"the connection to Vault at {address} was reset"
    text = " ".join(str(e) for e in chain).lower()
    if "name or service not known" in text or "nodename nor servname" in text \
            or "name resolution" in text:
        return f"cannot resolve the host of Vault at {address}"
    if "remotedisconnected" in text or "aborted" in text:
        return f"Vault at {address} closed the connection without answering"
    return f"cannot reach Vault at {address} ({type(exc).__name__})"


def _network_hint(exc: BaseException) -> str | None:
    if isinstance(exc, RedirectRefused):
        return ("point url at the node that answers (the active node or the load balancer), "
                "or list the redirect's host in the store setting redirect_hosts")
    if isinstance(exc, requests.exceptions.SSLError):
        return "set ca_cert to the CA bundle that signed Vault's certificate"
    return "check url and that Vault is running and reachable from here"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        nested = current.args[0] if current.args and isinstance(current.args[0], BaseException) \
            else None
        reason = getattr(current, "reason", None)
        current = current.__cause__ or current.__context__ or (
            reason if isinstance(reason, BaseException) else nested)
    return seen
