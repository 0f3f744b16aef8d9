"""Never store the wrong certificate, never lose one AppViewX renewed (issue 10).

Every case runs through `function_app.app` (the webhook, the status route and the `complete_pending` timer) against
the AVX, Key Vault and identity stand-ins and Azurite. "Time passes" moves the recorded times of every renewal
record back, as if the timer ran later (the backoff and the webhook's lease are minutes long).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared import context as app_context
from tests.standins import certs
from tests.standins.stack import REPO_ROOT, FakeContext, StandIns


def status_of(functions: dict[str, Any], pending_id: str) -> dict[str, Any]:
    request = func.HttpRequest(
        method="GET",
        url=f"http://localhost/api/certificates/renew/{pending_id}",
        headers={},
        params={},
        route_params={"pendingId": pending_id},
        body=b"",
    )
    response = functions["renew_status"].get_user_function()(request, FakeContext("renew_status"))
    assert response.status_code == 200, response.get_body()
    return json.loads(response.get_body())


def run_complete_pending(functions: dict[str, Any]) -> None:
    timer = func.timer.TimerRequest(past_due=False)
    functions["complete_pending"].get_user_function()(timer, FakeContext("complete_pending"))


def time_passes(minutes: float) -> None:
    """Move every renewal record's times back by `minutes` (the timer then runs `minutes` later)."""
    table = app_context.pending_store().table
    for entity in list(table.query_entities("PartitionKey eq 'avx'")):
        changed = dict(entity)
        for key, value in entity.items():
            if isinstance(value, datetime):
                changed[key] = value - timedelta(minutes=minutes)
        table.upsert_entity(changed)


def stored_thumbprint(standins: StandIns, name: str) -> str | None:
    stored = standins.key_vault.latest(name)
    return stored.thumbprint if stored is not None else None


# -- 1. manual approval, resourceId only -----------------------------------------------------------------------------


def test_manual_approval_by_resource_id_stores_only_the_renewed_certificate(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any]
) -> None:
    item = standins.avx.add_certificate("approval-rid.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id}, params={"autoApproval": "false"})
    assert status == 202, answer
    pending_id = answer["pendingId"]

    run_complete_pending(functions)  # before anyone approved: the current certificate is not the renewed one
    assert standins.key_vault.latest("approval-rid-contoso-com") is None
    assert status_of(functions, pending_id)["state"] == "pending"

    renewed = standins.avx.approve(item.resource_id)
    time_passes(20)
    run_complete_pending(functions)
    assert stored_thumbprint(standins, "approval-rid-contoso-com") == certs.thumbprint_hex(renewed.certificate)
    record = status_of(functions, pending_id)
    assert record["state"] == "renewed" and record["keyVaultCertificateId"]
    assert len(standins.avx.renew_calls()) == 1


# -- 2. commonName + serial, manual approval, older certificates listed --------------------------------------------


def test_manual_approval_with_history_never_stores_an_older_certificate(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any]
) -> None:
    item = standins.avx.add_certificate("history.contoso.com", history=3)
    status, answer = call_webhook(
        {"commonName": item.common_name, "serialNumber": item.serial_number}, params={"autoApproval": "false"}
    )
    assert status == 202, answer

    run_complete_pending(functions)
    assert standins.key_vault.latest("history-contoso-com") is None  # neither the current nor an older one
    assert status_of(functions, answer["pendingId"])["state"] == "pending"

    renewed = standins.avx.approve(item.resource_id)
    time_passes(20)
    run_complete_pending(functions)
    assert stored_thumbprint(standins, "history-contoso-com") == certs.thumbprint_hex(renewed.certificate)
    assert len(standins.key_vault.received("POST", "/import")) == 1


# -- 3. AVX 200 with unusable content ------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["not-base64", "not-certificate", "wrong-password"])
def test_unusable_content_is_pending_completed_later_and_never_renewed_twice(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any], fault: str
) -> None:
    standins.avx.content_fault = fault
    item = standins.avx.add_certificate(f"unusable-{fault}.contoso.com")
    headers = {"Idempotency-Key": f"unusable-{fault}"}
    status, answer = call_webhook({"resourceId": item.resource_id}, headers=headers)
    assert status == 202, answer
    assert answer["status"] == "pending" and answer["reason"] == "AVX_BAD_RESPONSE"
    assert answer["avx"]["resourceId"] == item.renewals[-1].resource_id  # the new record (page 188)

    again = call_webhook({"resourceId": item.resource_id}, headers=headers)
    assert again == (202, answer)  # replayed: same pendingId, AVX not asked again
    assert len(standins.avx.renew_calls()) == 1

    run_complete_pending(functions)
    name = f"unusable-{fault}-contoso-com"
    assert stored_thumbprint(standins, name) == certs.thumbprint_hex(item.renewals[-1].certificate)
    assert status_of(functions, answer["pendingId"])["state"] == "renewed"
    assert len(standins.avx.renew_calls()) == 1 and len(item.renewals) == 1


# -- 4. a key type Key Vault cannot hold ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PFX", "PEM"])
def test_ed25519_key_is_a_coded_error_with_the_avx_ids_and_a_failed_record(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any], fmt: str
) -> None:
    standins.avx.key_type = "ed25519"
    item = standins.avx.add_certificate(f"ed25519-{fmt.lower()}.contoso.com")
    headers = {"Idempotency-Key": f"ed-{fmt}"}
    body = {"resourceId": item.resource_id, "certificateFormat": {"format": fmt}}
    status, answer = call_webhook(body, headers=headers)
    assert status == 502, answer
    error = answer["error"]
    assert error["code"] == "UNSUPPORTED_KEY_TYPE" and "Ed25519" in error["message"]
    assert error["avx"]["resourceId"] == item.renewals[-1].resource_id and error["avx"]["requestId"].startswith("REQ")
    record = status_of(functions, error["pendingId"])
    assert record["state"] == "failed" and record["reason"] == "UNSUPPORTED_KEY_TYPE"

    assert call_webhook(body, headers=headers) == (status, answer)  # AVX acted: the key stays claimed
    run_complete_pending(functions)  # a failed record is not retried
    assert len(standins.avx.renew_calls()) == 1
    assert standins.avx.received("POST", "/certificate/download/format") == []
    assert standins.key_vault.received("POST", "/import") == []


# -- 5. AVX read timeout on a resourceId-only request --------------------------------------------------------------


def test_read_timeout_by_resource_id_completes_once_avx_lists_the_renewal(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVX_TIMEOUT_SECONDS", "1")
    app_context.reset()
    standins.avx.answer_delay = 3  # AVX renews, then answers after the app stopped waiting
    item = standins.avx.add_certificate("timeout-rid.contoso.com", history=1)
    status, answer = call_webhook({"resourceId": item.resource_id})
    assert status == 202 and answer["reason"] == "AVX_TIMEOUT", answer

    run_complete_pending(functions)
    assert stored_thumbprint(standins, "timeout-rid-contoso-com") == certs.thumbprint_hex(item.renewals[-1].certificate)
    assert status_of(functions, answer["pendingId"])["state"] == "renewed"
    assert len(standins.avx.renew_calls()) == 1


# -- 6. the process dies between AVX and Key Vault ----------------------------------------------------------------


def test_process_killed_between_avx_and_key_vault_is_completed(
    standins: StandIns, app_env: dict[str, str], functions: dict[str, Any]
) -> None:
    item = standins.avx.add_certificate("killed.contoso.com")
    arrived = standins.key_vault.hold("import")
    plan = [{"webhook": {"resourceId": item.resource_id}}]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.telemetry_child", json.dumps(plan)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert arrived.wait(60), "the child never reached Key Vault"
        os.kill(child.pid, signal.SIGKILL)  # the host kills the invocation mid-import
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        standins.key_vault.release_held()
    assert child.returncode == -signal.SIGKILL
    assert len(item.renewals) == 1 and standins.key_vault.latest("killed-contoso-com") is None

    (record,) = app_context.pending_store().all_records()
    assert record.state in ("accepted", "pending")
    time_passes(20)  # the dead invocation's lease runs out
    run_complete_pending(functions)
    assert stored_thumbprint(standins, "killed-contoso-com") == certs.thumbprint_hex(item.renewals[-1].certificate)
    assert status_of(functions, record.pending_id)["state"] == "renewed"
    assert len(standins.avx.renew_calls()) == 1


# -- 7. two completion runs at once -------------------------------------------------------------------------------


def test_two_concurrent_completion_runs_store_each_record_once(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any]
) -> None:
    items = [standins.avx.add_certificate(f"twice{i}.contoso.com") for i in range(3)]
    denied = {"error": {"code": "Forbidden", "message": "The user does not have certificates import permission"}}
    from tests.standins.base import Response

    standins.key_vault.fail_next(3, Response.json(denied, status=403), operation="import")
    pending_ids = []
    for item in items:
        status, answer = call_webhook({"resourceId": item.resource_id})
        assert status == 202, answer
        pending_ids.append(answer["pendingId"])
    time_passes(20)
    standins.key_vault.reset_records()
    standins.avx.reset_records()
    standins.avx.download_delay = 0.5  # both runs are inside the same records at once

    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_complete_pending(functions)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(standins.avx.received("POST", "/certificate/download/format")) == 3
    imports = standins.key_vault.received("POST", "/import")
    assert sorted(r.path.split("/")[2] for r in imports) == [f"twice{i}-contoso-com" for i in range(3)]
    for item, pending_id in zip(items, pending_ids, strict=True):
        name = item.common_name.replace(".", "-")
        assert stored_thumbprint(standins, name) == certs.thumbprint_hex(item.renewals[-1].certificate)
        assert status_of(functions, pending_id)["state"] == "renewed"


# Round trips (one AVX request per call, both shapes) and the rules of which listed certificate is the renewal:
# test_avx_new_records.py and test_renewal_finder.py (issue 22).


# -- issue 18, finding 12: one certificate keeps one name across its AppViewX events ---------------------------------


def test_failure_pending_and_success_events_of_one_certificate_carry_one_name(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any]
) -> None:
    from shared.core.telemetry import add_event_sink, remove_event_sink
    from tests.standins.avx import page_error

    seen: list[tuple[str, dict[str, Any]]] = []
    sink = lambda name, attributes: seen.append((name, attributes))  # noqa: E731
    add_event_sink(sink)
    try:
        item = standins.avx.add_certificate("samename.contoso.com")
        standins.avx.script(page_error("OPEN_WORK_ORDERS_FOUND"))
        status, _ = call_webhook({"resourceId": item.resource_id})
        assert status == 417
        status, answer = call_webhook({"resourceId": item.resource_id}, params={"autoApproval": "false"})
        assert status == 202, answer
        standins.avx.approve(item.resource_id)
        time_passes(20)
        run_complete_pending(functions)
    finally:
        remove_event_sink(sink)
    names = {(name, attributes.get("certificateName")) for name, attributes in seen if name.startswith("Certificate")}
    assert names == {
        ("CertificateRenewalFailed", "samename-contoso-com"),
        ("CertificateRenewalPending", "samename-contoso-com"),
        ("CertificateRenewed", "samename-contoso-com"),
    }, names
