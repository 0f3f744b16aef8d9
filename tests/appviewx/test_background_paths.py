"""Issue 30: the background paths. A record that never reached AppViewX never completes as if AVX acted; an expired
AppViewX certificate is never silent; a late queue message is honoured; one unreadable row never stalls completion;
one failed notification never drops the next; a lost RCL list is notified.

Everything runs through `function_app.app` against the stand-ins (AVX, Key Vault over HTTPS, the notification
receiver) and Azurite — table faults through the counting proxy in front of it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import context as app_context
from shared.notify.install import install_notifications, uninstall_notifications
from tests.appviewx.test_avx_pipeline import run_complete_pending, status_of, time_passes
from tests.appviewx.test_renew_queue import deliver as deliver_message
from tests.appviewx.test_renew_queue import post_async
from tests.conftest import WebhookCaller
from tests.eventlog import Events, recording
from tests.standins.avx import page_error
from tests.standins.base import RecordedRequest, Response
from tests.standins.certs import issue_certificate
from tests.standins.receiver import ReceiverStandIn, server_error
from tests.standins.stack import StandIns
from tests.standins.tableproxy import CountingProxy
from tests.vault.test_keyvault_events import EXPIRED, NEAR, deliver, key_vault_event, renew_through_webhook


@pytest.fixture
def events() -> Iterator[Events]:
    with recording() as recorder:
        yield recorder


@pytest.fixture
def table_proxy(app_env: dict[str, str], azurite: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingProxy]:
    proxy = CountingProxy(azurite.port).start()
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string.replace(f":{azurite.port}/", f":{proxy.port}/"))
    app_context.reset()
    yield proxy
    proxy.stop()


@pytest.fixture
def receiver(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ReceiverStandIn]:
    stand_in = ReceiverStandIn().start()
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", stand_in.webhook_url())
    monkeypatch.setenv("NOTIFY_FORMAT", "json")
    app_context.reset()
    assert install_notifications(app_context.settings()) is not None
    try:
        yield stand_in
    finally:
        uninstall_notifications()
        stand_in.stop()


TRIES = 4  # a table call's tries: azure-core's retry_total 3 (shared/azure/tables.py) + 1


def table_error(status: int, code: str) -> Response:
    body = {"odata.error": {"code": code, "message": {"lang": "en-US", "value": f"{code} (injected)"}}}
    return Response.json(body, status=status)


def version_claim_update(request: RecordedRequest) -> bool:
    """The merge that ties a certificate version's claim to its renewal record (EventClaims.attach)."""
    return request.method == "PATCH" and "kvversion" in request.path


def claims_age(hours: float) -> None:
    """Time passes for the Key Vault event claims and the certificates' backoff: every time in them moves back."""
    table = app_context.event_claims().table
    partitions = ("kvversion", "kvevent", "kvbackoff")
    for entity in list(table.query_entities(" or ".join(f"PartitionKey eq '{p}'" for p in partitions))):
        changed = dict(entity)
        for key, value in entity.items():
            if isinstance(value, datetime):
                changed[key] = value - timedelta(hours=hours)
        table.upsert_entity(changed)


def records_of(name: str) -> list[Any]:
    return [r for r in app_context.pending_store().all_records() if r.key_vault_name == name]


# -- 1. a record that never reached AppViewX -------------------------------------------------------------------------


def test_a_failing_on_record_calls_no_avx_ends_not_sent_and_the_redelivery_renews_once(
    call_webhook: WebhookCaller, functions: dict[str, Any], standins: StandIns, table_proxy: CountingProxy
) -> None:
    name, version = renew_through_webhook(call_webhook, standins)
    renewals_before = len(standins.avx.renew_calls())
    event = key_vault_event(standins, name, version)
    # Failing once: every try of the table client (azure-core retries it 3 times) fails.
    table_proxy.fail_next(TRIES, table_error(500, "InternalError"), match=version_claim_update)

    with pytest.raises(Exception):  # noqa: B017 - nothing happened: Event Grid redelivers
        deliver(functions, event)

    assert len(standins.avx.renew_calls()) == renewals_before
    (orphan,) = [r for r in records_of(name) if r.state != "renewed"]
    assert (orphan.state, orphan.reason) == ("failed", "NOT_SENT")
    searches = len(standins.avx.received("POST", "search"))
    time_passes(60)
    run_complete_pending(functions)  # never searched for: AVX never heard of it
    assert len(standins.avx.received("POST", "search")) == searches

    deliver(functions, event)  # Event Grid's redelivery
    assert len(standins.avx.renew_calls()) == renewals_before + 1
    versions = standins.key_vault.certificates[name]
    assert len(versions) == 2 and versions[-1].version != version  # one new Key Vault version
    assert app_context.pending_store().get(orphan.pending_id).reason == "NOT_SENT"  # type: ignore[union-attr]


def test_a_record_whose_sent_mark_was_never_saved_ends_not_sent_without_a_search(
    call_webhook: WebhookCaller, functions: dict[str, Any], standins: StandIns, table_proxy: CountingProxy
) -> None:
    """The process dies between the record and the AVX call (here: the save that marks it sent fails, and so does
    the NOT_SENT mark): completion ends it NOT_SENT once its lease ran out, without asking AVX."""
    item = standins.avx.add_certificate(f"orphan{uuid.uuid4().hex[:6]}.contoso.com")
    creates: list[str] = []

    def record_writes_after_create(request: RecordedRequest) -> bool:
        if request.method == "POST" and "pending" in request.path:
            creates.append(request.path)
            return False
        return bool(creates) and request.method == "PUT" and "pending" in request.path

    table_proxy.fail_next(2 * TRIES, table_error(500, "InternalError"), match=record_writes_after_create)
    status, answer = call_webhook({"resourceId": item.resource_id, "keyVaultCertificateName": "orphan-x"})
    assert status == 503, answer
    assert standins.avx.renew_calls() == []
    (orphan,) = records_of("orphan-x")
    assert orphan.state == "accepted"
    searches = len(standins.avx.received("POST", "search"))
    time_passes(20)
    run_complete_pending(functions)
    assert len(standins.avx.received("POST", "search")) == searches
    record = app_context.pending_store().get(orphan.pending_id)
    assert record is not None and (record.state, record.reason) == ("failed", "NOT_SENT")


# -- 2. an expired AppViewX certificate is never silent -----------------------------------------------------------


def test_avx_417_on_near_expiry_then_expired_reports_and_retries_once_after_backoff(
    call_webhook: WebhookCaller,
    functions: dict[str, Any],
    standins: StandIns,
    events: Events,
    receiver: ReceiverStandIn,
) -> None:
    name, version = renew_through_webhook(call_webhook, standins)
    renewals_before = len(standins.avx.renew_calls())
    standins.avx.script(page_error("OPEN_WORK_ORDERS_FOUND"))
    deliver(functions, key_vault_event(standins, name, version, NEAR))
    assert len(standins.avx.renew_calls()) == renewals_before + 1
    assert standins.key_vault.latest(name).version == version  # type: ignore[union-attr]

    # Another event within the backoff (1 h after one failure): nothing is sent to AVX.
    deliver(functions, key_vault_event(standins, name, version, NEAR))
    assert len(standins.avx.renew_calls()) == renewals_before + 1

    claims_age(2)  # past the backoff
    events.items.clear()
    expired = key_vault_event(standins, name, version, EXPIRED, expires=datetime.now(UTC) - timedelta(minutes=5))
    deliver(functions, expired)

    (reported,) = events.named("CertificateExpired")
    assert reported["owner"] == "appviewx" and reported["certificateName"] == name
    assert reported["reason"] == "OPEN_WORK_ORDERS_FOUND"
    assert len(standins.avx.renew_calls()) == renewals_before + 2  # retried once
    assert standins.key_vault.latest(name).version != version  # type: ignore[union-attr]
    notified = [m for m in receiver.messages() if m.get("event") == "CertificateExpired"]
    assert notified and notified[0]["certificateName"] == name

    deliver(functions, expired)  # the same event again: nothing more
    assert len(standins.avx.renew_calls()) == renewals_before + 2


def test_an_expired_event_within_the_backoff_still_reports(
    call_webhook: WebhookCaller, functions: dict[str, Any], standins: StandIns, events: Events
) -> None:
    name, version = renew_through_webhook(call_webhook, standins)
    renewals_before = len(standins.avx.renew_calls())
    standins.avx.script(page_error("OPEN_WORK_ORDERS_FOUND"))
    deliver(functions, key_vault_event(standins, name, version, NEAR))
    events.items.clear()
    deliver(functions, key_vault_event(standins, name, version, EXPIRED))
    (reported,) = events.named("CertificateExpired")
    assert (reported["owner"], reported["reason"]) == ("appviewx", "OPEN_WORK_ORDERS_FOUND")
    assert len(standins.avx.renew_calls()) == renewals_before + 1  # in its backoff: not sent again


# -- 3. a late queue message is honoured --------------------------------------------------------------------------


def test_a_queue_message_delayed_three_hours_is_renewed(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    item = standins.avx.add_certificate(f"late{uuid.uuid4().hex[:6]}.contoso.com")
    _, answer, queue = post_async(functions, {"resourceId": item.resource_id})
    assert queue.value is not None
    time_passes(3 * 60)
    run_complete_pending(functions)  # the message may still arrive: the record is not failed on age
    assert status_of(functions, answer["pendingId"])["state"] == "accepted"
    deliver_message(functions, queue.value)
    assert status_of(functions, answer["pendingId"])["state"] == "renewed"
    assert len(standins.avx.renew_calls()) == 1


# -- 4. one unreadable open row --------------------------------------------------------------------------------------


def test_one_malformed_open_row_is_reported_once_and_the_others_complete(
    call_webhook: WebhookCaller, functions: dict[str, Any], standins: StandIns, events: Events
) -> None:
    item = standins.avx.add_certificate(f"waits{uuid.uuid4().hex[:6]}.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id}, params={"autoApproval": "false"})
    assert status == 202, answer
    standins.avx.approve(item.resource_id)
    bad_key = "f" * 32
    app_context.pending_store().table.upsert_entity(
        {"PartitionKey": "avx", "RowKey": bad_key, "state": "pending", "created_at": "yesterday", "next_attempt_at": 7}
    )
    events.items.clear()

    run_complete_pending(functions)
    run_complete_pending(functions)

    assert status_of(functions, answer["pendingId"])["state"] == "renewed"
    (unreadable,) = events.named("RenewalRecordUnreadable")
    assert unreadable["pendingId"] == bad_key


# -- 5. notifications ---------------------------------------------------------------------------------------------


def test_a_receiver_failing_once_does_not_drop_the_next_notification(
    functions: dict[str, Any], standins: StandIns, receiver: ReceiverStandIn
) -> None:
    now = datetime.now(UTC)
    names = []
    for _ in range(2):
        name = f"legacy-{uuid.uuid4().hex[:6]}"
        issued = issue_certificate("legacy.contoso.com", days=90, not_before=now - timedelta(days=91))
        version = standins.key_vault.seed(name, issued.certificate, issued.private_key, tags={"team": "web"}).version
        names.append((name, version))
    receiver.script(server_error(), server_error(), server_error())  # the whole first delivery fails

    for name, version in names:
        deliver(functions, key_vault_event(standins, name, version, EXPIRED, expires=now - timedelta(days=1)))

    delivered = [json.loads(r.body)["certificateName"] for r in receiver.received("POST") if r.body]
    # The second one is delivered, and the first (failed) one is retried with it.
    assert names[1][0] in delivered and names[0][0] in delivered[3:]


def test_a_refused_version_is_retried_once_its_certificate_backoff_has_passed() -> None:
    from shared.vault.renewal_plan import RenewalFailures
    from shared.vault.version_retry import backoff_passed

    now = datetime.now(UTC)
    assert backoff_passed(None, now)  # no failure counted
    assert not backoff_passed(RenewalFailures(3, now - timedelta(hours=3), "X"), now)  # 3 failures: 4 h
    assert backoff_passed(RenewalFailures(3, now - timedelta(hours=4), "X"), now)


def test_a_version_whose_pending_renewal_gave_up_is_reported_on_expiry_and_retried_after_backoff(
    call_webhook: WebhookCaller, functions: dict[str, Any], standins: StandIns, events: Events
) -> None:
    name, version = renew_through_webhook(call_webhook, standins)
    renewals_before = len(standins.avx.renew_calls())
    refused = Response.json({"error": {"code": "Forbidden", "message": "denied"}}, status=403)
    standins.key_vault.fail_next(200, refused, operation="import")
    deliver(functions, key_vault_event(standins, name, version, NEAR))  # AVX renewed; Key Vault refused: pending
    assert len(standins.avx.renew_calls()) == renewals_before + 1
    time_passes(8 * 24 * 60)  # past PENDING_MAX_DAYS: the timer gives up on it
    run_complete_pending(functions)
    assert [r.reason for r in records_of(name) if r.state == "failed"] == ["PENDING_GAVE_UP"]
    standins.key_vault.reset_records()  # Key Vault takes imports again

    events.items.clear()
    deliver(functions, key_vault_event(standins, name, version, EXPIRED))  # within the backoff: reported only
    (reported,) = events.named("CertificateExpired")
    assert (reported["owner"], reported["reason"]) == ("appviewx", "PENDING_GAVE_UP")
    assert len(standins.avx.renew_calls()) == renewals_before + 1

    claims_age(2)
    deliver(functions, key_vault_event(standins, name, version, EXPIRED))
    assert len(standins.avx.renew_calls()) == renewals_before + 2  # retried once after the backoff
    assert standins.key_vault.latest(name).version != version  # type: ignore[union-attr]
