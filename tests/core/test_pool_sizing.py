"""Connection pools sized to the worker's concurrency (issue 28): one rule (settings.connection_pool_size), used by
the AVX session, the Key Vault client and every table client, so a burst at the configured concurrency never
discards a connection ("Connection pool is full")."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared import context as app_context
from shared.azure import identity
from shared.core.errors import SettingsError
from shared.core.settings import WORKER_DEFAULT_MAX_THREADS, Settings, connection_pool_size
from tests.standins.stack import KEY_VAULT_RESOURCE, StandIns

THREADS = 16  # local.settings.sample.json's PYTHON_THREADPOOL_THREAD_COUNT


def test_one_connection_per_worker_thread() -> None:
    assert connection_pool_size(16) == 16
    assert connection_pool_size(1) == 1
    assert connection_pool_size(None) == WORKER_DEFAULT_MAX_THREADS == 32  # ThreadPoolExecutor: min(32, cores + 4)


def test_the_thread_count_is_read_and_checked_once() -> None:
    assert Settings({"PYTHON_THREADPOOL_THREAD_COUNT": "16"}).worker.pool_size == 16
    assert Settings({}).worker.thread_count is None
    assert Settings({}).worker.pool_size == 32
    with pytest.raises(SettingsError, match="PYTHON_THREADPOOL_THREAD_COUNT"):
        _ = Settings({"PYTHON_THREADPOOL_THREAD_COUNT": "sixteen"}).worker


def pool_sizes(client: object) -> set[int]:
    """The pool sizes of every requests session reachable from `client` (through the SDK's pipeline objects)."""
    import requests

    sizes: set[int] = set()
    seen: set[int] = set()
    stack: list[tuple[object, int]] = [(client, 0)]
    while stack:
        current, depth = stack.pop()
        if id(current) in seen or depth > 8:
            continue
        seen.add(id(current))
        if isinstance(current, requests.Session):
            sizes |= {adapter._pool_maxsize for adapter in current.adapters.values()}  # type: ignore[attr-defined]
            continue
        children = current if isinstance(current, (list, tuple)) else getattr(current, "__dict__", {}).values()
        stack.extend((child, depth + 1) for child in children if not isinstance(child, (str, bytes, int, float)))
    return sizes


def test_every_client_gets_the_pool_size(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHON_THREADPOOL_THREAD_COUNT", "7")
    app_context.reset()
    assert pool_sizes(app_context.avx_client()) == {7}
    assert pool_sizes(app_context.key_vault_store()) == {7}
    assert pool_sizes(app_context.pending_store()) == {7}
    assert pool_sizes(app_context.idempotency_store()) == {7}


def test_a_burst_at_the_configured_concurrency_discards_no_connection(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PYTHON_THREADPOOL_THREAD_COUNT", str(THREADS))
    app_context.reset()
    identity.reset_credentials()  # no token yet: a cold instance, every thread of the burst needs one at once
    token_requests = len(standins.identity.token_requests(KEY_VAULT_RESOURCE))
    items = [standins.avx.add_certificate(f"pooled{i}.contoso.com") for i in range(2 * THREADS)]
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    with ThreadPoolExecutor(max_workers=THREADS) as pool:  # the host runs at most THREADS invocations at once
        answers = list(pool.map(lambda item: call_webhook({"resourceId": item.resource_id}), items))
    assert [status for status, _ in answers] == [200] * len(items)
    # One identity request for the whole burst (azure-identity alone sent one per thread that found no token: up to
    # 16 at once, more than the identity client's pool of 10 holds).
    assert len(standins.identity.token_requests(KEY_VAULT_RESOURCE)) - token_requests == 1
    full = [r.getMessage() for r in caplog.records if "Connection pool is full" in r.getMessage()]
    assert full == []
