"""Load: 200 webhook calls from 20 threads, every key sent twice, against a Key Vault that throttles bursts."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared import context as app_context
from shared.appviewx.completion import complete_pending
from tests.standins.stack import StandIns

CALLS, THREADS = 200, 20


def test_two_hundred_calls_with_duplicates_and_throttling(standins: StandIns, call_webhook: Any) -> None:
    items = [standins.avx.add_certificate(f"load{i}.contoso.com") for i in range(CALLS // 2)]
    work = [(f"key-{i}", item) for i, item in enumerate(items)] * 2
    random.Random(7).shuffle(work)
    standins.key_vault.throttle(max_per_window=4, window_seconds=1.0, retry_after=1)

    def call(entry: tuple[str, Any]) -> tuple[str, int, dict[str, Any]]:
        key, item = entry
        status, body = call_webhook({"resourceId": item.resource_id}, headers={"Idempotency-Key": key})
        return key, status, body

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(call, work))
    standins.key_vault.throttle(None)
    assert standins.key_vault.throttled_count > 0  # the burst really was throttled

    assert len(results) == CALLS
    by_key: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for key, status, body in results:
        by_key.setdefault(key, []).append((status, body))
    for key, answers in by_key.items():
        statuses = sorted(s for s, _ in answers)
        assert set(statuses) <= {200, 202, 409}, (key, answers)
        assert any(s in (200, 202) for s in statuses), (key, answers)
        finals = [b for s, b in answers if s in (200, 202)]
        if len(finals) == 2:  # the repeat was answered from the first call's record
            assert finals[0] == finals[1]

    # Exactly one AVX renewal per key.
    assert len(standins.avx.renew_calls()) == CALLS // 2
    assert all(len(item.renewals) == 1 for item in items)

    # Whatever was throttled beyond retries was kept pending; the timer stores it.
    complete_pending(app_context.pending_store(), app_context.avx_client(), app_context.key_vault_store(), 7)
    for item in items:
        stored = standins.key_vault.latest(item.common_name.replace(".", "-"))
        assert stored is not None and stored.has_key, item.common_name
    assert standins.avx.connections <= THREADS  # connections are reused, not one per call
