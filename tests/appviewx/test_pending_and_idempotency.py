"""Nothing lost, nothing let in: pending renewals completed later, idempotent repeats, signed callers, AVX logins."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared import context as app_context
from shared.appviewx.completion import complete_pending
from shared.appviewx.records import PendingRecord, RenewalState
from shared.core.telemetry import add_event_sink, remove_event_sink
from shared.security import signature
from tests.standins import certs
from tests.standins.base import Response
from tests.standins.stack import AVX_PASSWORD, WEBHOOK_HMAC_SECRET, FakeContext, StandIns


@pytest.fixture
def events() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    def sink(name: str, attributes: dict[str, Any]) -> None:
        seen.append((name, attributes))

    add_event_sink(sink)
    yield seen
    remove_event_sink(sink)


def status_of(functions: dict[str, Any], pending_id: str) -> tuple[int, dict[str, Any]]:
    request = func.HttpRequest(
        method="GET",
        url=f"http://localhost/api/certificates/renew/{pending_id}",
        headers={},
        params={},
        route_params={"pendingId": pending_id},
        body=b"",
    )
    response = functions["renew_status"].get_user_function()(request, FakeContext("renew_status"))
    return response.status_code, json.loads(response.get_body())


def run_complete_pending(functions: dict[str, Any]) -> None:
    timer = func.timer.TimerRequest(past_due=False)
    functions["complete_pending"].get_user_function()(timer, FakeContext("complete_pending"))


def test_bindings_of_the_new_functions(functions: dict[str, Any]) -> None:
    status = json.loads(functions["renew_status"].get_function_json())["bindings"][0]
    assert (status["route"], status["methods"], status["authLevel"]) == (
        "certificates/renew/{pendingId}",
        ["GET"],
        "FUNCTION",
    )
    timer = json.loads(functions["complete_pending"].get_function_json())["bindings"][0]
    assert timer["type"] == "timerTrigger"
    assert timer["schedule"] == "%PENDING_RETRY_SCHEDULE%"
    assert timer["useMonitor"] is True and timer["runOnStartup"] is False


def test_key_vault_down_then_back_is_completed_by_the_timer(
    standins: StandIns, call_webhook: Any, functions: dict[str, Any], events: list[Any]
) -> None:
    item = standins.avx.add_certificate("outage.contoso.com")
    port = standins.key_vault.port
    standins.key_vault.stop()
    try:
        started = time.monotonic()
        status, answer = call_webhook({"resourceId": item.resource_id})
        assert time.monotonic() - started < 30
    finally:
        standins.key_vault.start(port)
    assert status == 202, answer
    assert answer["status"] == "pending" and answer["reason"] == "KEY_VAULT_STORE_FAILED"
    assert answer["avx"]["resourceId"] == item.renewals[-1].resource_id  # the new record (page 188)
    pending_id = answer["pendingId"]

    code, record = status_of(functions, pending_id)
    assert code == 200
    assert record["state"] == "pending" and record["attempts"] == 0
    assert record["avxResourceId"] == item.renewals[-1].resource_id and record["reason"] == "KEY_VAULT_STORE_FAILED"
    assert "certificateContent" not in json.dumps(record) and "password" not in json.dumps(record).lower()

    renewed_before = len(item.renewals)
    run_complete_pending(functions)

    stored = standins.key_vault.latest("outage-contoso-com")
    assert stored is not None and stored.has_key
    assert stored.thumbprint == certs.thumbprint_hex(item.renewals[-1].certificate)
    assert len(item.renewals) == renewed_before  # fetched what AVX renewed; never renewed again
    assert len(standins.avx.renew_calls()) == 1
    code, record = status_of(functions, pending_id)
    assert record["state"] == "renewed" and record["keyVaultCertificateId"].startswith(standins.key_vault.url)
    names = [name for name, _ in events]
    assert names.count("CertificateRenewalPending") == 1 and names.count("CertificateRenewed") == 1
    renewed = dict(events)["CertificateRenewed"]
    assert renewed["pendingId"] == pending_id and renewed["source"] == "appviewx"


def test_manual_approval_is_fetched_after_approval_with_backoff(
    standins: StandIns, call_webhook: Any, events: list[Any]
) -> None:
    item = standins.avx.add_certificate("approve.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id}, params={"autoApproval": "false"})
    assert status == 202 and answer["reason"] == "AVX_NO_CERTIFICATE"
    store, pending = app_context.key_vault_store(), app_context.pending_store()
    start = datetime.now(UTC)

    summary = complete_pending(pending, app_context.avx_client(), store, 7, now=start)
    assert summary.retried == [answer["pendingId"]]
    record = pending.get(answer["pendingId"])
    assert record is not None and record.attempts == 1 and record.state is RenewalState.PENDING
    assert record.next_attempt_at - start == timedelta(minutes=15)

    # Not due yet: nothing is asked of AVX.
    calls = len(standins.avx.requests)
    assert complete_pending(pending, app_context.avx_client(), store, 7, now=start + timedelta(minutes=5)).retried == []
    assert len(standins.avx.requests) == calls

    standins.avx.approve(item.resource_id)
    summary = complete_pending(pending, app_context.avx_client(), store, 7, now=start + timedelta(minutes=16))
    assert summary.completed == [answer["pendingId"]]
    assert standins.key_vault.latest("approve-contoso-com") is not None


def test_pending_gives_up_after_max_days(standins: StandIns, app_env: dict[str, str], events: list[Any]) -> None:
    pending = app_context.pending_store()
    created = datetime.now(UTC) - timedelta(days=8)
    record = pending.save(
        PendingRecord.new(
            created, reason="AVX_NO_CERTIFICATE", storage="import", common_name="gone.contoso.com", serial_number="01"
        )
    )
    summary = complete_pending(pending, app_context.avx_client(), app_context.key_vault_store(), 7)
    assert summary.failed == [record.pending_id]
    saved = pending.get(record.pending_id)
    assert saved is not None and saved.state is RenewalState.FAILED and saved.attempts == 1
    failed = [a for n, a in events if n == "CertificateRenewalFailed"]
    assert failed and failed[0]["reason"] == "PENDING_GAVE_UP" and failed[0]["source"] == "appviewx"


def test_status_endpoint_errors(functions: dict[str, Any], app_env: dict[str, str]) -> None:
    assert status_of(functions, "not-an-id")[0] == 400
    code, body = status_of(functions, "0" * 32)
    assert code == 404 and body["error"]["code"] == "NOT_FOUND"


# -- idempotency ---------------------------------------------------------------------------------


def test_repeat_with_idempotency_key_returns_the_first_answer(standins: StandIns, call_webhook: Any) -> None:
    item = standins.avx.add_certificate("idem.contoso.com")
    headers = {"Idempotency-Key": "order-4711"}
    first = call_webhook({"resourceId": item.resource_id}, headers=headers)
    second = call_webhook({"resourceId": item.resource_id}, headers=headers)
    assert first[0] == 200 and second == first
    assert len(standins.avx.renew_calls()) == 1

    other = call_webhook({"resourceId": item.resource_id, "keyVaultCertificateName": "x"}, headers=headers)
    assert other[0] == 422 and other[1]["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert len(standins.avx.renew_calls()) == 1


@pytest.mark.parametrize("key", ["", "a" * 129, "has space", "tab\tkey", "ümlaut"])
def test_invalid_idempotency_key_is_refused(standins: StandIns, call_webhook: Any, key: str) -> None:
    status, answer = call_webhook({"resourceId": "r"}, headers={"Idempotency-Key": key})
    assert (status, answer["error"]["code"]) == (400, "INVALID_REQUEST")
    assert standins.avx.requests == []


def test_concurrent_duplicates_reach_avx_once(standins: StandIns, call_webhook: Any) -> None:
    item = standins.avx.add_certificate("race.contoso.com")
    standins.avx.renew_delay = 1.0
    results: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def call() -> None:
        outcome = call_webhook({"resourceId": item.resource_id}, headers={"Idempotency-Key": "race-1"})
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 8
    statuses = sorted(status for status, _ in results)
    assert statuses.count(200) >= 1 and set(statuses) <= {200, 409}
    assert all(body["error"]["code"] == "IN_PROGRESS" for status, body in results if status == 409)
    assert len(standins.avx.renew_calls()) == 1


def test_failure_frees_the_key_for_a_retry(standins: StandIns, call_webhook: Any) -> None:
    item = standins.avx.add_certificate("retry.contoso.com")
    standins.avx.script(Response.text("oops", status=503))
    headers = {"Idempotency-Key": "retry-1"}
    assert call_webhook({"resourceId": item.resource_id}, headers=headers)[0] == 502
    assert call_webhook({"resourceId": item.resource_id}, headers=headers)[0] == 200


# -- signed callers ------------------------------------------------------------------------------


@pytest.fixture
def hmac_env(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("WEBHOOK_HMAC_SECRET", WEBHOOK_HMAC_SECRET)
    app_context.reset()
    return WEBHOOK_HMAC_SECRET


def signed(body: dict[str, Any], secret: str, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    ts = str(timestamp if timestamp is not None else int(time.time()))
    return raw, {"X-Signature-Timestamp": ts, "X-Signature": signature.sign(secret, ts, raw)}


def test_signed_request_is_accepted(standins: StandIns, call_webhook: Any, hmac_env: str) -> None:
    item = standins.avx.add_certificate("signed.contoso.com")
    raw, headers = signed({"resourceId": item.resource_id}, hmac_env)
    status, answer = call_webhook(raw=raw, headers=headers)
    assert status == 200, answer


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing", "SIGNATURE_MISSING"),
        ("wrong-secret", "SIGNATURE_INVALID"),
        ("old", "SIGNATURE_EXPIRED"),
        ("tampered", "SIGNATURE_INVALID"),
        ("garbage-ts", "SIGNATURE_INVALID"),
    ],
)
def test_bad_signatures_are_401_and_call_nothing(
    standins: StandIns, call_webhook: Any, hmac_env: str, case: str, code: str
) -> None:
    body = {"resourceId": "r1"}
    raw, headers = signed(body, hmac_env)
    if case == "missing":
        headers = {}
    elif case == "wrong-secret":
        raw, headers = signed(body, "another-secret-of-sufficient-length")
    elif case == "old":
        raw, headers = signed(body, hmac_env, int(time.time()) - 301)
    elif case == "tampered":
        raw = json.dumps({"resourceId": "r2"}).encode()
    elif case == "garbage-ts":
        headers["X-Signature-Timestamp"] = "yesterday"
    status, answer = call_webhook(raw=raw, headers=headers)
    assert (status, answer["error"]["code"]) == (401, code)
    assert standins.avx.requests == [] and standins.key_vault.requests == []


def test_caller_principal_goes_into_telemetry(
    standins: StandIns, call_webhook: Any, events: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")  # only App Service authentication makes the header trustworthy
    item = standins.avx.add_certificate("caller.contoso.com")
    status, _ = call_webhook({"resourceId": item.resource_id}, headers={"X-MS-CLIENT-PRINCIPAL-NAME": "cmdb-workflow"})
    assert status == 200
    assert dict(events)["CertificateRenewed"]["caller"] == "cmdb-workflow"


# -- AVX authentication modes ---------------------------------------------------------------------


def test_session_mode_logs_in_once_and_again_after_401(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVX_AUTH_MODE", "session")
    app_context.reset()
    for name in ("s1.contoso.com", "s2.contoso.com"):
        item = standins.avx.add_certificate(name)
        assert call_webhook({"resourceId": item.resource_id})[0] == 200
    assert len(standins.avx.received("POST", "/login")) == 1
    assert all(r.header("password") is None and r.header("sessionId") for r in standins.avx.renew_calls())

    standins.avx.expire_credentials()
    item = standins.avx.add_certificate("s3.contoso.com")
    assert call_webhook({"resourceId": item.resource_id})[0] == 200
    assert len(standins.avx.received("POST", "/login")) == 2
    assert len(item.renewals) == 1


def test_service_account_mode_uses_a_token_not_the_password(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVX_AUTH_MODE", "service-account")
    monkeypatch.setenv("AVX_CLIENT_ID", standins.avx.client_id)
    monkeypatch.setenv("AVX_CLIENT_SECRET", standins.avx.client_secret)
    monkeypatch.delenv("AVX_PASSWORD")
    app_context.reset()
    item = standins.avx.add_certificate("svc.contoso.com")
    assert call_webhook({"resourceId": item.resource_id})[0] == 200
    (token_call,) = standins.avx.received("POST", "/acctmgmt-get-service-token")
    assert token_call.body == b"grant_type=client_credentials"
    (renew,) = standins.avx.renew_calls()
    assert (
        renew.header(
            "token",
        )
        and renew.header("password") is None
    )
    assert AVX_PASSWORD not in json.dumps(renew.headers)


def test_service_account_with_wrong_secret_is_a_clear_502(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVX_AUTH_MODE", "service-account")
    monkeypatch.setenv("AVX_CLIENT_ID", standins.avx.client_id)
    monkeypatch.setenv("AVX_CLIENT_SECRET", "wrong-secret-value")
    app_context.reset()
    status, answer = call_webhook({"resourceId": "r1"})
    assert (status, answer["error"]["code"]) == (502, "AVX_GW_003")
    assert standins.avx.renew_calls() == []
