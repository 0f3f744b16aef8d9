"""The process's long-lived clients, made on first use from the settings and kept for the process's life.

Functions hosts reuse a worker process for many invocations: one credential (its token cache), one AVX session
(kept-alive connections) and one Key Vault client (its challenge cache) serve them all.
"""

from __future__ import annotations

import threading
from typing import Any

from shared import identity
from shared.avx import AvxClient
from shared.keyvault import KeyVaultStore
from shared.settings import Settings, load_settings, reset_settings

_lock = threading.RLock()
_clients: dict[str, Any] = {}


def settings() -> Settings:
    return load_settings()


def _cached(name: str, build: Any) -> Any:
    with _lock:
        if name not in _clients:
            _clients[name] = build()
        return _clients[name]


def avx_client() -> AvxClient:
    return _cached("avx", lambda: AvxClient(settings().avx))


def key_vault_store() -> KeyVaultStore:
    def build() -> KeyVaultStore:
        s = settings()
        return KeyVaultStore(s.key_vault, identity.managed_identity(s.identity))

    return _cached("keyvault", build)


def reset() -> None:
    """Close and forget every client and the settings (tests and the local stack change the environment)."""
    with _lock:
        for client in _clients.values():
            close = getattr(client, "close", None)
            if close:
                close()
        _clients.clear()
    identity.reset_credentials()
    reset_settings()
