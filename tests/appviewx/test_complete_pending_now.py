"""Issue 27: `complete-pending --now` tries the pending AppViewX renewals that are still waiting out their retry delay
(an operator who just approved one in AppViewX need not wait 15 minutes), and the run's summary counts the records
that were not due. A renewal waiting on the queue is never taken by it (only the queue function or, after its hold,
the timer may settle it). Through `function_app.app`, the AVX and Key Vault stand-ins and Azurite."""

from __future__ import annotations

from typing import Any

from shared import context as app_context
from shared.appviewx.completion import CompletionSummary, complete_pending
from tests.appviewx.test_avx_pipeline import run_complete_pending, status_of, stored_thumbprint
from tests.appviewx.test_renew_queue import post_async
from tests.standins import certs
from tests.standins.stack import StandIns


def completion(*, ignore_retry_delay: bool = False) -> CompletionSummary:
    return complete_pending(
        app_context.pending_store(),
        app_context.avx_client(),
        app_context.key_vault_store(),
        app_context.settings().webhook.pending_max_days,
        ignore_retry_delay=ignore_retry_delay,
    )


def test_now_tries_a_record_waiting_out_its_retry_delay_and_the_summary_counts_it(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any]
) -> None:
    item = standins.avx.add_certificate("approved-now.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id}, params={"autoApproval": "false"})
    assert status == 202, answer
    pending_id = answer["pendingId"]
    run_complete_pending(functions)  # before the approval: tried once, next try in 15 minutes
    renewed = standins.avx.approve(item.resource_id)

    waiting = completion()
    assert waiting.completed == [] and waiting.not_due == [pending_id]  # counted, not silently left out
    assert status_of(functions, pending_id)["state"] == "pending"

    now = completion(ignore_retry_delay=True)
    assert now.completed == [pending_id] and now.not_due == []
    assert stored_thumbprint(standins, "approved-now-contoso-com") == certs.thumbprint_hex(renewed.certificate)
    assert status_of(functions, pending_id)["state"] == "renewed"


def test_now_leaves_a_renewal_waiting_on_the_queue_alone(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str]
) -> None:
    item = standins.avx.add_certificate("still-queued.contoso.com")
    response, answer, _ = post_async(functions, {"resourceId": item.resource_id})
    assert response.status_code == 202
    summary = completion(ignore_retry_delay=True)
    assert summary.not_due == [answer["pendingId"]] and summary.failed == []
    record = status_of(functions, answer["pendingId"])
    assert record["state"] == "accepted" and record["reason"] == "QUEUED"  # not ended QUEUE_MESSAGE_LOST
    assert standins.avx.renew_calls() == []
