"""Issue 13: a burst of renewals through the asynchronous path (webhook + `renew_queued`) against the physical limit,
and the same burst through the synchronous webhook at the configured thread count.

AVX answers each renewal after `AVX_DELAY` seconds; Key Vault accepts `KV_RATE` imports per second and answers 429
with Retry-After beyond that.

Three processes, as in Azure: the stand-ins (AVX, Key Vault, identity) in their own interpreter
(bench/standin_process.py), Azurite (node), and the app in a fresh process of its own (`python -m bench.queue_burst
MODE`, this module), which plays the Functions host: the webhook gets the queue output binding, and `concurrency`
worker threads (host.json batchSize + newBatchThreshold, at most PYTHON_THREADPOOL_THREAD_COUNT) take the captured
messages and call `renew_queued` with real `azure.functions.QueueMessage` objects; a message whose invocation raised
is delivered again after `VISIBILITY_DELAY` (host.json's visibilityTimeout, shortened). The parent (bench/run.py)
sets the stand-ins up, runs the app process and counts what the stand-ins saw.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BURST = 200
AVX_DELAY = 3.0
# Key Vault's documented write budget ("Azure Key Vault service limits": 300 create secret + import certificate +
# import key per vault per 10 s; shared.azure.keyvault.KEY_VAULT_WRITE_LIMIT), enforced by the stand-in as a sliding
# window (the stricter reading) with 429 and Retry-After. (Until issue 28 the storm throttled at 10 per 1 s, which
# refuses bursts of 11 that the documented budget accepts.)
KV_LIMIT = 300
KV_WINDOW = 10.0
KV_RETRY_AFTER = 1
AZURE_HTTP_LIMIT = 230.0  # seconds before Azure's front end cuts an HTTP answer
TARGET_RATIO = 1.25
VISIBILITY_DELAY = 1.0
SETTLE_TIMEOUT = 300.0
MARKER = "BENCH-STORM "

# Where a renewal's time goes, timed around these app calls in the app process (wrapped for timing only; a name
# the app no longer has is skipped and reported as not timed).
TIMED_CALLS = {
    "AVX renew (incl. AVX's 3 s)": "shared.appviewx.client:AvxClient.renew",
    "AVX search (pending and completion paths only)": "shared.appviewx.client:AvxClient.search",
    "open the PFX (leaf_of_pfx, RSA key check)": "shared.appviewx.storing:leaf_of_pfx",
    "Key Vault import (incl. pacing and 429 waits)": "shared.azure.keyvault:KeyVaultStore.import_pfx",
    "record read": "shared.appviewx.records:PendingStore.get",
    "record claim": "shared.appviewx.records:PendingStore.claim_queued",
    "record save": "shared.appviewx.records:PendingStore.save",
}


# -- pure figures --------------------------------------------------------------------------------------------------


def configured_concurrency() -> dict[str, int]:
    """What is deployed: host.json's queue batch, the threads of local.settings.sample.json, the Bicep's HTTP
    per-instance concurrency."""
    host = json.loads((REPO_ROOT / "host.json").read_text())["extensions"]["queues"]
    sample = json.loads((REPO_ROOT / "local.settings.sample.json").read_text())["Values"]
    bicep = (REPO_ROOT / "infra" / "modules" / "resources.bicep").read_text()
    per_instance = re.search(r"param httpPerInstanceConcurrency int = (\d+)", bicep)
    configured = {
        "threads": int(sample["PYTHON_THREADPOOL_THREAD_COUNT"]),
        "batchSize": int(host["batchSize"]),
        "newBatchThreshold": int(host["newBatchThreshold"]),
        "maxPollingInterval": _seconds(host.get("maxPollingInterval", "00:01:00")),
        "perInstanceConcurrency": int(per_instance[1]) if per_instance else 0,
    }
    override = os.environ.get("BENCH_QUEUE_BATCH")  # "batchSize,newBatchThreshold": to compare settings by hand
    if override:
        configured["batchSize"], configured["newBatchThreshold"] = (int(v) for v in override.split(","))
    return configured


def _seconds(timespan: str) -> int:
    hours, minutes, seconds = (int(part) for part in timespan.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def queue_concurrency(configured: dict[str, int]) -> int:
    """Messages one instance runs at once: the host holds batchSize + newBatchThreshold, the worker's threads run them."""
    return min(configured["threads"], configured["batchSize"] + configured["newBatchThreshold"])


def physical_limit(burst: int, concurrency: int, avx_delay: float, kv_limit: int, kv_window: float) -> float:
    """The shortest a burst can take given only the upstreams' limits: the larger of AVX's delay times the waves the
    concurrency allows, and the Key Vault windows the imports need beyond the first (`kv_limit` per `kv_window`).
    It counts no time of the app's own (opening the PFX, tables) and none of the stand-ins' answer time."""
    return max(avx_delay * math.ceil(burst / concurrency), (math.ceil(burst / kv_limit) - 1) * kv_window)


def callers_past(limit: float, burst: int, threads: int, per_call: float) -> int:
    """Of `burst` callers arriving at once, how many wait past `limit` when `threads` serve them `per_call` each."""
    return sum(1 for i in range(burst) if math.ceil((i + 1) / threads) * per_call > limit)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


# -- the app process (python -m bench.queue_burst MODE < {"resourceIds": [...], "concurrency": N}) -----------------


class _Context:
    """What the Functions host passes as `context` (the test stack is not imported into the measured process)."""

    def __init__(self, function_name: str) -> None:
        self.invocation_id = str(uuid.uuid4())
        self.function_name = function_name
        self.function_directory = str(REPO_ROOT)
        self.retry_context = None
        self.trace_context = None
        self.thread_local_storage = None


class _Timings:
    """Wall time spent inside the app calls of TIMED_CALLS, per call (thread-safe appends)."""

    def __init__(self) -> None:
        self.spent: dict[str, list[float]] = {}
        self.missing: list[str] = []

    def install(self) -> None:
        for label, target in TIMED_CALLS.items():
            module_name, _, attribute = target.partition(":")
            owner_name, _, name = attribute.rpartition(".")
            try:
                owner: Any = importlib.import_module(module_name)
                if owner_name:
                    owner = getattr(owner, owner_name)
                original = getattr(owner, name)
            except (ImportError, AttributeError):
                self.missing.append(label)
                continue
            setattr(owner, name, self._timed(label, original))

    def _timed(self, label: str, original: Callable[..., Any]) -> Callable[..., Any]:
        spent = self.spent.setdefault(label, [])

        def timed(*args: Any, **kwargs: Any) -> Any:
            before = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - before)

        return timed

    def summary(self, renewals: int) -> dict[str, Any]:
        return {
            label: {"calls": len(v), "median_ms": median(v) * 1000, "per_renewal_ms": sum(v) * 1000 / renewals}
            for label, v in self.spent.items()
        }


def _request(resource_id: str, prefer_async: bool) -> Any:
    import azure.functions as func

    headers = {"Content-Type": "application/json", **({"Prefer": "respond-async"} if prefer_async else {})}
    return func.HttpRequest(
        method="POST",
        url="http://localhost:7071/api/certificates/renew",
        headers=headers,
        params={},
        route_params={},
        body=json.dumps({"resourceId": resource_id}).encode(),
    )


def _functions() -> dict[str, Any]:
    import function_app

    return {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}


class _QueueHost:
    """The Functions host's queue listener as host.json configures it: it fetches up to `batchSize` messages, hands
    each to the worker, and fetches the next batch once no more than `newBatchThreshold` are still running; an empty
    fetch backs off from 0.1 s, doubling, up to `maxPollingInterval`. The worker runs invocations on its
    PYTHON_THREADPOOL_THREAD_COUNT threads (`pool`, shared with the HTTP calls). A message whose invocation raised
    is visible again after `VISIBILITY_DELAY` (host.json's visibilityTimeout, shortened)."""

    def __init__(self, batch: dict[str, float], pool: ThreadPoolExecutor, invoke: Callable[[Any], None]) -> None:
        self.batch_size = int(batch["batchSize"])
        self.threshold = int(batch["newBatchThreshold"])
        self.max_polling = float(batch["maxPollingInterval"])
        self.pool = pool
        self.invoke = invoke
        self.visible: queue.Queue[Any] = queue.Queue()
        self.changed = threading.Condition()
        self.running = 0
        self.fetches = 0
        self.stopped = threading.Event()
        self._since = time.perf_counter()
        self.busy_time = 0.0  # the integral of `running` over time: / the storm's wall time = mean in flight

    def _count(self, change: int) -> None:  # under self.changed
        now = time.perf_counter()
        self.busy_time += self.running * (now - self._since)
        self._since = now
        self.running += change

    def listen(self) -> None:
        backoff = 0.1
        while not self.stopped.is_set():
            with self.changed:
                while self.running > self.threshold and not self.stopped.is_set():
                    self.changed.wait(0.5)
            batch = []
            while len(batch) < self.batch_size:
                try:
                    batch.append(self.visible.get_nowait())
                except queue.Empty:
                    break
            self.fetches += 1
            if not batch:
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, self.max_polling)
                continue
            backoff = 0.1
            with self.changed:
                self._count(len(batch))
            for item in batch:
                self.pool.submit(self._run, item)

    def _run(self, item: Any) -> None:
        try:
            self.invoke(item)
        except Exception:  # the message becomes visible again after visibilityTimeout
            threading.Timer(VISIBILITY_DELAY, self.visible.put, args=(item,)).start()
        finally:
            with self.changed:
                self._count(-1)
                self.changed.notify_all()


def run_async(resource_ids: list[str], threads: int, batch: dict[str, float]) -> dict[str, Any]:
    import azure.functions as func

    from shared import context as app_context
    from shared.operator.queue_host import QueueOutput

    functions = _functions()
    webhook, worker = functions["renew_http"], functions["renew_queued"]
    retried: Counter[str] = Counter()
    settled: dict[str, float] = {}  # pendingId -> when its invocation ended without raising
    lock = threading.Lock()
    all_settled = threading.Event()

    def invoke(item: tuple[str, str]) -> None:
        pending_id, body = item
        message = func.QueueMessage(id=uuid.uuid4().hex, body=body.encode(), pop_receipt="r")
        try:
            worker(message, _Context("renew_queued"))
        except Exception as exc:
            with lock:
                retried[type(exc).__name__] += 1
            raise
        with lock:
            settled[pending_id] = time.perf_counter()
            if len(settled) == len(resource_ids):
                all_settled.set()

    def accept(resource_id: str) -> tuple[int, dict[str, Any], str | None, float]:
        out = QueueOutput()
        before = time.perf_counter()
        response = webhook(_request(resource_id, True), _Context("renew_http"), renewals=out)
        return response.status_code, json.loads(response.get_body()), out.value, time.perf_counter() - before

    def accepted(future: Any) -> None:
        status, body, queued, took = future.result()
        if status != 202 or queued is None:
            raise RuntimeError(f"async webhook answered {status}: {body}")
        with lock:
            accept_s.append(took)
            pending_ids.append(body["pendingId"])
        host.visible.put((body["pendingId"], queued))

    cpu_before = os.times()
    started = time.perf_counter()
    accept_s: list[float] = []
    pending_ids: list[str] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:  # the worker's threads: HTTP and queue invocations share them
        host = _QueueHost(batch, pool, invoke)
        listener = threading.Thread(target=host.listen, daemon=True)
        listener.start()
        calls = [pool.submit(accept, resource_id) for resource_id in resource_ids]  # the CMDB's burst
        for call in calls:
            accepted(call)
        accepted_at = time.perf_counter() - started
        finished = all_settled.wait(SETTLE_TIMEOUT)
        wall = (max(settled.values()) if finished else time.perf_counter()) - started
        cpu_after = os.times()
        host.stopped.set()
        listener.join()
    store = app_context.pending_store()
    ours = set(pending_ids)
    states = Counter(r.state for r in store.all_records() if r.pending_id in ours)
    return {
        "accept_s": accept_s,
        "accepted_at": accepted_at,
        "wall": wall,
        "finished": finished,
        "states": dict(states),
        "distinct_pending_ids": len(ours),
        "redeliveries": dict(retried),
        "queue_fetches": host.fetches,
        "mean_in_flight": host.busy_time / wall if wall else 0.0,
        "cpu_s": (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system),
    }


def run_sync(resource_ids: list[str], threads: int) -> dict[str, Any]:
    functions = _functions()
    webhook = functions["renew_http"]
    cpu_before = os.times()
    started = time.perf_counter()

    def one(resource_id: str) -> tuple[int, float]:  # every caller arrives at `started`; the pool is the threads
        response = webhook(_request(resource_id, False), _Context("renew_http"))
        return response.status_code, time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(one, resource_ids))
    cpu_after = os.times()
    return {
        "waits": [wait for _, wait in results],
        "statuses": dict(Counter(str(status) for status, _ in results)),
        "wall": time.perf_counter() - started,
        "cpu_s": (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system),
    }


def _count_warnings() -> Counter[str]:
    """Warnings logged in the app process (urllib3's "Connection pool is full" among them), counted by message."""
    import logging

    warnings: Counter[str] = Counter()

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings[f"{record.name}: {record.getMessage()[:120]}"] += 1

    logging.getLogger().addHandler(Count(level=logging.WARNING))
    logging.getLogger().setLevel(logging.WARNING)
    return warnings


def app_main(mode: str) -> int:
    job = json.loads(sys.stdin.read())
    timings = _Timings()
    timings.install()
    warnings = _count_warnings()
    if mode == "async":
        result = run_async(job["resourceIds"], job["threads"], job["batch"])
    elif mode == "sync":
        result = run_sync(job["resourceIds"], job["threads"])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    result["timings"] = timings.summary(len(job["resourceIds"]))
    result["not_timed"] = timings.missing
    result["warnings"] = dict(warnings)
    print(MARKER + json.dumps(result), flush=True)
    return 0


# -- the parent: set up, run the app process, count ----------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    import psutil

    try:
        process = psutil.Process(pid)
        processes = [process, *process.children(recursive=True)]  # the stand-ins' parse processes too
        total = 0.0
        for each in processes:
            times = each.cpu_times()
            total += times.user + times.system
    except psutil.Error:
        return 0.0
    return total


def _run_app(mode: str, job: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.queue_burst", mode],
        cwd=REPO_ROOT,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=SETTLE_TIMEOUT + 120,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"storm app process ({mode}) failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return dict(json.loads(lines[-1][len(MARKER) :]))


def _machine_busy() -> Callable[[], float]:
    """The whole machine's CPU use while a storm runs, in cores (other jobs on a shared machine included)."""
    import psutil

    before = psutil.cpu_times()

    def busy() -> float:
        after = psutil.cpu_times()
        idle = (after.idle + getattr(after, "iowait", 0)) - (before.idle + getattr(before, "iowait", 0))
        total = sum(after) - sum(before)
        cores = psutil.cpu_count() or 1
        return (total - idle) / total * cores if total else 0.0

    return busy


def storms(
    base_env: dict[str, str],
    azurite_connection: str,
    azurite_pid: int,
    section: Any,
    modes: tuple[str, ...] = ("async", "sync"),
) -> None:
    """Section 6: the async and sync storms, each in a fresh app process against stand-ins in their own process."""
    from bench.standin_process import StandInProcess

    configured = configured_concurrency()
    concurrency = queue_concurrency(configured)
    threads = configured["threads"]
    with tempfile.TemporaryDirectory(prefix="certrenew-storm-") as directory:
        standins = StandInProcess.start(Path(directory))
        try:
            for mode in modes:
                ids = standins.call("add_certificates", f"{mode}storm", BURST)
                suffix = uuid.uuid4().hex[:8]
                env = {
                    **base_env,
                    **standins.env,
                    "AzureWebJobsStorage": azurite_connection,  # directly, no counting proxy in between
                    "PENDING_TABLE": f"storm{mode}{suffix}",
                    "IDEMPOTENCY_TABLE": f"stormidem{mode}{suffix}",
                    "PYTHON_THREADPOOL_THREAD_COUNT": str(threads),
                }
                standins.call("storm", AVX_DELAY, KV_LIMIT, KV_WINDOW, KV_RETRY_AFTER)
                cpu = {"standins": _cpu_seconds(standins.pid), "azurite": _cpu_seconds(azurite_pid)}
                busy = _machine_busy()
                job = {"resourceIds": ids, "threads": threads, "batch": configured}
                result = _run_app(mode, job, env)
                machine_cores = busy()
                cpu = {
                    "standins": _cpu_seconds(standins.pid) - cpu["standins"],
                    "azurite": _cpu_seconds(azurite_pid) - cpu["azurite"],
                }
                standins.call("calm")
                names = [f"{mode}storm{i}-contoso-com" for i in range(BURST)]
                seen = standins.call("counts", ids, names)
                if mode == "async":
                    _async_rows(section, configured, concurrency, result, seen)
                else:
                    _sync_rows(section, threads, result, seen)
                section.add(
                    f"{mode} storm: CPU used (app process / stand-in process / Azurite) and the machine's busy cores",
                    f"{result['cpu_s']:.1f} s / {cpu['standins']:.1f} s / {cpu['azurite']:.1f} s of CPU in "
                    f"{result['wall']:.1f} s; the machine's {os.cpu_count()} cores were {machine_cores:.2f} busy on "
                    "average (other jobs included)",
                )
                _timing_rows(section, mode, result)
                handlers = "; ".join(
                    f"{label} median {t['median']:.0f} ms over {t['calls']} requests"
                    for label, t in seen["handler_ms"].items()
                )
                section.add(
                    f"{mode} storm: stand-ins' answer time (in their process) and new TLS connections accepted",
                    f"{handlers}; connections AVX {seen['connections']['AVX']}, "
                    f"Key Vault {seen['connections']['Key Vault']}",
                )
        finally:
            standins.stop()
    section.notes.append(
        "The app runs in a fresh process of its own (it plays the Functions host: the webhook's output binding is "
        "captured, host worker threads deliver the messages to `renew_queued` as `azure.functions.QueueMessage`); "
        "the stand-ins (AVX, Key Vault, identity) run in another process and Azurite in its own, as AppViewX, Key "
        "Vault and the storage account are other machines in Azure. The storm's clock starts at the first request "
        "and stops when the last queue invocation has settled its record; the app process's import and "
        "get_functions() come before it, its first token, Key Vault challenge and connections inside it."
    )
    section.notes.append(
        "Reading the figures: the physical limit counts only what the upstreams impose: AVX answering each renewal "
        "after 3 s with 16 renewals at once per instance (13 waves of 3 s), and Key Vault's documented write budget "
        "(300 imports per 10 s, so 200 imports fit in one window and add nothing). Everything else is above it: "
        "opening each PFX (cryptography's RSA key check, about 40 ms of CPU, in the app's helper process: "
        "shared.core.pfx), the Key Vault import round trip (the stand-in parses imports in a process pool, as Key "
        "Vault does on its own servers), the owner read before AVX and the table calls of each renewal. On this "
        "machine the stand-ins' CPU (Key Vault's key checks included) shares the app's cores. The "
        "app paces Key Vault writes at the documented budget (one limiter per vault; a write holds its place in the "
        "10 s window from its start until 10 s after its answer); at one instance's rate that never waits, and the "
        "burst meets no 429. The host delivers messages as host.json says (see the configured-concurrency row): "
        "batches of 8 started 8 renewals together, AVX answered them together and their PFX checks and imports "
        "queued behind each other; smaller batches keep the 16 staggered. Measured with the PFX checked in the "
        "helper (quiet machine, burst of 200): 8 + 8 48.9 s, 4 + 12 46.2 and 46.3 s, 2 + 14 44.5 s, 1 + 15 44.0 s. "
        "batchSize is also what Azure's target-based scaling divides the queue length by, so 4 + 12, the "
        "largest batch measured that meets the target, rather than one instance per queued message "
        "(docs/async.md). On a shared "
        "machine every figure is pessimistic: the busy-cores row says how much CPU other jobs took."
    )


def _async_rows(
    section: Any, configured: dict[str, int], concurrency: int, result: dict[str, Any], seen: dict[str, Any]
) -> None:
    accept_ms = [s * 1000 for s in result["accept_s"]]
    section.add(
        "configured concurrency (host.json batchSize + newBatchThreshold; PYTHON_THREADPOOL_THREAD_COUNT; Bicep "
        "perInstanceConcurrency)",
        f"{configured['batchSize']} + {configured['newBatchThreshold']}; {configured['threads']}; "
        f"{configured['perInstanceConcurrency']} -> {concurrency} renewals at once per instance (the host fetches "
        f"{configured['batchSize']} more whenever no more than {configured['newBatchThreshold']} run; "
        f"{result.get('queue_fetches', '?')} fetches; {result.get('mean_in_flight', 0):.1f} in flight on average "
        "from the first request to the last settled record)",
    )
    section.add(
        f"async burst of {BURST}: 202 answers, slowest / median",
        f"{max(accept_ms):.0f} ms / {median(accept_ms):.0f} ms (all {BURST} in {result['accepted_at']:.2f} s)",
    )
    limit = physical_limit(BURST, concurrency, AVX_DELAY, KV_LIMIT, KV_WINDOW)
    section.add(
        f"async burst: physical limit: the larger of AVX's {AVX_DELAY:g} s x ceil({BURST}/{concurrency}) waves and "
        f"Key Vault's windows beyond the first ({KV_LIMIT} imports per {KV_WINDOW:g} s: "
        f"(ceil({BURST}/{KV_LIMIT}) - 1) x {KV_WINDOW:g} s); none of the app's own time",
        f"{limit:.1f} s",
    )
    ratio = result["wall"] / limit
    section.add(
        "async burst: wall time, first request to last record settled",
        f"{result['wall']:.1f} s = {ratio:.2f}x the limit" + ("" if result["finished"] else " (NOT all settled)"),
        f"<= {TARGET_RATIO:g}x",
        result["finished"] and ratio <= TARGET_RATIO,
    )
    versions = Counter(seen["versions"].values())
    states = result["states"]
    exactly_once = (
        states == {"renewed": BURST}
        and result["distinct_pending_ids"] == BURST
        and seen["renew_calls"] == BURST
        and not seen["renewed_twice"]
        and versions == Counter({1: BURST})
    )
    section.add(
        "async burst: every renewal stored exactly once",
        f"records {states}; AVX renew calls {seen['renew_calls']} (resource ids renewed twice: "
        f"{len(seen['renewed_twice'])}); Key Vault versions per certificate {dict(versions)}; "
        f"import requests {seen['imports']}, of which answered 429: {seen['throttled']}; "
        f"queue redeliveries {result['redeliveries'] or 0}",
        f"{BURST} renewed, {BURST} AVX calls, 1 version each",
        exactly_once,
    )
    section.add("async burst: Key Vault imports answered 429", str(seen["throttled"]), "0", seen["throttled"] == 0)
    _pool_rows(section, "async", result)


def _pool_rows(section: Any, mode: str, result: dict[str, Any]) -> None:
    full = sum(n for text, n in result.get("warnings", {}).items() if "Connection pool is full" in text)
    others = "; ".join(
        f"{n}x {text}" for text, n in result.get("warnings", {}).items() if "Connection pool is full" not in text
    )
    section.add(
        f'{mode} storm: "Connection pool is full" warnings in the app process',
        str(full) + (f" (other warnings: {others[:300]})" if others else ""),
        "0",
        full == 0,
    )


def _sync_rows(section: Any, threads: int, result: dict[str, Any], seen: dict[str, Any]) -> None:
    waits = sorted(result["waits"])
    section.add(
        f"sync burst of {BURST} at {threads} threads (AVX {AVX_DELAY:g} s): callers' waits median / longest",
        f"{median(waits):.1f} s / {waits[-1]:.1f} s; answers {result['statuses']}; "
        f"AVX renew calls {seen['renew_calls']}; Key Vault 429s {seen['throttled']}",
    )
    _pool_rows(section, "sync", result)
    section.add(
        f"sync burst: callers waiting past {AZURE_HTTP_LIMIT:g} s (measured, AVX {AVX_DELAY:g} s)",
        str(sum(1 for w in waits if w > AZURE_HTTP_LIMIT)),
    )
    per_call = waits[-1] / math.ceil(BURST / threads)  # measured time per call per thread, AVX's delay included
    modelled = ", ".join(
        f"AVX {delay:g} s: {callers_past(AZURE_HTTP_LIMIT, BURST, threads, delay + per_call - AVX_DELAY)}"
        for delay in (20, 60, 120, 300)
    )
    section.add(
        f"sync burst: callers past {AZURE_HTTP_LIMIT:g} s if AVX waits longer ({threads} threads, one instance; "
        f"{per_call:.2f} s per call measured, AVX's delay swapped)",
        modelled,
    )


def _timing_rows(section: Any, mode: str, result: dict[str, Any]) -> None:
    parts = [
        f"{label} {t['per_renewal_ms']:.0f} ms (median call {t['median_ms']:.0f} ms)"
        for label, t in result["timings"].items()
        if t["calls"]
    ]
    missing = f"; not timed (moved?): {', '.join(result['not_timed'])}" if result["not_timed"] else ""
    section.add(f"{mode} storm: app time per renewal, by call (threads waiting included)", "; ".join(parts) + missing)


if __name__ == "__main__":
    sys.exit(app_main(sys.argv[1]))
