"""Hardening of the AppViewX paths (webhook, queue, complete_pending, Key Vault events, inventory).

Each end-to-end test reproduces a defect found in review (it failed on the code as reviewed), through
`function_app.app` against the stand-ins; the pure rules the fixes rest on (which listed certificate is the renewal,
whether AVX provably did not renew, what an AVX date or a page size reads as) are tested beside them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared import context as app_context
from shared.appviewx import completion as avx_completion
from shared.appviewx.queued import RetryQueued
from shared.appviewx.records import LEASE
from shared.appviewx.renewal_rules import (
    AVX_BUSY,
    AVX_OUTCOME_UNKNOWN,
    AVX_REFUSED,
    avx_renew_outcome,
    parse_avx_time,
)
from shared.azure.tables import update_mode
from shared.core.errors import AvxError
from shared.vault.event_claims import EVENT_PARTITION, VERSION_PARTITION, version_key
from shared.vault.events import RetryLater
from tests.appviewx.test_avx_pipeline import run_complete_pending, status_of, stored_thumbprint, time_passes
from tests.appviewx.test_renew_queue import deliver, post_async
from tests.standins import certs
from tests.standins.avx import STATUS_TABLE, page_error
from tests.standins.base import RecordedRequest, Response
from tests.standins.stack import REPO_ROOT, StandIns
from tests.vault.test_inventory import inventory
from tests.vault.test_keyvault_events import EXPIRED, key_vault_event, renew_through_webhook
from tests.vault.test_keyvault_events import deliver as deliver_event


def _avx_renews_then_answers(standins: StandIns, monkeypatch: pytest.MonkeyPatch, answer: Response) -> None:
    """AVX renews (the stand-in issues the new certificate), but the app gets `answer` instead of AVX's result."""
    original = standins.avx._renew

    def renew_then_answer(request: RecordedRequest) -> Response:
        original(request)
        return answer

    monkeypatch.setattr(standins.avx, "_renew", renew_then_answer)


def _gateway_timeout_after_renewing(standins: StandIns, monkeypatch: pytest.MonkeyPatch, status: int = 504) -> None:
    """A gateway in front of AVX gives up (504, or 502) while AVX goes on and renews: the app sees the gateway's."""
    _avx_renews_then_answers(standins, monkeypatch, Response.json({"message": "Gateway Timeout"}, status=status))


# -- 1. complete_pending stores another AVX certificate of the same common name ---------------------------------


def test_manual_approval_never_stores_a_certificate_of_another_avx_resource_with_the_same_name(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any]
) -> None:
    common_name = f"twin-{uuid.uuid4().hex[:6]}.contoso.com"
    name = common_name.replace(".", "-")
    mine = standins.avx.add_certificate(common_name)
    other = standins.avx.add_certificate(common_name)  # another AVX certificate of the same name (another LB, team)
    status, answer = call_webhook(
        {"commonName": common_name, "serialNumber": mine.serial_number}, params={"autoApproval": "false"}
    )
    assert status == 202, answer
    assert answer["avx"]["resourceId"] == mine.renewals[0].resource_id  # AVX named the record it creates

    standins.avx.renew_outside(other.resource_id)  # meanwhile the other certificate is renewed (outside this app)
    run_complete_pending(functions)  # before anyone approved this renewal
    assert standins.key_vault.latest(name) is None, "another resource's certificate was stored as this renewal"
    assert status_of(functions, answer["pendingId"])["state"] == "pending"

    renewed = standins.avx.approve(mine.resource_id)
    time_passes(20)
    run_complete_pending(functions)
    assert stored_thumbprint(standins, name) == certs.thumbprint_hex(renewed.certificate)
    assert status_of(functions, answer["pendingId"])["state"] == "renewed"


# The pure rules that tell a renewal from a twin (issue 22: under any record, issued after the request) are tested in
# test_renewal_finder.py.


def test_complete_pending_keeps_an_ambiguous_renewal_pending_and_says_why(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any]
) -> None:
    common_name = f"amb-{uuid.uuid4().hex[:6]}.contoso.com"
    mine = standins.avx.add_certificate(common_name)
    other = standins.avx.add_certificate(common_name)
    # AVX renews, but the answer never reaches the app (its connection drops after the request was sent): the
    # record knows the common name and serial, not AVX's resource.
    standins.avx.script(Response(drop=True))
    status, answer = call_webhook({"commonName": common_name, "serialNumber": mine.serial_number})
    assert status == 202 and answer["avx"] is None, answer
    # AVX renewed it (a new record), and meanwhile another team renewed the twin: two renewals of the name, issued
    # after the request, under different records
    standins.avx.renew_outside(mine.resource_id)
    standins.avx.renew_outside(other.resource_id)
    time_passes(20)
    run_complete_pending(functions)
    record = status_of(functions, answer["pendingId"])
    assert record["state"] == "pending" and "ambiguous" in record["lastError"], record
    assert "AVX_RENEWAL_AMBIGUOUS" in record["lastError"]
    assert standins.key_vault.latest(common_name.replace(".", "-")) is None
    assert len(standins.avx.renew_calls()) == 1


# -- 2. an AVX gateway's 504 is taken for a refusal ---------------------------------------------------------------


@pytest.mark.parametrize("gateway_status", [502, 504])
def test_queue_never_renews_twice_after_a_gateway_timeout(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    gateway_status: int,
) -> None:
    item = standins.avx.add_certificate(f"gw504-{uuid.uuid4().hex[:6]}.contoso.com")
    _gateway_timeout_after_renewing(standins, monkeypatch, gateway_status)
    response, body, queue = post_async(functions, {"resourceId": item.resource_id})
    assert response.status_code == 202 and queue.value, body
    deliver(functions, queue.value)  # returns normally: nothing to retry, the message is done
    deliver(functions, queue.value)  # a duplicate delivery renews nothing either
    assert len(standins.avx.renew_calls()) == 1 and len(item.renewals) == 1
    record = status_of(functions, body["pendingId"])
    assert record["state"] == "pending", record  # AVX may have renewed: tracked, never requeued

    time_passes(20)
    run_complete_pending(functions)  # finds and stores what AVX renewed, never renewing again
    assert stored_thumbprint(standins, item.common_name.replace(".", "-")) == certs.thumbprint_hex(
        item.renewals[-1].certificate
    )
    assert status_of(functions, body["pendingId"])["state"] == "renewed"
    assert len(standins.avx.renew_calls()) == 1


@pytest.mark.parametrize("answer", ["gateway-502", "gateway-504", "failed-to-download"])
def test_webhook_keeps_a_renewal_avx_may_have_done_pending_and_never_renews_again(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    item = standins.avx.add_certificate(f"gw504s-{uuid.uuid4().hex[:6]}.contoso.com")
    if answer == "failed-to-download":  # AVX's own 500 FAILED "performed successfully but failed to download"
        _avx_renews_then_answers(standins, monkeypatch, page_error("FAILED_DOWNLOAD"))
    else:
        _gateway_timeout_after_renewing(standins, monkeypatch, int(answer[-3:]))
    headers = {"Idempotency-Key": f"gw504-{uuid.uuid4().hex}"}
    first = call_webhook({"resourceId": item.resource_id}, headers=headers)
    again = call_webhook({"resourceId": item.resource_id}, headers=headers)  # the caller retries
    assert len(standins.avx.renew_calls()) == 1, "the retry under the same Idempotency-Key renewed again"
    assert first[0] == 202 and first[1]["status"] == "pending", first  # AVX may have renewed: tracked, not failed
    assert again == first

    time_passes(20)
    run_complete_pending(functions)  # downloads what AVX renewed: stored, AVX renew called once
    assert stored_thumbprint(standins, item.common_name.replace(".", "-")) == certs.thumbprint_hex(
        item.renewals[-1].certificate
    )
    assert status_of(functions, first[1]["pendingId"])["state"] == "renewed"
    assert len(standins.avx.renew_calls()) == 1 and len(item.renewals) == 1


def _error(status: int | None, app_code: str | None = None, message: str = "x", sent: bool = True) -> AvxError:
    return AvxError(
        message, code=app_code or "AVX_BAD_RESPONSE", http_status=status, sent=sent, app_status_code=app_code
    )


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (_error(None, sent=False), AVX_BUSY),  # never reached AVX
        (_error(429), AVX_BUSY),
        (_error(503), AVX_BUSY),
        (_error(503, "avx-common-011"), AVX_BUSY),
        (_error(400, "VALIDATION_ERROR_0004"), AVX_REFUSED),
        (_error(401, "AVX_GW_003", sent=False), AVX_REFUSED),  # a refused login: never retried in a loop
        (_error(417, "OPEN_WORK_ORDERS_FOUND"), AVX_REFUSED),
        (_error(404), AVX_REFUSED),
        (_error(500, "FAILED", STATUS_TABLE["FAILED_NO_KEY"][2]), AVX_REFUSED),
        (_error(500, "CANNOT_PERFORM_OPERATION"), AVX_REFUSED),
        (_error(500, "avx-common-011"), AVX_REFUSED),
        (_error(500, "FAILED", STATUS_TABLE["FAILED_DOWNLOAD"][2]), AVX_OUTCOME_UNKNOWN),  # AVX DID renew
        (_error(502), AVX_OUTCOME_UNKNOWN),  # a gateway: AVX may go on and renew
        (_error(504), AVX_OUTCOME_UNKNOWN),
        (_error(500), AVX_OUTCOME_UNKNOWN),  # a 5xx without AVX's own code
        (_error(None), AVX_OUTCOME_UNKNOWN),  # timeout or dropped after sending
        (_error(200), AVX_OUTCOME_UNKNOWN),  # an unreadable 2xx
    ],
)
def test_one_rule_tells_whether_avx_provably_did_not_renew(error: AvxError, outcome: str) -> None:
    assert avx_renew_outcome(error) == outcome


# -- 3. a Key Vault event whose first delivery died is dropped as a duplicate ------------------------------------


def test_an_event_whose_first_delivery_died_is_renewed_or_retried(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any]
) -> None:
    name, version = renew_through_webhook(call_webhook, standins)
    renewals_before = len(standins.avx.renew_calls())
    event = key_vault_event(standins, name, version)
    spec = {"id": event.id, "eventType": event.event_type, "subject": name, "data": event.get_json()}

    arrived = standins.key_vault.hold("get")  # the first delivery reads the certificate's current version ...
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.telemetry_child", json.dumps([{"eventgrid": spec}])],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert arrived.wait(60), "the child never reached Key Vault"
        os.kill(child.pid, signal.SIGKILL)  # ... and the host dies there (scale-in, crash, deployment)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        standins.key_vault.release_held()
    assert child.returncode == -signal.SIGKILL

    # Event Grid got no answer, so it delivers the event again (10 s, 30 s, 1 min, ...). A delivery that succeeds
    # ends the retries: it must either renew, or fail so that Event Grid keeps trying.
    # While the dead delivery's claim is fresh nobody can tell it died: fail, so Event Grid retries.
    with pytest.raises(RetryLater):
        deliver_event(functions, event)
    assert len(standins.avx.renew_calls()) == renewals_before

    # Event Grid's later retry (its backoff reaches 30 min, 1 h, ...) finds the claim abandoned: renewed, once.
    _age_event_claims(minutes=16)
    deliver_event(functions, event)
    assert len(standins.avx.renew_calls()) == renewals_before + 1
    renewed = standins.key_vault.latest(name)
    assert renewed is not None and renewed.version != version
    deliver_event(functions, event)  # and a further redelivery is a duplicate of a finished event
    assert len(standins.avx.renew_calls()) == renewals_before + 1


def test_a_version_claim_held_before_avx_is_retried_and_one_tied_to_a_record_is_left_to_it(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any]
) -> None:
    name, version = renew_through_webhook(call_webhook, standins)
    renewals_before = len(standins.avx.renew_calls())
    vault_host = urlsplit(app_context.settings().key_vault.url).netloc
    key = version_key(vault_host, name, version)
    claims = app_context.event_claims()
    claims.claim(VERSION_PARTITION, key, {"certificate": name})  # another delivery, not at AVX yet (or dead)

    with pytest.raises(RetryLater):
        deliver_event(functions, key_vault_event(standins, name, version))
    assert len(standins.avx.renew_calls()) == renewals_before

    claims.attach(VERSION_PARTITION, key, uuid.uuid4().hex)  # it reached AVX: its renewal record owns the version
    deliver_event(functions, key_vault_event(standins, name, version, EXPIRED))  # handled: never renewed again
    assert len(standins.avx.renew_calls()) == renewals_before


def _age_event_claims(minutes: float) -> None:
    """Event Grid's retry comes `minutes` later: the Key Vault event claims are that much older."""
    table = app_context.event_claims().table
    for partition in (EVENT_PARTITION, VERSION_PARTITION):
        for entity in list(table.query_entities(f"PartitionKey eq '{partition}'")):
            changed = dict(entity)
            changed["createdAt"] = entity["createdAt"] - timedelta(minutes=minutes)
            table.upsert_entity(changed)


# -- 4. an AVX date the app cannot represent ----------------------------------------------------------------------


def _search_lists_an_absurd_date(standins: StandIns, monkeypatch: pytest.MonkeyPatch) -> None:
    """AVX's search lists one certificate with an epoch-milliseconds validTo beyond year 9999 (garbage upstream)."""
    original = standins.avx._search

    def search(request: RecordedRequest) -> Response:
        answer = original(request)
        document = json.loads(answer.body)
        objects = document["response"]["response"]["objects"]
        if objects:
            objects.append({**objects[0], "serialNumber": "ABCDEF0123", "validTo": "99999999999999999999"})
        return Response.json(document)

    monkeypatch.setattr(standins.avx, "_search", search)


@pytest.mark.parametrize(
    "value",
    ["99999999999999999999", "9" * 5000, "²", "١٢٣", "12345678901234567890123", "x" * 5000],
)
def test_parse_avx_time_reads_unreadable_values_as_missing(value: str) -> None:
    assert parse_avx_time(value) is None


def test_parse_avx_time_still_reads_epochs_and_iso_dates() -> None:
    assert parse_avx_time("1767225600000") == datetime(2026, 1, 1, tzinfo=UTC)  # epoch milliseconds
    assert parse_avx_time(" 1767225600 ") == datetime(2026, 1, 1, tzinfo=UTC)  # epoch seconds
    assert parse_avx_time("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=UTC)


def test_an_absurd_avx_date_is_no_bare_500(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = standins.avx.add_certificate(f"baddate-{uuid.uuid4().hex[:6]}.contoso.com")
    _search_lists_an_absurd_date(standins, monkeypatch)
    status, answer = call_webhook({"resourceId": item.resource_id})  # one search before the renew
    # The garbage row is ignored (it is not the current certificate): the renewal goes through and is stored.
    assert status == 200 and answer["status"] == "renewed", answer
    assert len(standins.avx.renew_calls()) == 1


def test_one_absurd_avx_date_does_not_stop_completion_of_other_records(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    denied = {"error": {"code": "Forbidden", "message": "The user does not have certificates import permission"}}
    standins.key_vault.fail_next(2, Response.json(denied, status=403), operation="import")
    bad = standins.avx.add_certificate(f"bad-{uuid.uuid4().hex[:6]}.contoso.com")
    good = standins.avx.add_certificate(f"good-{uuid.uuid4().hex[:6]}.contoso.com")
    for item in (bad, good):
        status, answer = call_webhook({"commonName": item.common_name, "serialNumber": item.serial_number})
        assert status == 202, answer
    time_passes(20)

    original = standins.avx._search

    def search(request: RecordedRequest) -> Response:  # only the bad certificate's listing holds the garbage
        answer = original(request)
        document = json.loads(answer.body)
        objects = document["response"]["response"]["objects"]
        if objects and objects[0]["commonName"] == bad.common_name:
            objects.append({**objects[0], "serialNumber": "ABCDEF0123", "validTo": "99999999999999999999"})
        return Response.json(document)

    monkeypatch.setattr(standins.avx, "_search", search)
    try:
        run_complete_pending(functions)
    finally:
        good_name = good.common_name.replace(".", "-")
        assert stored_thumbprint(standins, good_name) == certs.thumbprint_hex(good.renewals[-1].certificate)


def test_an_unexpected_failure_on_one_record_backs_it_off_and_the_run_goes_on(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    denied = {"error": {"code": "Forbidden", "message": "The user does not have certificates import permission"}}
    standins.key_vault.fail_next(2, Response.json(denied, status=403), operation="import")
    bad = standins.avx.add_certificate(f"boom-{uuid.uuid4().hex[:6]}.contoso.com")
    good = standins.avx.add_certificate(f"fine-{uuid.uuid4().hex[:6]}.contoso.com")
    pending_ids = {}
    for item in (bad, good):
        status, answer = call_webhook({"commonName": item.common_name, "serialNumber": item.serial_number})
        assert status == 202, answer
        pending_ids[item.common_name] = answer["pendingId"]
    time_passes(20)

    # Fault injection at the one seam a bug would hit (a last resort: no stand-in answer makes the app's own code
    # raise any more): finding the bad record's renewal raises something nobody planned for.
    original = avx_completion.find_renewed

    def find_renewed(record: Any, avx: Any) -> Any:
        if record.common_name == bad.common_name:
            raise RuntimeError("a bug nobody planned for")
        return original(record, avx)

    monkeypatch.setattr(avx_completion, "find_renewed", find_renewed)
    run_complete_pending(functions)  # does not raise

    good_name = good.common_name.replace(".", "-")
    assert stored_thumbprint(standins, good_name) == certs.thumbprint_hex(good.renewals[-1].certificate)
    backed_off = status_of(functions, pending_ids[bad.common_name])
    assert backed_off["state"] == "pending", backed_off
    assert "COMPLETION_UNEXPECTED" in backed_off["lastError"] and "RuntimeError" in backed_off["lastError"]
    assert backed_off["attempts"] >= 1
    assert datetime.fromisoformat(backed_off["nextAttemptAt"].replace("Z", "+00:00")) > datetime.now(UTC)


# -- 5. the inventory's page size ---------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", ["²", "١٠", "٣", "1" * 5000, "+5", "0", "26", "5.0"])
def test_a_page_size_that_is_not_ascii_digits_in_range_is_refused_not_a_500(
    functions: dict[str, Any], app_env: dict[str, str], page_size: str
) -> None:
    status, body = inventory(functions, {"maxResults": page_size})
    assert status == 400 and body["error"]["code"] == "INVALID_REQUEST", body
    assert "maxResults" in body["error"]["message"] and "ASCII digits" in body["error"]["remediation"]


# -- 6. a queue delivery that died after claiming its record ------------------------------------------------------

_QUEUE_CHILD = """
import sys, uuid
import azure.functions as func
import function_app
from tests.standins.stack import FakeContext
functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
message = func.QueueMessage(id=uuid.uuid4().hex, body=sys.argv[1].encode(), pop_receipt="receipt")
functions["renew_queued"].get_user_function()(message, FakeContext("renew_queued"))
"""


def test_a_queue_message_whose_delivery_died_is_renewed_or_retried(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    item = standins.avx.add_certificate(f"qdied-{uuid.uuid4().hex[:6]}.contoso.com")
    # A merge request: the queue function reads Key Vault's pending operation in its checks, before AVX is called.
    response, body, queue = post_async(
        functions,
        {"resourceId": item.resource_id, "certificateFormat": {"format": "CRT"}, "keyVaultCertificateName": "qdied"},
    )
    assert response.status_code == 202 and queue.value, body

    arrived = standins.key_vault.hold("pending")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    child = subprocess.Popen(
        [sys.executable, "-c", _QUEUE_CHILD, queue.value],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert arrived.wait(60), "the child never reached Key Vault"
        os.kill(child.pid, signal.SIGKILL)  # the instance dies after the delivery claimed the record
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        standins.key_vault.release_held()
    assert child.returncode == -signal.SIGKILL
    assert standins.avx.renew_calls() == []

    # The message becomes visible again and the host delivers it (within the dead delivery's 15-minute lease).
    # Returning normally deletes the message: it must either do the renewal's checks again, or fail to be retried.
    with pytest.raises(RetryQueued):  # the dead delivery's lease still holds the record: the host retries later
        deliver(functions, queue.value)
    record = status_of(functions, body["pendingId"])
    assert (record["state"], record["reason"]) == ("accepted", "QUEUED"), record
    assert standins.avx.renew_calls() == []

    time_passes(16)  # the host's later retry (host.json spreads them past the lease) finds the lease run out
    deliver(functions, queue.value)
    # The renewal's checks ran again: Key Vault holds no pending operation to merge into, so it ends failed with
    # that reason and AVX is never asked (nothing renewed that could not be stored).
    record = status_of(functions, body["pendingId"])
    assert (record["state"], record["reason"]) == ("failed", "UNSTORABLE_FORMAT"), record
    assert standins.avx.renew_calls() == []


def test_the_queue_retries_a_message_past_a_dead_deliverys_lease() -> None:
    """A delivery whose worker died is retried after visibilityTimeout, at most maxDequeueCount - 1 times: together
    they must outlast the dead delivery's lease, or the message is poisoned while the lease still holds its record."""
    queues = json.loads((REPO_ROOT / "host.json").read_text(encoding="utf-8"))["extensions"]["queues"]
    hours, minutes, seconds = (int(part) for part in queues["visibilityTimeout"].split(":"))
    retry_span = (queues["maxDequeueCount"] - 1) * timedelta(hours=hours, minutes=minutes, seconds=seconds)
    assert retry_span > LEASE + timedelta(minutes=2), retry_span
    assert timedelta(hours=hours, minutes=minutes, seconds=seconds) <= timedelta(
        minutes=10
    )  # a 429/503 is retried soon


# -- 7. an asynchronous renewal's Idempotency-Key claim -----------------------------------------------------------


def _abandon_claim_of(pending_id: str, minutes: float = 16) -> None:
    """The key's claim is left `running` (the invocation died after answering, or its completion was lost) and a
    retry comes `minutes` later: the claim looks abandoned. Found by the renewal record it is tied to."""
    table = app_context.idempotency_store().table
    (entity,) = [e for e in table.query_entities("PartitionKey eq 'webhook'") if e.get("pendingId") == pending_id]
    changed = {k: v for k, v in entity.items() if k not in ("status", "body")}
    changed.update(state="running", createdAt=entity["createdAt"] - timedelta(minutes=minutes))
    table.upsert_entity(changed, mode=update_mode("replace"))


def test_an_async_retry_after_a_stale_claim_replays_the_202_and_queues_nothing(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    item = standins.avx.add_certificate(f"async-{uuid.uuid4().hex[:6]}.contoso.com")
    headers = {"Idempotency-Key": f"async-{uuid.uuid4().hex}"}
    response, body, queue = post_async(functions, {"resourceId": item.resource_id}, headers=headers)
    assert response.status_code == 202 and queue.value, body
    _abandon_claim_of(body["pendingId"])  # before this fix the claim held no pendingId: the retry queued anew

    again, again_body, again_queue = post_async(functions, {"resourceId": item.resource_id}, headers=headers)
    assert again.status_code == 202 and again_queue.value is None, again_body  # nothing queued a second time
    assert (again_body["status"], again_body["pendingId"]) == ("accepted", body["pendingId"])
    assert again.headers["Location"].endswith(body["pendingId"])
    records = [r for r in app_context.pending_store().all_records() if r.requested_resource_id == item.resource_id]
    assert [r.pending_id for r in records] == [body["pendingId"]]  # no second record either

    deliver(functions, queue.value)  # the one message renews, once
    assert len(standins.avx.renew_calls()) == 1
    assert status_of(functions, body["pendingId"])["state"] == "renewed"


def test_a_stale_claim_whose_record_is_gone_is_answered_409_and_never_renews(
    standins: StandIns, functions: dict[str, Any], call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = standins.avx.add_certificate(f"gone-{uuid.uuid4().hex[:6]}.contoso.com")
    _gateway_timeout_after_renewing(standins, monkeypatch)  # AVX renewed; the answer is lost: the record is pending
    headers = {"Idempotency-Key": f"gone-{uuid.uuid4().hex}"}
    status, answer = call_webhook({"resourceId": item.resource_id}, headers=headers)
    assert status == 202, answer
    _abandon_claim_of(answer["pendingId"])
    app_context.pending_store().table.delete_entity("avx", answer["pendingId"])  # its record cannot be read

    for _ in range(2):
        status, again = call_webhook({"resourceId": item.resource_id}, headers=headers)
        assert (status, again["error"]["code"]) == (409, "IN_PROGRESS"), again
        assert "not renewed again" in again["error"]["message"] and again["error"]["remediation"]
    assert len(standins.avx.renew_calls()) == 1 and len(item.renewals) == 1
