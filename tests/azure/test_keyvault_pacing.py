"""Key Vault writes are paced at the vault's documented limit by one limiter per vault, shared by the instance's
threads (issue 28): a burst of renewals causes no 429 wave; a 429 that still comes is honoured as before
(tests/appviewx/test_load.py)."""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.azure import keyvault
from shared.core.pacing import WindowLimit, WindowLimiter, forget_old, wait_seconds
from tests.standins.stack import StandIns

# -- the rule (pure, fake clock) ------------------------------------------------------------------------------------


def test_the_limit_is_the_documented_write_budget() -> None:
    # "Azure Key Vault service limits": 300 create secret + import certificate + import key per vault per 10 s.
    assert keyvault.KEY_VAULT_WRITE_LIMIT == WindowLimit(count=300, window_seconds=10.0)


def test_room_in_the_window_means_now() -> None:
    limit = WindowLimit(3, 10.0)
    assert wait_seconds(0, deque(), 5.0, limit) == 0.0
    assert wait_seconds(1, deque([2.0]), 5.0, limit) == 0.0


def test_a_full_window_waits_for_its_oldest_ended_call_to_leave() -> None:
    limit = WindowLimit(3, 10.0)
    assert wait_seconds(1, deque([1.0, 2.0]), 5.0, limit) == 6.0
    assert wait_seconds(0, deque([1.0, 2.0, 3.0]), 5.0, limit) == 6.0


def test_calls_in_flight_hold_their_places_until_they_end() -> None:
    # A call's place is held from its start to a window after its end: the vault counted it somewhere in between.
    assert wait_seconds(3, deque(), 5.0, WindowLimit(3, 10.0)) is None


def test_ended_calls_leave_the_window_a_window_after_their_end() -> None:
    limit = WindowLimit(3, 10.0)
    ended = deque([1.0, 2.0, 3.0])
    forget_old(ended, 11.0, limit)
    assert list(ended) == [2.0, 3.0]
    forget_old(ended, 100.0, limit)
    assert not ended


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        WindowLimit(0, 10.0)
    with pytest.raises(ValueError):
        WindowLimit(3, 0.0)


def test_threads_never_exceed_the_limit_in_any_window() -> None:
    limit = WindowLimit(3, 0.3)
    limiter = WindowLimiter(limit)
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def call(_: int) -> None:
        with limiter.slot():
            started = time.monotonic()
            time.sleep(0.02)
            with lock:
                spans.append((started, time.monotonic()))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(call, range(10)))
    starts = sorted(start for start, _ in spans)
    ends = sorted(end for _, end in spans)
    # Any call starts at least a window after the call `count` places before it ended.
    for i in range(limit.count, len(starts)):
        assert starts[i] >= ends[i - limit.count] + limit.window_seconds - 0.005


def test_a_failing_call_still_counts_and_frees_its_place() -> None:
    limiter = WindowLimiter(WindowLimit(1, 0.05))
    with pytest.raises(RuntimeError), limiter.slot():
        raise RuntimeError("Key Vault answered 500")
    with limiter.slot() as waited:
        assert waited >= 0.04


def test_one_limiter_per_vault() -> None:
    first = keyvault.write_limiter("https://kv-one.vault.azure.net")
    assert keyvault.write_limiter("https://KV-ONE.vault.azure.net/") is first
    assert keyvault.write_limiter("https://kv-two.vault.azure.net") is not first
    assert first.limit == keyvault.KEY_VAULT_WRITE_LIMIT


# -- the app, through its webhook, against the throttling Key Vault stand-in ----------------------------------------


def test_a_burst_of_renewals_is_paced_instead_of_throttled(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stand-in throttles at 4 imports per second (a small window keeps the test short); the app's limiter is
    # given the same limit, as in Azure it has the vault's documented one.
    small = WindowLimit(4, 1.0)
    monkeypatch.setattr(keyvault, "KEY_VAULT_WRITE_LIMIT", small, raising=False)
    monkeypatch.setattr(keyvault, "_write_limiters", {}, raising=False)
    items = [standins.avx.add_certificate(f"paced{i}.contoso.com") for i in range(10)]
    standins.key_vault.throttle(max_per_window=small.count, window_seconds=small.window_seconds, retry_after=1)
    throttled_before = standins.key_vault.throttled_count  # counts for the session's stand-in, across tests
    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(pool.map(lambda item: call_webhook({"resourceId": item.resource_id}), items))
    finally:
        standins.key_vault.throttle(None)

    assert [status for status, _ in answers] == [200] * 10
    assert standins.key_vault.throttled_count == throttled_before  # no 429: the burst waited for its slots instead
    for item in items:
        assert standins.key_vault.latest(item.common_name.replace(".", "-")) is not None
