"""The SecretStore interface every backend implements (file, Vault KV v2, Secrets Manager).

A store holds JSON-object records at paths. Every write is a compare-and-set against
the version the caller read, so two writers can never silently clobber each other:

* `expected_version=None` — the record must not exist yet (Vault `cas=0`);
* `expected_version=V`   — V must still be the current version, else StoreConflict.

Errors a method may raise (and nothing else; dependency errors are converted at the edge):
RecordError (a record that is not a JSON object), StoreAccessDenied, StoreAuthError,
StoreConflict (write only), StoreUnavailable (retryable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Record:
    data: dict[str, Any] = field(repr=False)
    version: str
    # store-specific facts for status and audit (created_time, custom_metadata, ...)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteResult:
    version: str
    # earlier current version, if the store keeps it (AWSPREVIOUS, previous file, KV version)
    previous_version: str | None = None


@runtime_checkable
class SecretStore(Protocol):
    name: str

    def read(self, path: str) -> Record | None:
        """The current record at `path`, or None if there is none."""
        ...

    def write(
        self,
        path: str,
        data: dict[str, Any],
        *,
        expected_version: str | None,
        request_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> WriteResult:
        """Replace the record at `path` if its version is still `expected_version`.

        `request_id` makes a retried write idempotent where the store supports it
        (Secrets Manager ClientRequestToken); `metadata` are non-secret labels
        (Vault custom_metadata, AWS tags) saying who wrote the record.
        """
        ...

    def check(self) -> None:
        """Prove the store is reachable and our identity is accepted, writing nothing."""
        ...

    def describe(self) -> str:
        """Where this store is, for messages: e.g. 'vault https://vault:8200 mount secret'."""
        ...

    def close(self) -> None: ...
