"""Costs that do not grow with history: settled records past RENEWAL_RECORD_RETENTION_DAYS and expired keys, signature
records and claims are removed in bounded batches by the `complete_pending` timer (open records never); the inventory
reads one last-outcome row per certificate, never the history, and records written before those rows are folded in
once by a bounded backfill."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared import context as app_context
from shared.appviewx.records import PendingRecord, PendingStore, RenewalState
from shared.core.errors import SettingsError
from shared.core.settings import Settings
from shared.rcl.scheduled import ScheduledRenewal
from shared.rcl.state import RenewalStateStore
from shared.vault.housekeeping import HousekeepingStores, tidy
from tests.conftest import WebhookCaller
from tests.standins.certs import issue_certificate
from tests.standins.stack import FakeContext, StandIns
from tests.standins.tableproxy import CountingProxy


def run_complete_pending(functions: dict[str, Any]) -> None:
    timer = func.timer.TimerRequest(past_due=False)
    functions["complete_pending"].get_user_function()(timer, FakeContext("complete_pending"))


def inventory(functions: dict[str, Any]) -> dict[str, dict[str, Any]]:
    request = func.HttpRequest(method="GET", url="http://localhost/api/certificates", headers={}, params={}, body=b"")
    response = functions["certificate_inventory"].get_user_function()(request, FakeContext("certificate_inventory"))
    assert response.status_code == 200, response.get_body()
    return {c["name"]: c for c in json.loads(response.get_body())["certificates"]}


def settled(now: datetime, name: str, days_ago: float, state: RenewalState = RenewalState.RENEWED) -> PendingRecord:
    at = now - timedelta(days=days_ago)
    record = PendingRecord.new(at, reason="RENEWED", storage="import", key_vault_name=name)
    if state is RenewalState.RENEWED:
        return record.renewed(f"https://vault/certificates/{name}/v1", name, at)
    if state is RenewalState.FAILED:
        return record.failed("AVX_BAD_RESPONSE", "garbage", at)
    return record.pending("AVX_NO_CERTIFICATE", None, at)


def stores() -> HousekeepingStores:
    return HousekeepingStores(
        records=app_context.pending_store(),
        idempotency=app_context.idempotency_store(),
        signatures=app_context.signature_replays(),
        claims=app_context.event_claims(),
        outcomes=app_context.last_outcomes,
        rcl=app_context.renewal_state(),
    )


def test_settled_records_past_retention_are_removed_in_bounded_batches_open_ones_never(
    functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    legacy = PendingStore(app_context.pending_store().table)  # written as an older version would: no outcome rows
    old = [
        legacy.save(settled(now, f"old-{i}", 450 + i, RenewalState.FAILED if i % 2 else RenewalState.RENEWED))
        for i in range(5)
    ]
    kept_open = legacy.save(settled(now, "open-old", 500, RenewalState.PENDING))
    recent = legacy.save(settled(now, "recent", 30))

    done = tidy(stores(), now, 400, batch=2)
    assert done.removed["settled renewal records"] == 2  # bounded
    run_complete_pending(functions)  # the timer does the rest (batch 500)
    remaining = {r.pending_id for r in app_context.pending_store().all_records()}
    assert remaining == {kept_open.pending_id, recent.pending_id}
    assert not remaining & {r.pending_id for r in old}


def test_expired_keys_signatures_and_claims_are_purged(functions: dict[str, Any], app_env: dict[str, str]) -> None:
    now = datetime.now(UTC)
    table = app_context.idempotency_store().table
    rows = {
        ("webhook", "old-key"): {"createdAt": now - timedelta(days=2), "state": "completed"},
        ("webhook", "new-key"): {"createdAt": now - timedelta(hours=1), "state": "completed"},
        ("signature", "old-sig"): {"expiresAt": now - timedelta(minutes=1)},
        ("signature", "new-sig"): {"expiresAt": now + timedelta(minutes=5)},
        ("kvevent", "old-event"): {"createdAt": now - timedelta(days=8), "state": "done"},
        ("kvevent", "new-event"): {"createdAt": now - timedelta(days=1), "state": "done"},
        ("kvversion", "old-version"): {"createdAt": now - timedelta(days=401), "state": "done"},
        ("kvversion", "new-version"): {"createdAt": now - timedelta(days=100), "state": "done"},
        ("notifybudget", "20200101T0000Z"): {"sent": 1},
    }
    for (partition, key), values in rows.items():
        table.create_entity({"PartitionKey": partition, "RowKey": key, **values})
    run_complete_pending(functions)
    left = {(e["PartitionKey"], e["RowKey"]) for e in table.list_entities()}
    assert {k for k in left if not k[0].startswith("outcome")} == {
        ("webhook", "new-key"),
        ("signature", "new-sig"),
        ("kvevent", "new-event"),
        ("kvversion", "new-version"),
    }


def test_retention_setting_is_checked() -> None:
    assert Settings({}).webhook.record_retention_days == 400
    assert Settings({"RENEWAL_RECORD_RETENTION_DAYS": "30"}).webhook.record_retention_days == 30
    for bad in ("0", "-1", "nan", "soon", "5"):  # 5: not more than PENDING_MAX_DAYS (7)
        with pytest.raises(SettingsError, match="RENEWAL_RECORD_RETENTION_DAYS"):
            _ = Settings({"RENEWAL_RECORD_RETENTION_DAYS": bad}).webhook


def test_the_inventory_reads_last_outcome_rows_never_the_history(
    functions: dict[str, Any], call_webhook: WebhookCaller, standins: StandIns, table_proxy: CountingProxy
) -> None:
    standins.key_vault.reset()
    standins.avx.add_certificate("rows.contoso.com", resource_id="rows")
    status, body = call_webhook({"resourceId": "rows", "keyVaultCertificateName": "rows-contoso-com"})
    assert status == 200, body
    table_proxy.reset_records()
    shown = inventory(functions)
    assert shown["rows-contoso-com"]["lastOutcome"] == "renewed"
    filters = [" ".join(r.query.get("$filter", [])) for r in table_proxy.requests]
    assert not any("'avx'" in f or "'rcl'" in f for f in filters), filters  # no history partition is read
    assert table_proxy.counts()["query"] <= 2  # the last-outcome rows, and the sweep's backoff rows (per certificate)


def test_records_written_before_are_backfilled_once(
    functions: dict[str, Any], app_env: dict[str, str], standins: StandIns
) -> None:
    standins.key_vault.reset()
    now = datetime.now(UTC)
    for name in ("legacy-avx", "shop-contoso-com"):
        issued = issue_certificate(f"{name}.example")
        standins.key_vault.seed(name, issued.certificate, issued.private_key)
    # Written by an older version: records only, no last-outcome rows.
    legacy = PendingStore(app_context.pending_store().table)
    legacy.save(settled(now, "legacy-avx", 40, RenewalState.FAILED))
    legacy.save(settled(now, "legacy-avx", 20))
    RenewalStateStore(app_context.renewal_state().table).record_scheduled(
        [
            ScheduledRenewal(
                record_key=f"{now:%Y%m%d}-id-7",
                certificate_id=7,
                certificate_name="shop.contoso.com",
                target="Azure Key Vault",
                expiry_date=now + timedelta(days=10),
                scheduled_at=now - timedelta(minutes=5),
                run_id="night",
            )
        ]
    )
    assert inventory(functions)["legacy-avx"]["lastOutcome"] is None

    run_complete_pending(functions)
    shown = inventory(functions)
    assert shown["legacy-avx"]["lastOutcome"] == "renewed"  # the newer of its two records
    assert shown["shop-contoso-com"]["lastOutcome"] == "scheduled" and shown["shop-contoso-com"]["source"] == "rcl"
    outcomes = app_context.last_outcomes()
    assert outcomes.backfill_state("avx")[0] and outcomes.backfill_state("rcl")[0]
    assert tidy(stores(), now, 400).backfilled == 0  # once


def test_the_backfill_shows_no_in_flight_record_as_a_last_outcome(
    functions: dict[str, Any], app_env: dict[str, str], standins: StandIns
) -> None:
    # As live (PendingStore._note_outcome): a write-ahead record whose renewal is in flight is no last outcome.
    standins.key_vault.reset()
    now = datetime.now(UTC)
    issued = issue_certificate("inflight.example")
    standins.key_vault.seed("inflight", issued.certificate, issued.private_key)
    legacy = PendingStore(app_context.pending_store().table)
    legacy.save(settled(now, "inflight", 20))
    legacy.create(PendingRecord.accepted(now, "another-run", storage="import", key_vault_name="inflight"))

    run_complete_pending(functions)

    assert app_context.last_outcomes().backfill_state("avx")[0]
    assert inventory(functions)["inflight"]["lastOutcome"] == "renewed"


def test_the_backfill_is_bounded_per_run(app_env: dict[str, str]) -> None:
    from shared.vault.housekeeping import backfill_step

    now = datetime.now(UTC)
    legacy = PendingStore(app_context.pending_store().table)
    for number in range(7):
        legacy.save(settled(now, f"many-{number}", 10 + number))
    outcomes = app_context.last_outcomes()
    runs = 0
    while not outcomes.backfill_state("avx")[0]:
        backfill_step(stores(), app_context.last_outcomes, page=3)
        runs += 1
        assert runs < 10
    assert runs == 3
    assert {f"many-{n}" for n in range(7)} <= set(outcomes.read())
