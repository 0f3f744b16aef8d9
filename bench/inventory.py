"""Section 7 (issue 24): one inventory page (`GET /api/certificates`, 25 certificates) at 100 and 20,000 AppViewX
renewal records of history. The records are written straight into the pending table (as an older version left them),
the bounded backfill folds them into the last-outcome rows (what complete_pending does, run to its end here), then
the page is timed through the registered function. For comparison, what reading the whole history took (the
inventory's way before: every record of the partition) is timed beside it."""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.run import Section, Stack

SIZES = (100, 20_000)
CERTIFICATES = 25  # one Key Vault list page
PAGE_CALLS = 7
FLAT_TARGET = 2.0


def _seed_history(table: Any, size: int, names: list[str]) -> None:
    from shared.appviewx.records import PendingRecord, _to_entity

    now = datetime.now(UTC)
    entities = []
    for number in range(size):
        at = now - timedelta(minutes=number)
        record = PendingRecord.new(at, reason="RENEWED", storage="import", key_vault_name=names[number % len(names)])
        settled = record.renewed(
            f"https://vault/certificates/{record.key_vault_name}/v{number}", record.key_vault_name or "", at
        )
        entities.append(_to_entity(settled))
    for start in range(0, len(entities), 100):
        table.submit_transaction([("upsert", e) for e in entities[start : start + 100]])


def _inventory_ms(function: Any) -> list[float]:
    import azure.functions as func

    from tests.standins.stack import FakeContext

    times = []
    for _ in range(PAGE_CALLS):
        request = func.HttpRequest(
            method="GET", url="http://localhost/api/certificates", headers={}, params={}, body=b""
        )
        started = time.perf_counter()
        response = function(request, FakeContext("certificate_inventory"))
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"inventory answered {response.status_code}: {response.get_body()[:300]!r}")
    return times


def inventory_scale(stack: Stack, section: Section) -> None:
    import os

    from bench.app import app_functions
    from shared import context as app_context
    from shared.vault.housekeeping import HousekeepingStores, backfill_step
    from tests.standins.certs import issue_certificate

    inventory = app_functions()["certificate_inventory"].get_user_function()
    names = [f"inv-{n:02d}-contoso-com" for n in range(CERTIFICATES)]
    stack.standins.key_vault.reset()
    for name in names:
        issued = issue_certificate(f"{name}.example")
        stack.standins.key_vault.seed(name, issued.certificate, issued.private_key)
    medians: dict[int, float] = {}
    for size in SIZES:
        os.environ["PENDING_TABLE"] = f"benchinv{size}x{uuid.uuid4().hex[:6]}"
        app_context.reset()
        records = app_context.pending_store()
        _seed_history(records.table, size, names)
        outcomes = app_context.last_outcomes()
        stores = HousekeepingStores(records, None, None, None, app_context.last_outcomes, None)  # type: ignore[arg-type]
        steps = 0
        while not outcomes.backfill_state("avx")[0]:
            backfill_step(stores, app_context.last_outcomes)
            steps += 1
        stack.proxy.reset_records()
        times = _inventory_ms(inventory)
        requests = sum(stack.proxy.counts().values()) / PAGE_CALLS
        medians[size] = statistics.median(times)
        started = time.perf_counter()
        history = len(records.all_records())
        whole_ms = (time.perf_counter() - started) * 1000
        section.add(
            f"{size:,} records: inventory page (25 certificates), median of {PAGE_CALLS}",
            f"{medians[size]:.0f} ms ({requests:.0f} table request(s) per page; backfill: {steps} run(s))",
        )
        section.add(
            f"{size:,} records: reading the whole history (the inventory's way before)",
            f"{whole_ms:.0f} ms ({history:,} records)",
        )
    ratio = medians[SIZES[-1]] / medians[SIZES[0]]
    section.add(
        f"inventory page time ratio {SIZES[-1]:,} / {SIZES[0]:,} records",
        f"{ratio:.2f}",
        f"<= {FLAT_TARGET:g} (flat)",
        ratio <= FLAT_TARGET,
    )
