"""Issue 13: a burst of renewals through the asynchronous path (webhook + `renew_queued`) against the physical limit,
and the same burst through the synchronous webhook at the configured thread count.

AVX answers each renewal after `AVX_DELAY` seconds; Key Vault accepts `KV_RATE` imports per second and answers 429
with Retry-After beyond that. The Functions host is played by this module: the webhook gets the queue output
binding, and `CONCURRENCY` worker threads (PYTHON_THREADPOOL_THREAD_COUNT; host.json batchSize + newBatchThreshold)
take the captured messages and call `renew_queued` with real `azure.functions.QueueMessage` objects; a message whose
invocation raised is delivered again after `VISIBILITY_DELAY` (host.json's visibilityTimeout, shortened).
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import azure.functions as func

from tests.standins.stack import FakeContext, StandIns

REPO_ROOT = Path(__file__).resolve().parents[1]
BURST = 200
AVX_DELAY = 3.0
KV_RATE = 10  # imports per second before Key Vault throttles (window 1 s, Retry-After 1)
AZURE_HTTP_LIMIT = 230.0  # seconds before Azure's front end cuts an HTTP answer
TARGET_RATIO = 1.25
VISIBILITY_DELAY = 1.0


def configured_concurrency() -> tuple[int, int, int]:
    """(threads, batchSize, newBatchThreshold) as deployed: host.json and the Bicep's PYTHON_THREADPOOL_THREAD_COUNT."""
    host = json.loads((REPO_ROOT / "host.json").read_text())["extensions"]["queues"]
    sample = json.loads((REPO_ROOT / "local.settings.sample.json").read_text())["Values"]
    return int(sample["PYTHON_THREADPOOL_THREAD_COUNT"]), int(host["batchSize"]), int(host["newBatchThreshold"])


def physical_limit(burst: int, concurrency: int, avx_delay: float, kv_rate: float) -> float:
    """The larger of AVX's delay times the waves the concurrency allows, and the burst at Key Vault's rate."""
    return max(avx_delay * math.ceil(burst / concurrency), burst / kv_rate)


def callers_past(limit: float, burst: int, threads: int, per_call: float) -> int:
    """Of `burst` callers arriving at once, how many wait past `limit` when `threads` serve them `per_call` each."""
    return sum(1 for i in range(burst) if math.ceil((i + 1) / threads) * per_call > limit)


class _Out(func.Out[str]):
    def __init__(self) -> None:
        self.value: str | None = None

    def set(self, val: str) -> None:
        self.value = val

    def get(self) -> str | None:
        return self.value


def _post(function: Any, resource_id: str, prefer_async: bool) -> tuple[int, dict[str, Any], str | None]:
    out = _Out()
    headers = {"Content-Type": "application/json", **({"Prefer": "respond-async"} if prefer_async else {})}
    request = func.HttpRequest(
        method="POST",
        url="http://localhost:7071/api/certificates/renew",
        headers=headers,
        params={},
        route_params={},
        body=json.dumps({"resourceId": resource_id}).encode(),
    )
    response = function(request, FakeContext("renew_http"), renewals=out)
    return response.status_code, json.loads(response.get_body()), out.value


def _throttled(standins: StandIns) -> None:
    standins.avx.renew_delay = AVX_DELAY
    standins.key_vault.throttle(KV_RATE, window_seconds=1.0, retry_after=1)


def async_burst(standins: StandIns, functions: dict[str, Any], section: Any) -> None:
    from shared import context as app_context

    threads, batch, threshold = configured_concurrency()
    concurrency = min(threads, batch + threshold)
    items = [standins.avx.add_certificate(f"async{i}.contoso.com") for i in range(BURST)]
    app_context.reset()
    standins.avx.reset_records()
    standins.key_vault.reset_records()
    _throttled(standins)
    webhook = functions["renew_http"].get_user_function()
    worker = functions["renew_queued"].get_user_function()
    messages: queue.Queue[str | None] = queue.Queue()
    retried = Counter[str]()

    def host_worker() -> None:
        while (body := messages.get()) is not None:
            message = func.QueueMessage(id=uuid.uuid4().hex, body=body.encode(), pop_receipt="r")
            try:
                worker(message, FakeContext("renew_queued"))
            except Exception as exc:  # the host makes the message visible again after visibilityTimeout
                retried[type(exc).__name__] += 1
                threading.Timer(VISIBILITY_DELAY, messages.put, args=(body,)).start()

    started = time.perf_counter()
    pool = [threading.Thread(target=host_worker, daemon=True) for _ in range(concurrency)]
    for thread in pool:
        thread.start()
    accept_ms: list[float] = []
    pending_ids: list[str] = []
    with ThreadPoolExecutor(max_workers=16) as callers:  # the CMDB's burst (HTTP instances answer at once)

        def one(item: Any) -> tuple[int, dict[str, Any], str | None, float]:
            before = time.perf_counter()
            status, body, queued = _post(webhook, item.resource_id, True)
            return status, body, queued, (time.perf_counter() - before) * 1000

        for status, body, queued, took in callers.map(one, items):
            if status != 202 or queued is None:
                raise RuntimeError(f"async webhook answered {status}: {body}")
            accept_ms.append(took)
            pending_ids.append(body["pendingId"])
            messages.put(queued)
    accepted_at = time.perf_counter() - started
    records = app_context.pending_store()
    deadline = time.monotonic() + 300
    states: Counter[str] = Counter()
    while time.monotonic() < deadline:
        states = Counter(r.state for r in records.all_records())
        if states.get("renewed", 0) + states.get("failed", 0) + states.get("pending", 0) >= BURST:
            break
        time.sleep(0.2)
    wall = time.perf_counter() - started
    for _ in pool:
        messages.put(None)
    standins.key_vault.throttle(None)
    standins.avx.renew_delay = 0.0

    renew_calls = len(standins.avx.renew_calls())
    stored = Counter(r.path for r in standins.key_vault.received("POST", "/import") if r.body and r.headers)
    names = {f"async{i}-contoso-com" for i in range(BURST)}
    with standins.key_vault.lock:
        versions = {name: len(standins.key_vault.certificates.get(name, [])) for name in names}
    limit = physical_limit(BURST, concurrency, AVX_DELAY, KV_RATE)
    ratio = wall / limit
    section.add(
        f"async burst of {BURST}: 202 answers, slowest / median",
        f"{max(accept_ms):.0f} ms / {sorted(accept_ms)[len(accept_ms) // 2]:.0f} ms (all {BURST} in {accepted_at:.2f} s)",
    )
    section.add(
        f"async burst: physical limit (AVX {AVX_DELAY:g} s x ceil({BURST}/{concurrency}), {BURST} / {KV_RATE} imports/s)",
        f"{limit:.1f} s",
    )
    section.add(
        "async burst: wall time, first request to last record settled",
        f"{wall:.1f} s = {ratio:.2f}x the limit",
        f"<= {TARGET_RATIO:g}x",
        ratio <= TARGET_RATIO,
    )
    exactly_once = states.get("renewed") == BURST and renew_calls == BURST and all(v == 1 for v in versions.values())
    section.add(
        "async burst: every renewal stored exactly once",
        f"records {dict(states)}; AVX renew calls {renew_calls}; Key Vault versions per certificate "
        f"{dict(Counter(versions.values()))}; Key Vault 429s {standins.key_vault.throttled_count}; "
        f"queue redeliveries {dict(retried) or 0}; import requests {sum(stored.values())}",
        f"{BURST} renewed, {BURST} AVX calls, 1 version each",
        exactly_once,
    )


def sync_burst(standins: StandIns, functions: dict[str, Any], section: Any) -> None:
    from shared import context as app_context

    threads, _, _ = configured_concurrency()
    items = [standins.avx.add_certificate(f"sync{i}.contoso.com") for i in range(BURST)]
    app_context.reset()
    standins.avx.reset_records()
    standins.key_vault.reset_records()
    _throttled(standins)
    webhook = functions["renew_http"].get_user_function()
    started = time.perf_counter()

    def one(item: Any) -> tuple[int, float]:  # every caller arrives at `started`; the pool is the worker threads
        status, _, _ = _post(webhook, item.resource_id, False)
        return status, time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(one, items))
    standins.key_vault.throttle(None)
    standins.avx.renew_delay = 0.0
    waits = sorted(wait for _, wait in results)
    statuses = Counter(status for status, _ in results)
    per_call = waits[-1] / math.ceil(BURST / threads)
    section.add(
        f"sync burst of {BURST} at {threads} threads (AVX {AVX_DELAY:g} s): callers' waits median / longest",
        f"{waits[len(waits) // 2]:.1f} s / {waits[-1]:.1f} s; answers {dict(statuses)}",
    )
    section.add(
        f"sync burst: callers waiting past {AZURE_HTTP_LIMIT:g} s (measured)",
        str(sum(1 for w in waits if w > AZURE_HTTP_LIMIT)),
    )
    modelled = ", ".join(
        f"AVX {delay:g} s: {callers_past(AZURE_HTTP_LIMIT, BURST, threads, delay + per_call - AVX_DELAY)}"
        for delay in (20, 60, 120, 300)
    )
    section.add(
        f"sync burst: callers past {AZURE_HTTP_LIMIT:g} s if AVX waits longer (same {threads} threads, one instance)",
        modelled,
    )
