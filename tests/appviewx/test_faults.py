"""Fault injection on the webhook's dependencies: each fault ends in a clear error or a pending record, within a
bounded time, with nothing lost and nothing secret shown (the harness checks answers and logs for sentinels)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared import context as app_context
from tests.standins.base import Response
from tests.standins.stack import StandIns, free_port, unreachable_storage
from tests.standins.tableproxy import CountingProxy

BOUND_SECONDS = 45


def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    started = time.monotonic()
    outcome = call(*args, **kwargs)
    assert time.monotonic() - started < BOUND_SECONDS
    return outcome


IDENTITY_FAULTS = {
    "5xx": Response.json({"error": "unavailable"}, status=500),
    "429": Response.json({"error": "throttled"}, status=429, headers={"Retry-After": "1"}),
    "malformed": Response.text('{"access_token": "x", "expires_on": ', status=200),
    "no-expiry": Response.json({"access_token": "x", "expires_on": "soon", "token_type": "Bearer"}),
    "drop": Response(drop=True),
}


@pytest.mark.parametrize("fault", sorted(IDENTITY_FAULTS))
def test_identity_endpoint_faults(standins: StandIns, call_webhook: Any, fault: str) -> None:
    standins.identity.script(*[IDENTITY_FAULTS[fault]] * 20)
    item = standins.avx.add_certificate(f"id-{fault}.contoso.com")
    status, answer = timed(call_webhook, {"resourceId": item.resource_id})
    assert (status, answer["error"]["code"]) == (502, "IDENTITY_UNAVAILABLE")
    assert standins.avx.renew_calls() == []  # nothing renewed that could not be stored


def test_identity_endpoint_refused(standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{free_port()}/msi/token")
    app_context.reset()
    status, answer = timed(call_webhook, {"resourceId": "r1"})
    assert (status, answer["error"]["code"]) == (502, "IDENTITY_UNAVAILABLE")


# AVX refused (an error status): 502, nothing renewed. AVX may have acted (a 200 that cannot be read, or a
# connection dropped after the request was sent): 202 with a renewal record the timer completes.
AVX_FAULTS = {
    "5xx": (Response.text("busy", status=503), 502, "AVX_BAD_RESPONSE"),
    "429": (Response.json({"message": "slow down"}, status=429, headers={"Retry-After": "1"}), 502, "AVX_BAD_RESPONSE"),
    "malformed": (Response.text("{not json", status=200), 202, "AVX_BAD_RESPONSE"),
    "truncated": (Response.text('{"response": {"certificateContent": "MII', status=200), 202, "AVX_BAD_RESPONSE"),
    "dropped": (Response(drop=True), 202, "AVX_UNREACHABLE"),
}


@pytest.mark.parametrize("fault", sorted(AVX_FAULTS))
def test_avx_faults(standins: StandIns, call_webhook: Any, fault: str) -> None:
    response, status_expected, code = AVX_FAULTS[fault]
    standins.avx.script(response)
    status, answer = timed(call_webhook, {"resourceId": "r1"})
    assert status == status_expected, answer
    assert (answer["error"]["code"] if status >= 400 else answer["reason"]) == code
    # The renew PUT is not idempotent: it is sent once, whatever came back.
    assert len(standins.avx.renew_calls()) == 1


def test_avx_refused_connection_is_retried_then_reported(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVX_API_URL", f"https://127.0.0.1:{free_port()}/avxapi")
    app_context.reset()
    status, answer = timed(call_webhook, {"resourceId": "r1"})
    assert (status, answer["error"]["code"]) == (502, "AVX_UNREACHABLE")


KEY_VAULT_FAULTS = {
    "5xx": Response.json({"error": {"code": "InternalError", "message": "boom"}}, status=500),
    "malformed": Response.text("{truncated", status=200),
    "timeout": Response(delay=90),
}


@pytest.mark.parametrize("fault", sorted(KEY_VAULT_FAULTS))
def test_key_vault_faults_become_pending(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    if fault == "timeout":
        # A shorter read timeout keeps the test quick; the rule is the same at 60 s.
        from shared.azure import keyvault

        monkeypatch.setattr(keyvault.KeyVaultStore, "READ_TIMEOUT_SECONDS", 1)
    standins.key_vault.fail_next(20, KEY_VAULT_FAULTS[fault], operation="import")
    item = standins.avx.add_certificate(f"kv-{fault}.contoso.com")
    status, answer = timed(call_webhook, {"resourceId": item.resource_id})
    assert status == 202, answer
    assert answer["reason"] == "KEY_VAULT_STORE_FAILED" and answer["avx"]["resourceId"] == item.renewals[-1].resource_id
    record = app_context.pending_store().get(answer["pendingId"])
    assert record is not None and record.avx_resource_id == item.renewals[-1].resource_id


def test_key_vault_throttling_is_retried_with_retry_after(standins: StandIns, call_webhook: Any) -> None:
    throttled = Response.json(
        {"error": {"code": "Throttled", "message": "Request was not processed because too many requests"}},
        status=429,
        headers={"Retry-After": "1"},
    )
    standins.key_vault.fail_next(2, throttled, operation="import")
    item = standins.avx.add_certificate("throttled.contoso.com")
    started = time.monotonic()
    status, answer = timed(call_webhook, {"resourceId": item.resource_id})
    assert status == 200, answer
    assert time.monotonic() - started >= 2  # waited as Retry-After asked, twice
    assert len(standins.key_vault.received("POST", "/import")) == 3


def test_table_storage_down_with_idempotency_key_is_503_and_calls_nothing(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", unreachable_storage())
    app_context.reset()
    status, answer = timed(call_webhook, {"resourceId": "r1"}, headers={"Idempotency-Key": "k-1"})
    assert (status, answer["error"]["code"]) == (503, "STATE_STORE_UNAVAILABLE")
    assert answer["error"]["remediation"]
    assert standins.avx.requests == []


# -- table storage (the idempotency and pending tables), through a fault-injecting proxy in front of Azurite --------


def table_error(status: int, code: str, headers: dict[str, str] | None = None) -> Response:
    body = {"odata.error": {"code": code, "message": {"lang": "en-US", "value": f"{code} (injected)"}}}
    return Response.json(body, status=status, headers=headers)


@pytest.mark.parametrize(
    "fault",
    [
        table_error(503, "ServerBusy"),
        table_error(500, "InternalError"),
        table_error(429, "TooManyRequests", {"Retry-After": "1"}),
    ],
    ids=["503", "500", "429"],
)
def test_transient_table_faults_are_retried(
    standins: StandIns, call_webhook: Any, table_proxy: CountingProxy, fault: Response
) -> None:
    item = standins.avx.add_certificate("tbl-transient.contoso.com")
    table_proxy.fail_next(2, fault, kind="write")  # the conditional insert of the idempotency key
    status, answer = timed(call_webhook, {"resourceId": item.resource_id}, headers={"Idempotency-Key": "t-1"})
    assert status == 200, answer
    assert len(standins.avx.renew_calls()) == 1


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (table_error(500, "InternalError"), "write"),
        (Response.text("<html>gateway</html>", status=502, content_type="text/html"), "write"),
        (Response(drop=True), "write"),
    ],
    ids=["5xx-persisting", "html-502", "dropped"],
)
def test_persistent_table_faults_stop_before_avx(
    standins: StandIns, call_webhook: Any, table_proxy: CountingProxy, fault: Response, kind: str
) -> None:
    table_proxy.fail_next(50, fault, kind=kind)
    status, answer = timed(call_webhook, {"resourceId": "r1"}, headers={"Idempotency-Key": "t-2"})
    assert (status, answer["error"]["code"]) == (503, "STATE_STORE_UNAVAILABLE")
    assert standins.avx.requests == []


@pytest.mark.parametrize(
    "fault",
    [Response.text('{"PartitionKey": "webhook", "RowKey', status=200), Response.text("not json", status=200)],
    ids=["truncated", "malformed"],
)
def test_unreadable_table_answer_on_a_repeat_is_a_clear_error(
    standins: StandIns, call_webhook: Any, table_proxy: CountingProxy, fault: Response
) -> None:
    item = standins.avx.add_certificate("tbl-read.contoso.com")
    headers = {"Idempotency-Key": "t-3"}
    assert call_webhook({"resourceId": item.resource_id}, headers=headers)[0] == 200
    table_proxy.fail_next(10, fault, kind="read")  # the repeat reads the first call's record
    status, answer = timed(call_webhook, {"resourceId": item.resource_id}, headers=headers)
    assert (status, answer["error"]["code"]) == (503, "STATE_STORE_UNAVAILABLE")
    assert len(standins.avx.renew_calls()) == 1


def test_table_timeout_is_bounded(
    standins: StandIns, call_webhook: Any, table_proxy: CountingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.azure import tables

    monkeypatch.setitem(tables.CLIENT_OPTIONS, "read_timeout", 1)  # the rule is the same at 30 s
    app_context.reset()
    table_proxy.fail_next(50, Response(delay=30), kind="write")
    status, answer = timed(call_webhook, {"resourceId": "r1"}, headers={"Idempotency-Key": "t-4"})
    assert (status, answer["error"]["code"]) == (503, "STATE_STORE_UNAVAILABLE")
    assert standins.avx.requests == []


def test_renewal_table_failing_stops_before_avx(
    standins: StandIns, call_webhook: Any, table_proxy: CountingProxy
) -> None:
    # The renewal record is written before AVX is called; when it cannot be, nothing is renewed.
    item = standins.avx.add_certificate("tbl-pending.contoso.com")
    table_proxy.fail_next(50, table_error(500, "InternalError"))
    status, answer = timed(call_webhook, {"resourceId": item.resource_id})
    assert (status, answer["error"]["code"]) == (503, "STATE_STORE_UNAVAILABLE")
    assert standins.avx.renew_calls() == []
