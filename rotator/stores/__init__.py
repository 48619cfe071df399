"""Secret store backends. `open_stores` builds each configured store once per process.

Backends are imported only when configured: hvac for Vault, boto3 (about 170 ms and 20 MB)
for AWS, so a file-only installation never pays for them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from rotator.config import AwsStoreConfig, FileStoreConfig, StoreConfig, VaultStoreConfig
from rotator.stores.base import Record, SecretStore, WriteResult

__all__ = ["Record", "SecretStore", "StoreSet", "WriteResult", "build_store"]


def build_store(name: str, config: StoreConfig) -> SecretStore:
    if isinstance(config, FileStoreConfig):
        from rotator.stores.file import FileStore

        return FileStore(name, config.path)
    if isinstance(config, VaultStoreConfig):
        from rotator import hardening
        from rotator.stores.vault import VaultStore

        if config.auth.method == "token" and config.auth.token_file is None:
            hardening.withhold([config.auth.token_env])  # a custom token_env leaves os.environ too
        return VaultStore(name, config, environ=hardening.environ())
    if isinstance(config, AwsStoreConfig):
        from rotator.stores.aws import AwsStore

        return AwsStore(name, config)
    raise TypeError(f"unknown store config {type(config).__name__}")


class StoreSet:
    """The process's stores, created lazily on first use and reused after."""

    def __init__(self, configs: Mapping[str, StoreConfig]) -> None:
        self._configs = dict(configs)
        self._stores: dict[str, SecretStore] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> SecretStore:
        store = self._stores.get(name)
        if store is None:
            with self._lock:
                store = self._stores.get(name)
                if store is None:
                    store = self._stores[name] = build_store(name, self._configs[name])
        return store

    def names(self) -> list[str]:
        return sorted(self._configs)

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()
