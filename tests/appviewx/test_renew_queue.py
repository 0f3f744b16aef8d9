"""Issue 13: `Prefer: respond-async` on the webhook, the `renew_queued` queue trigger and its poison handler.

Everything runs through `function_app.app`: the webhook is called with the queue output binding the host would pass
(the message is captured from it), and the queue triggers get real `azure.functions.QueueMessage` objects carrying
exactly what was queued. AVX, Key Vault, identity and Azurite are the stand-ins of the other tests.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import azure.functions as func
import pytest

from shared.appviewx.queued import RetryQueued
from shared.operator.queue_host import QueueOutput
from tests.appviewx.test_avx_pipeline import run_complete_pending, status_of, stored_thumbprint, time_passes
from tests.standins import certs
from tests.standins.avx import page_error
from tests.standins.base import Response
from tests.standins.stack import SENTINELS, FakeContext, StandIns

CALLER_PASSWORD = "SENTINEL-caller-pfx-password-1Aa!"
SENTINELS_HERE = (*SENTINELS, CALLER_PASSWORD)


# What the host's queue output binding receives from one invocation (the local host's own capture).
CapturedQueue = QueueOutput


def post_async(
    functions: dict[str, Any],
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    prefer: str = "respond-async",
) -> tuple[func.HttpResponse, dict[str, Any], CapturedQueue]:
    queue = CapturedQueue()
    request = func.HttpRequest(
        method="POST",
        url="http://localhost:7071/api/certificates/renew",
        headers={"Content-Type": "application/json", "Prefer": prefer, **(headers or {})},
        params=params or {},
        route_params={},
        body=json.dumps(body).encode(),
    )
    response = functions["renew_http"].get_user_function()(request, FakeContext("renew_http"), renewals=queue)
    text = response.get_body().decode()
    for sentinel in SENTINELS_HERE:
        assert sentinel not in text and sentinel not in (queue.value or "")
    return response, json.loads(text), queue


def deliver(functions: dict[str, Any], queued: str, *, poison: bool = False) -> None:
    message = func.QueueMessage(id=uuid.uuid4().hex, body=queued.encode(), pop_receipt="receipt")
    name = "renew_queued_poison" if poison else "renew_queued"
    functions[name].get_user_function()(message, FakeContext(name))


def imports(standins: StandIns) -> list[Any]:
    """Key Vault imports that carried a certificate (the SDK's first, bodiless request only fetches the challenge)."""
    return [r for r in standins.key_vault.received("POST", "/import") if r.body]


def test_respond_async_answers_202_then_the_queue_renews_once(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    item = standins.avx.add_certificate("async.contoso.com")
    body = {"resourceId": item.resource_id, "certificateFormat": {"format": "PFX", "password": CALLER_PASSWORD}}
    response, answer, queue = post_async(functions, body, headers={"Idempotency-Key": "async-1"})

    assert response.status_code == 202, answer
    assert answer["status"] == "accepted" and len(answer["pendingId"]) == 32
    pending_id = answer["pendingId"]
    assert response.headers["Location"] == f"/api/certificates/renew/{pending_id}"
    assert int(response.headers["Retry-After"]) > 0
    assert response.headers["Preference-Applied"] == "respond-async"
    assert standins.avx.renew_calls() == [] and standins.avx.received("POST", "search") == []  # answered at once
    assert queue.value is not None and json.loads(queue.value)["pendingId"] == pending_id
    assert status_of(functions, pending_id)["state"] == "accepted"

    again, replayed, second_queue = post_async(functions, body, headers={"Idempotency-Key": "async-1"})
    assert (again.status_code, replayed) == (202, answer) and again.headers["Location"] == response.headers["Location"]
    assert second_queue.value is None  # a retried request is never queued twice

    deliver(functions, queue.value)
    record = status_of(functions, pending_id)
    assert record["state"] == "renewed" and record["keyVaultCertificateId"]
    renewed = item.renewals[-1]
    assert stored_thumbprint(standins, "async-contoso-com") == certs.thumbprint_hex(renewed.certificate)
    # AVX got a one-time password, never the caller's (which was never queued).
    sent = json.loads(standins.avx.renew_calls()[0].body)["certificateFormat"]["password"]
    assert sent and sent != CALLER_PASSWORD

    deliver(functions, queue.value)  # delivered again (at-least-once queues): nothing renewed again
    assert len(standins.avx.renew_calls()) == 1
    assert len(imports(standins)) == 1
    assert status_of(functions, pending_id)["state"] == "renewed"


def test_concurrent_deliveries_renew_once(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    item = standins.avx.add_certificate("twice.contoso.com")
    _, answer, queue = post_async(functions, {"commonName": item.common_name, "serialNumber": item.serial_number})
    assert queue.value is not None
    standins.avx.renew_delay = 1.0
    outcomes: list[str] = []

    def delivery() -> None:
        try:
            deliver(functions, queue.value)
            outcomes.append("done")
        except RetryQueued as exc:  # lost the claim while the record was still queued: the host retries it
            outcomes.append(exc.code)

    threads = [threading.Thread(target=delivery) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(outcomes)) <= ["RECORD_HELD", "done"] and len(outcomes) == 3, outcomes
    for _ in range(outcomes.count("RECORD_HELD")):
        deliver(functions, queue.value)  # the host's retry: the record is no longer queued, nothing to do
    assert len(standins.avx.renew_calls()) == 1
    assert len(imports(standins)) == 1
    assert status_of(functions, answer["pendingId"])["state"] == "renewed"


def test_avx_refusal_ends_the_record_failed_with_avx_code(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    item = standins.avx.add_certificate("refused.contoso.com")
    _, answer, queue = post_async(functions, {"commonName": item.common_name, "serialNumber": item.serial_number})
    assert queue.value is not None
    standins.avx.script(page_error("OPEN_WORK_ORDERS_FOUND"))
    deliver(functions, queue.value)  # a refusal is final: no exception, the queue does not retry it
    record = status_of(functions, answer["pendingId"])
    assert record["state"] == "failed" and record["reason"] == "OPEN_WORK_ORDERS_FOUND"
    assert standins.key_vault.latest("refused-contoso-com") is None


def test_transient_failure_is_retried_by_the_queue_then_renews(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    item = standins.avx.add_certificate("retry.contoso.com")
    _, answer, queue = post_async(functions, {"commonName": item.common_name, "serialNumber": item.serial_number})
    assert queue.value is not None
    standins.avx.script(Response.text("busy", status=503))
    with pytest.raises(RetryQueued):  # the host makes the message visible again after visibilityTimeout
        deliver(functions, queue.value)
    record = status_of(functions, answer["pendingId"])
    assert record["state"] == "accepted" and record["reason"] == "QUEUED" and "503" in record["lastError"]

    deliver(functions, queue.value)
    assert status_of(functions, answer["pendingId"])["state"] == "renewed"
    assert len(standins.avx.renew_calls()) == 2  # the first was refused with 503: provably not renewed


def test_poison_message_ends_the_record_failed_with_its_last_reason(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    item = standins.avx.add_certificate("poison.contoso.com")
    _, answer, queue = post_async(functions, {"commonName": item.common_name, "serialNumber": item.serial_number})
    assert queue.value is not None
    for _ in range(2):
        standins.avx.script(Response.text("busy", status=503))
        with pytest.raises(RetryQueued):
            deliver(functions, queue.value)
    deliver(functions, queue.value, poison=True)  # the host moved it to <queue>-poison after maxDequeueCount
    record = status_of(functions, answer["pendingId"])
    assert record["state"] == "failed" and record["reason"] == "QUEUE_RETRIES_EXHAUSTED"
    assert "503" in record["lastError"]
    deliver(functions, queue.value)  # a late duplicate of the poisoned message renews nothing
    assert len(standins.avx.renew_calls()) == 2


def test_poison_after_avx_may_have_acted_hands_the_record_to_the_timer(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import context as app_context

    monkeypatch.setenv("AVX_TIMEOUT_SECONDS", "2")
    app_context.reset()
    item = standins.avx.add_certificate("crashed.contoso.com")
    _, answer, queue = post_async(functions, {"commonName": item.common_name, "serialNumber": item.serial_number})
    assert queue.value is not None
    standins.avx.answer_delay = 5  # > AVX_TIMEOUT_SECONDS: AVX renews, the app's read times out
    deliver(functions, queue.value)  # timed out after sending: pending, never sent again
    record = status_of(functions, answer["pendingId"])
    assert record["state"] == "pending" and record["reason"] == "AVX_TIMEOUT"
    deliver(functions, queue.value, poison=True)  # already handed on: the poison handler changes nothing
    assert status_of(functions, answer["pendingId"])["state"] == "pending"
    standins.avx.answer_delay = 0
    run_complete_pending(functions)
    assert status_of(functions, answer["pendingId"])["state"] == "renewed"
    assert len(standins.avx.renew_calls()) == 1


def test_lost_queue_message_ends_failed_without_calling_avx(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    item = standins.avx.add_certificate("lost.contoso.com")
    _, answer, _queue = post_async(functions, {"resourceId": item.resource_id})
    run_complete_pending(functions)  # within the hold the timer leaves a queued record alone
    assert status_of(functions, answer["pendingId"])["reason"] == "QUEUED"
    time_passes(3 * 60)
    run_complete_pending(functions)  # the message may still arrive (issue 30): not failed on age alone
    assert status_of(functions, answer["pendingId"])["reason"] == "QUEUED"
    time_passes(7 * 24 * 60)  # past the queue's message time-to-live: the message can no longer arrive
    run_complete_pending(functions)
    record = status_of(functions, answer["pendingId"])
    assert record["state"] == "failed" and record["reason"] == "QUEUE_MESSAGE_LOST"
    assert standins.avx.renew_calls() == []


@pytest.mark.parametrize(
    "body",
    [
        {"commonName": "missing-serial.contoso.com"},
        {"resourceId": "r1", "certificateFormat": {"format": "NOPE"}},
        {"resourceId": "r1", "keyVaultCertificateName": "bad_name"},
    ],
)
def test_invalid_async_request_is_refused_and_nothing_is_queued(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str], body: dict[str, Any]
) -> None:
    from shared import context as app_context

    response, answer, queue = post_async(functions, body)
    assert response.status_code == 400, answer
    assert queue.value is None
    assert app_context.pending_store().all_records() == []


def test_unstorable_format_is_refused_at_once(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    response, answer, queue = post_async(functions, {"resourceId": "r1", "certificateFormat": {"format": "JKS"}})
    assert response.status_code == 422 and answer["error"]["code"] == "UNSTORABLE_FORMAT"
    assert queue.value is None


def test_without_the_preference_the_webhook_stays_synchronous(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    item = standins.avx.add_certificate("sync.contoso.com")
    response, answer, queue = post_async(functions, {"resourceId": item.resource_id}, prefer="return=minimal")
    assert response.status_code == 200 and answer["status"] == "renewed"
    assert queue.value is None and "Location" not in response.headers
