"""rotator's error tree. Every error says what went wrong and what to do about it.

    RotatorError                      exit 1 unless a subclass says otherwise
    ├── InternalError                 a bug: an exception nothing converted
    ├── UsageError                    exit 2: the operator's input is wrong
    │   ├── ConfigError               the TOML config (names the key path)
    │   └── InputError                a file, key, certificate or argument
    │       └── KeyMaterialError      a private key / certificate that cannot be used
    ├── RecordError                   a record in a store is malformed
    ├── StoreError                    a secret store refused or failed (carries store + path)
    │   ├── RecordNotFound
    │   ├── StoreAccessDenied         names the capability / IAM action that is missing
    │   ├── StoreAuthError            could not log in to the store
    │   ├── StoreConflict             compare-and-set lost: another writer got there first
    │   └── StoreUnavailable          retryable: sealed, throttled, unreachable, 5xx
    └── EndpointError                 the token endpoint
        ├── TokenRejected             a definitive OAuth error (invalid_grant, ...)
        ├── EndpointUnavailable       retryable: 5xx, 429, timeouts, resets, HTML pages
        ├── EndpointProtocolError     a 200 that is not a usable token response
        └── TokenVerificationFailed   a new token failed its probe (`verify`); not written

Dependency errors (hvac, botocore, requests) are converted at the edge of the
module that calls the dependency and never travel further. Messages never hold
secret values: they name fields, paths and files instead.
"""

from __future__ import annotations

from rotator.redaction import redact_text
from rotator.sanitize import clean_text, sanitize_remote

# A diagnosis is one line for a terminal, a journal and a JSON field: bounded whatever the
# message holds (remote values are capped where they enter; this is the backstop).
MAX_DIAGNOSIS = 1000


class RotatorError(Exception):
    """Base of everything rotator raises on purpose."""

    exit_code = 1
    retryable = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        """One line: what went wrong, then what to do. Every path that shows an error (audit
        lines, `rotator status`, STATUS=, /readyz, state.json, `rotate` output) takes it from
        here: control characters escaped, secrets masked, length capped."""
        text = self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        text = clean_text(" ".join(text[: 4 * MAX_DIAGNOSIS].split()))
        text = redact_text(text)
        return text if len(text) <= MAX_DIAGNOSIS else text[: MAX_DIAGNOSIS - 1] + "…"

    @property
    def kind(self) -> str:
        return type(self).__name__


class InternalError(RotatorError):
    """A bug: something raised that no module converted. Reported without its message,
    which could hold anything, and without a traceback (ROTATOR_DEBUG=1 shows one)."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(
            f"internal error ({type(exc).__name__})",
            hint="please report it; rerun with ROTATOR_DEBUG=1 for a traceback",
        )
        self.original_type = type(exc).__name__


class UsageError(RotatorError):
    exit_code = 2


class ConfigError(UsageError):
    pass


class InputError(UsageError):
    pass


class KeyMaterialError(InputError):
    pass


class RecordError(RotatorError):
    """A record read from a store does not have the shape CONTRACT.md gives it."""

    def __init__(
        self, where: str, message: str, *, hint: str | None = None, version: str | None = None
    ) -> None:
        super().__init__(f"{where}: {message}", hint=hint)
        self.where = where
        # The store's version of the unusable record, when known: lets a writer replace it
        # with compare-and-set instead of being stuck behind it.
        self.version = version


class StoreError(RotatorError):
    def __init__(
        self, store: str, path: str, message: str, *, hint: str | None = None
    ) -> None:
        super().__init__(f"store {store!r}, {path or '/'}: {message}", hint=hint)
        self.store = store
        self.path = path


class RecordNotFound(StoreError):
    pass


class StoreAccessDenied(StoreError):
    pass


class StoreAuthError(StoreError):
    retryable = True


class StoreConflict(StoreError):
    """Compare-and-set failed: someone else wrote the record since we read it."""


class StoreUnavailable(StoreError):
    retryable = True

    def __init__(
        self,
        store: str,
        path: str,
        message: str,
        *,
        hint: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(store, path, message, hint=hint)
        self.retry_after = retry_after


class EndpointError(RotatorError):
    def __init__(self, url: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{url}: {message}", hint=hint)
        self.url = url


class TokenRejected(EndpointError):
    """The endpoint answered with an OAuth error; retrying the same request will not help."""

    def __init__(
        self, url: str, error: str, description: str | None, *, hint: str | None = None
    ) -> None:
        # Both come from the endpoint: shown capped and escaped; kept raw (the caller caps
        # them) for the retry policy's matching.
        desc = f" ({sanitize_remote(description)})" if description else ""
        super().__init__(url, f"token request rejected: {sanitize_remote(error)}{desc}", hint=hint)
        self.error = error
        self.description = description or ""


class EndpointUnavailable(EndpointError):
    retryable = True

    def __init__(
        self,
        url: str,
        message: str,
        *,
        hint: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(url, message, hint=hint)
        self.retry_after = retry_after
        self.status = status


class EndpointProtocolError(EndpointError):
    """A reply we cannot use. Often a proxy or maintenance page: worth a later retry."""

    retryable = True


class TokenVerificationFailed(EndpointError):
    """A new token was refused by its own instance (`verify`): a 4xx to the probe. Not retried
    before retry_max: an app whose scopes or policies changed needs the operator."""

    def __init__(
        self, url: str, probe: str, status: int | None, error_code: str | None, message: str
    ) -> None:
        why = f"HTTP {status}" if status is not None else "no probe"
        if error_code:
            why += f" {sanitize_remote(error_code, 80)}"
        super().__init__(url, f"verify={probe} failed ({why}): {message}",
                         hint="check the app's OAuth scopes (api) and policies, and the user's access")
        self.probe = probe
        self.status = status
        self.error_code = error_code
