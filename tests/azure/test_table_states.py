"""Record states are StrEnums; in Azure Tables (Azurite) they are stored, queried and read back as the same plain
strings as before, so the table schemas do not change."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableClient

from shared.appviewx.records import PARTITION as AVX_PARTITION
from shared.appviewx.records import PendingRecord, PendingStore, RenewalState
from shared.core.errors import StateStoreError
from shared.rcl.scheduled import RecordState, unknown_request
from shared.rcl.state import PARTITION as RCL_PARTITION
from shared.rcl.state import RenewalStateStore
from shared.security.idempotency import ClaimOutcome, IdempotencyStore, KeyState
from shared.vault.event_claims import EVENT_PARTITION, ClaimState, EventClaims, event_key

NOW = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def table(app_env: dict[str, str]) -> Iterator[TableClient]:
    client = TableClient.from_connection_string(app_env["AzureWebJobsStorage"], f"states{uuid.uuid4().hex[:8]}")
    client.create_table()
    yield client
    client.delete_table()
    client.close()


def raw_state(table: TableClient, partition: str, row: str) -> object:
    return table.get_entity(partition, row)["state"]


def test_a_strenum_is_stored_and_queried_as_its_plain_string(table: TableClient) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "enum", "state": RenewalState.ACCEPTED})
    table.create_entity({"PartitionKey": "p", "RowKey": "plain", "state": "accepted"})
    table.submit_transaction([("upsert", {"PartitionKey": "p", "RowKey": "batch", "state": RecordState.NOT_INSTALLED})])
    for row in ("enum", "plain"):
        value = raw_state(table, "p", row)
        assert type(value) is str and value == "accepted"
    batch = raw_state(table, "p", "batch")
    assert type(batch) is str and batch == "notinstalled"
    found = table.query_entities(
        "PartitionKey eq @pk and state eq @s", parameters={"pk": "p", "s": RenewalState.ACCEPTED}
    )
    assert sorted(e["RowKey"] for e in found) == ["enum", "plain"]


def test_renewal_records_store_their_state_and_read_it_back_as_the_enum(table: TableClient) -> None:
    store = PendingStore(table)
    record = store.create(
        PendingRecord.accepted(NOW, "invocation-1", storage="import", key_vault_name="www-contoso-com")
    )
    assert raw_state(table, AVX_PARTITION, record.pending_id) == "accepted"
    assert store.get(record.pending_id).state is RenewalState.ACCEPTED  # type: ignore[union-attr]
    assert [r.pending_id for r in store.due(NOW + timedelta(hours=1))] == [record.pending_id]  # queried by state

    store.save(record.renewed("https://vault/certificates/x/1", "www-contoso-com", NOW))
    assert raw_state(table, AVX_PARTITION, record.pending_id) == "renewed"


def test_a_legacy_completed_record_reads_as_renewed_and_an_unknown_state_is_an_error(table: TableClient) -> None:
    base = {"PartitionKey": AVX_PARTITION, "reason": "RENEWED", "storage": "import", "createdAt": NOW}
    row = {**base, "created_at": NOW, "next_attempt_at": NOW}
    table.create_entity({**row, "RowKey": "legacy", "state": "completed"})
    table.create_entity({**row, "RowKey": "odd", "state": "half-done"})
    store = PendingStore(table)
    assert store.get("legacy").state is RenewalState.RENEWED  # type: ignore[union-attr]
    with pytest.raises(StateStoreError, match="unknown state 'half-done'"):
        store.get("odd")


def test_idempotency_claims_store_running_then_completed(table: TableClient) -> None:
    store = IdempotencyStore(table)
    assert store.claim("key-1", "fingerprint", NOW).outcome is ClaimOutcome.NEW
    row = table.list_entities().next()["RowKey"]
    assert raw_state(table, "webhook", row) == "running" == KeyState.RUNNING
    assert store.claim("key-1", "fingerprint", NOW).outcome is ClaimOutcome.IN_PROGRESS
    store.complete("key-1", 200, {"status": "renewed"})
    assert raw_state(table, "webhook", row) == "completed"
    repeat = store.claim("key-1", "fingerprint", NOW + timedelta(minutes=1))
    assert (repeat.outcome, repeat.status, repeat.body) == (ClaimOutcome.REPLAY, 200, {"status": "renewed"})
    assert store.claim("key-1", "other", NOW).outcome is ClaimOutcome.MISMATCH


def test_key_vault_event_claims_store_running_then_done(table: TableClient) -> None:
    claims = EventClaims(table)
    key = event_key("event-1")
    claims.claim(EVENT_PARTITION, key, {"certificate": "www-contoso-com"}, NOW)
    assert raw_state(table, EVENT_PARTITION, key) == "running" == ClaimState.RUNNING
    claims.finish(EVENT_PARTITION, key, "renewed")
    assert raw_state(table, EVENT_PARTITION, key) == "done"


def test_rcl_records_store_their_states_as_before(table: TableClient) -> None:
    store = RenewalStateStore(table)
    request = unknown_request(NOW, "run-1")
    store.record_unknown(request)
    assert raw_state(table, RCL_PARTITION, request.record_key) == "unknown"
    [opened] = store.open_renewals()
    assert opened.state is RecordState.UNKNOWN and opened.is_unknown_request
    store.close_unknown(request, RecordState.RESOLVED, NOW, "found")
    assert raw_state(table, RCL_PARTITION, request.record_key) == "resolved"
    assert store.open_renewals() == []


def test_a_row_with_an_unknown_state_does_not_hide_the_other_records(table: TableClient) -> None:
    store = PendingStore(table)
    good = store.create(PendingRecord.accepted(NOW, "invocation-2", storage="import", key_vault_name="a-contoso-com"))
    odd = {**table.get_entity(AVX_PARTITION, good.pending_id), "RowKey": uuid.uuid4().hex, "state": "archived"}
    table.create_entity(odd)
    with pytest.raises(StateStoreError):  # the one row, read on its own, is named as unreadable
        store.get(odd["RowKey"])
    assert [r.pending_id for r in store.all_records()] == [good.pending_id]  # the listing skips it, keeps the rest
