"""The nightly RCL path, driven through `function_app.app` exactly as the host runs it: `renew_timer` and
`verify_renewals` against the RCL stand-in, the managed-identity endpoint stand-in and Azurite's table service."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.data.tables import TableClient, UpdateMode

from shared import context as app_context
from shared.core.errors import CertRenewError
from tests.eventlog import Events, recording
from tests.standins.base import Response
from tests.standins.stack import (
    KEY_VAULT_RESOURCE,
    RCL_RESOURCE,
    FakeContext,
    StandIns,
    free_port,
)

TOKEN_RESOURCES = {KEY_VAULT_RESOURCE, RCL_RESOURCE}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def events() -> Iterator[Events]:
    with recording() as recorder:
        yield recorder


@pytest.fixture
def rcl_env(storage_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The app pointed at the stand-ins and Azurite, with a table of its own (so each test has its own nights)."""
    values = {
        "RENEWAL_STATE_TABLE": f"rcl{uuid.uuid4().hex[:12]}",
        "RCL_RETRY_DELAY_SECONDS": "0.05",
        "RCL_RENEWAL_SCHEDULE": "0 0 2 * * *",
        "RCL_VERIFY_SCHEDULE": "0 30 2 * * *",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    app_context.reset()
    storage_env.update(values)
    return storage_env


def run(functions: dict[str, Any], name: str, *, past_due: bool = False) -> FakeContext:
    context = FakeContext(name)
    functions[name].get_user_function()(func.timer.TimerRequest(past_due=past_due), context)
    return context


def run_failing(functions: dict[str, Any], name: str) -> CertRenewError:
    with pytest.raises(CertRenewError) as raised:
        run(functions, name)
    return raised.value


def table(env: dict[str, str]) -> TableClient:
    return TableClient.from_connection_string(env["AzureWebJobsStorage"], env["RENEWAL_STATE_TABLE"])


def records(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    with table(env) as client:
        return {e["certificateName"]: dict(e) for e in client.query_entities("PartitionKey eq 'rcl'")}


def age_records(env: dict[str, str], hours: float) -> None:
    """Time passes: every record was scheduled `hours` earlier than it was."""
    with table(env) as client:
        for entity in client.query_entities("PartitionKey eq 'rcl'"):
            moved = {
                "PartitionKey": "rcl",
                "RowKey": entity["RowKey"],
                "scheduledAt": entity["scheduledAt"] - timedelta(hours=hours),
            }
            client.update_entity(moved, mode=UpdateMode.MERGE)


def night() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


# -- bindings ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "setting"), [("renew_timer", "%RCL_RENEWAL_SCHEDULE%"), ("verify_renewals", "%RCL_VERIFY_SCHEDULE%")]
)
def test_timer_bindings_are_what_the_host_reads(functions: dict[str, Any], name: str, setting: str) -> None:
    (binding,) = json.loads(functions[name].get_function_json())["bindings"]
    assert binding["type"] == "timerTrigger"
    assert binding["schedule"] == setting
    assert binding["useMonitor"] is True
    assert binding["runOnStartup"] is False


# -- the story of the "Done when" -------------------------------------------------------------------------


def test_three_due_certificates_renewed_installed_pending_then_failed(
    standins: StandIns,
    functions: dict[str, Any],
    rcl_env: dict[str, str],
    events: Events,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rcl = standins.rcl
    alpha = rcl.add_certificate("alpha.contoso.com", 5)
    beta = rcl.add_certificate("beta.contoso.com", 12, target="Azure Key Vault")
    gamma = rcl.add_certificate("gamma.contoso.com", 10)
    rcl.add_certificate("later.contoso.com", 60)
    rcl.add_certificate("much-later.contoso.com", 80)

    # Night: RCL schedules the three due certificates; each is recorded.
    renew_context = run(functions, "renew_timer")
    assert len(rcl.renewal_calls()) == 1
    stored = records(rcl_env)
    assert set(stored) == {"alpha.contoso.com", "beta.contoso.com", "gamma.contoso.com"}
    for entry in (alpha, beta, gamma):
        record = stored[entry["name"]]
        assert record["certificateId"] == entry["id"]
        assert record["target"] == entry["target"]
        assert record["state"] == "scheduled"
        assert record["runId"] == renew_context.invocation_id
        assert record["expiryDate"].strftime("%Y-%m-%dT%H:%M:%S.%f") == entry["expiryDate"][:26]
        assert abs(record["scheduledAt"] - datetime.now(UTC)) < timedelta(minutes=1)
        assert record["RowKey"] == f"{night()}-id-{entry['id']}"
    scheduled = events.by_certificate("CertificateRenewalScheduled")
    assert set(scheduled) == set(stored)
    assert scheduled["beta.contoso.com"]["target"] == "Azure Key Vault"
    assert scheduled["beta.contoso.com"]["certificateId"] == beta["id"]
    assert scheduled["beta.contoso.com"]["expiryDate"] == beta["expiryDate"][:26] + "Z"
    assert scheduled["beta.contoso.com"]["source"] == "rcl"
    assert scheduled["beta.contoso.com"]["invocationId"] == renew_context.invocation_id
    (completed,) = events.named("RclRenewalRunCompleted")
    assert completed["outcome"] == "succeeded" and completed["scheduledCount"] == 3
    assert isinstance(completed["durationMs"], int) and "reason" not in completed
    summary = [r.getMessage() for r in caplog.records if r.name == "certrenew.timer"]
    assert any("scheduled 3 certificate(s)" in m and "gamma.contoso.com" in m for m in summary), summary

    # RCL renews two of them; one is installed on its target, one not yet.
    rcl.complete_renewal("alpha.contoso.com", installed=True)
    renewed_beta = rcl.complete_renewal("beta.contoso.com", installed=False)
    events.clear()
    run(functions, "verify_renewals")
    assert len(rcl.list_calls()) == 1
    renewed = events.by_certificate("CertificateRenewed")
    assert set(renewed) == {"alpha.contoso.com", "beta.contoso.com"}
    assert renewed["alpha.contoso.com"]["installed"] is True
    assert renewed["beta.contoso.com"]["installed"] is False
    assert renewed["beta.contoso.com"]["expiryDate"] == renewed_beta["expiryDate"][:26] + "Z"
    (pending,) = events.named("CertificateRenewalPending")
    assert pending["certificateName"] == "gamma.contoso.com" and pending["scheduledAt"].endswith("Z")
    assert events.named("CertificateRenewalFailed") == []
    near = events.by_certificate("CertificateNearExpiry")
    # alpha is renewed and installed (90 days out now); beta's deployed certificate is still the one of 12 days.
    assert set(near) == {"gamma.contoso.com", "beta.contoso.com"}
    assert near["gamma.contoso.com"]["daysLeft"] == 9  # 10 days less a few seconds, rounded down
    stored = records(rcl_env)
    assert stored["alpha.contoso.com"]["state"] == "renewed" and stored["alpha.contoso.com"]["installed"] is True
    # Renewed but not installed: open until installed or RCL_INSTALL_GRACE_HOURS is over.
    assert stored["beta.contoso.com"]["state"] == "notinstalled" and stored["beta.contoso.com"]["installed"] is False
    assert stored["gamma.contoso.com"]["state"] == "scheduled"
    summary = [r.getMessage() for r in caplog.records if "RCL check" in r.getMessage()]
    assert "2 renewed (1 installed), 1 pending, 0 failed" in summary[-1]

    # A day later gamma has still not renewed: the grace period (24 h) is over, so it failed.
    age_records(rcl_env, 25)
    events.clear()
    run(functions, "verify_renewals")
    (failed,) = events.named("CertificateRenewalFailed")
    assert failed["certificateName"] == "gamma.contoso.com"
    assert failed["reason"] == "RCL_NOT_RENEWED"
    assert "not renewed within 24 h" in failed["message"]
    assert events.named("CertificateRenewed") == []
    # beta is still renewed but not installed, within RCL_INSTALL_GRACE_HOURS of being seen renewed: pending.
    (installing,) = events.named("CertificateRenewalPending")
    assert (installing["certificateName"], installing["reason"]) == ("beta.contoso.com", "RCL_NOT_INSTALLED")
    assert records(rcl_env)["gamma.contoso.com"]["state"] == "failed"
    assert records(rcl_env)["gamma.contoso.com"]["reason"] == "RCL_NOT_RENEWED"

    # The whole story cost one renewal call and two list calls.
    assert (len(rcl.renewal_calls()), len(rcl.list_calls())) == (1, 2)


def test_certificate_gone_from_the_list_fails_at_once(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    standins.rcl.add_certificate("gone.contoso.com", 3)
    standins.rcl.add_certificate("stays.contoso.com", 70)  # an empty list would be suspect, not believed
    run(functions, "renew_timer")
    standins.rcl.remove("gone.contoso.com")
    run(functions, "verify_renewals")
    (failed,) = events.named("CertificateRenewalFailed")
    assert failed["reason"] == "RCL_CERTIFICATE_GONE" and failed["certificateName"] == "gone.contoso.com"
    assert records(rcl_env)["gone.contoso.com"]["state"] == "failed"


def test_nothing_due_records_nothing_and_says_so(
    standins: StandIns,
    functions: dict[str, Any],
    rcl_env: dict[str, str],
    events: Events,
    caplog: pytest.LogCaptureFixture,
) -> None:
    standins.rcl.add_certificate("fresh.contoso.com", 70)
    run(functions, "renew_timer")
    assert records(rcl_env) == {}
    (completed,) = events.named("RclRenewalRunCompleted")
    assert (completed["outcome"], completed["scheduledCount"]) == ("succeeded", 0)
    assert any("nothing was due" in r.getMessage() for r in caplog.records)


def test_late_run_is_logged(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    run(functions, "renew_timer", past_due=True)
    run(functions, "verify_renewals", past_due=True)
    late = [r for r in caplog.records if r.levelno == logging.WARNING and "running late" in r.getMessage()]
    assert [r.getMessage().split()[0] for r in late] == ["renew_timer", "verify_renewals"]
    assert any("(run was late)" in r.getMessage() for r in caplog.records if r.name == "certrenew.timer")


# -- what RCL receives ------------------------------------------------------------------------------------------


def test_request_carries_exactly_the_two_tokens_each_for_its_resource(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str]
) -> None:
    standins.rcl.add_certificate("tokens.contoso.com", 3)
    run(functions, "renew_timer")

    (sent,) = standins.rcl.renewal_calls()
    assert sent.method == "POST" and sent.path == "/api/v2/CertificateRenewal"
    rcl_token = standins.identity.token_for(RCL_RESOURCE)
    vault_token = standins.identity.token_for(KEY_VAULT_RESOURCE)
    assert sent.header("Authorization") == f"Bearer {rcl_token}"
    assert sent.header("Content-Type") == "application/json"
    assert sent.json() == {"keyVaultAccessToken": vault_token}
    # Each token only where it belongs: the vault token is not in a header, the RCL token not in the body.
    assert vault_token not in json.dumps(sent.headers) and rcl_token not in sent.body.decode()
    # Each token was asked of the managed identity once, for its documented resource, and nothing else was asked.
    asked = [r.query_one("resource") for r in standins.identity.token_requests()]
    assert sorted(asked) == sorted(TOKEN_RESOURCES)
    for request in standins.identity.token_requests():
        assert request.query_one("api-version") == "2019-08-01"


def test_list_call_carries_only_the_rcl_token(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str]
) -> None:
    run(functions, "verify_renewals")
    (sent,) = standins.rcl.list_calls()
    assert sent.method == "GET" and sent.path == "/api/v2/CertificateList" and sent.body == b""
    assert sent.header("Authorization") == f"Bearer {standins.identity.token_for(RCL_RESOURCE)}"
    assert [r.query_one("resource") for r in standins.identity.token_requests()] == [RCL_RESOURCE]


def test_without_key_vault_token_the_body_carries_an_empty_string(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RCL_SEND_KEY_VAULT_TOKEN", "false")
    app_context.reset()
    standins.rcl.add_certificate("nokv.contoso.com", 3)
    run(functions, "renew_timer")
    (sent,) = standins.rcl.renewal_calls()
    assert sent.json() == {"keyVaultAccessToken": ""}
    assert [r.query_one("resource") for r in standins.identity.token_requests()] == [RCL_RESOURCE]


def test_tokens_are_cached_across_runs(standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str]) -> None:
    run(functions, "renew_timer")
    run(functions, "verify_renewals")
    assert len(standins.identity.token_requests(RCL_RESOURCE)) == 1
    assert len(standins.identity.token_requests(KEY_VAULT_RESOURCE)) == 1


# -- the answer RCL gives -----------------------------------------------------------------------------------------


def test_unknown_fields_ignored_and_missing_optional_fields_tolerated(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    standins.rcl.script(
        Response.json(
            [
                {
                    "id": 7,
                    "name": "extra.contoso.com",
                    "expiryDate": "2031-04-30T01:04:32.1430019",
                    "remoteCreateDate": None,
                    "newField": {"nested": [1, 2]},
                    "keyVaultName": "kv",
                },
                {"name": "minimal.contoso.com"},
            ]
        )
    )
    run(functions, "renew_timer")
    stored = records(rcl_env)
    assert stored["extra.contoso.com"]["certificateId"] == 7
    assert stored["extra.contoso.com"]["expiryDate"] == datetime(2031, 4, 30, 1, 4, 32, 143001, tzinfo=UTC)
    assert "certificateId" not in stored["minimal.contoso.com"] and "expiryDate" not in stored["minimal.contoso.com"]
    assert events.named("RclRenewalRunCompleted")[0]["scheduledCount"] == 2


# -- errors an operator can act on ----------------------------------------------------------------------------------

ERROR_CASES = [
    pytest.param(
        Response.text("Unauthorized: client id not registered", 401), "RCL_UNAUTHORIZED", 1, id="401-not-registered"
    ),
    pytest.param(Response.text("Forbidden", 403), "RCL_UNAUTHORIZED", 1, id="403"),
    pytest.param(
        Response(429, b"Rate limit is exceeded. Try again in 86400 seconds.", {"Retry-After": "86400"}),
        "RCL_QUOTA_EXCEEDED",
        1,
        id="429-quota",
    ),
    pytest.param(Response.text("Internal Server Error", 500), "RCL_SERVER_ERROR", 2, id="500-retried-once"),
    pytest.param(Response.text("Bad Gateway", 502), "RCL_SERVER_ERROR", 2, id="502-retried-once"),
    pytest.param(Response.text("<html>oops</html>", 200, "text/html"), "RCL_BAD_RESPONSE", 1, id="not-json"),
    pytest.param(Response.json({"value": []}), "RCL_BAD_RESPONSE", 1, id="object-not-array"),
    pytest.param(Response.json([1, 2]), "RCL_BAD_RESPONSE", 1, id="array-of-numbers"),
    pytest.param(
        Response(200, b'[{"id": 1, "name": "trunc', {"Content-Type": "application/json"}),
        "RCL_BAD_RESPONSE",
        1,
        id="truncated",
    ),
    pytest.param(
        Response.text("Bad Request: the Key Vault access token is not valid", 400), "RCL_BAD_REQUEST", 1, id="400"
    ),
    pytest.param(Response.text("Not Found", 404), "RCL_NOT_FOUND", 1, id="404"),
]


@pytest.mark.parametrize(("answer", "code", "calls"), ERROR_CASES)
def test_renewal_errors_name_the_cause_and_fail_the_run(
    standins: StandIns,
    functions: dict[str, Any],
    rcl_env: dict[str, str],
    events: Events,
    caplog: pytest.LogCaptureFixture,
    answer: Response,
    code: str,
    calls: int,
) -> None:
    standins.rcl.add_certificate("err.contoso.com", 3)
    standins.rcl.script(answer, answer, answer)
    error = run_failing(functions, "renew_timer")
    assert error.code == code
    assert error.remediation
    assert len(standins.rcl.renewal_calls()) == calls
    # Nothing recorded as scheduled; an unreadable 200 answer (RCL got the request and may have scheduled) is
    # recorded as an unknown request, for the morning check to look at what renewed since.
    expected = ["unknown"] if code == "RCL_BAD_RESPONSE" else []
    assert [r["state"] for r in records(rcl_env).values()] == expected
    (failed,) = events.named("CertificateRenewalFailed")
    assert failed["reason"] == code and failed["source"] == "rcl" and "certificateName" not in failed
    (completed,) = events.named("RclRenewalRunCompleted")
    assert (completed["outcome"], completed["reason"], completed["scheduledCount"]) == ("failed", code, 0)
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "certrenew.timer"]
    assert logged and code in logged[0].getMessage() and "Remediation:" in logged[0].getMessage()


def test_unauthorized_names_the_portal_registration_and_audience(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str]
) -> None:
    standins.rcl.expected_token = "some-other-token"  # RCL does not know this identity
    try:
        error = run_failing(functions, "renew_timer")
    finally:
        standins.rcl.expected_token = standins.identity.token_for(RCL_RESOURCE)
    assert error.code == "RCL_UNAUTHORIZED"
    assert "not registered in the RCL portal" in error.message and "audience" in error.message
    assert "Register a Client Id" in (error.remediation or "")


def test_quota_is_never_retried_and_says_when(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str]
) -> None:
    standins.rcl.script(Response(429, b"", {"Retry-After": "3600"}))
    error = run_failing(functions, "renew_timer")
    assert error.code == "RCL_QUOTA_EXCEEDED" and "1:00:00" in error.message and "50" in (error.remediation or "")
    assert len(standins.rcl.renewal_calls()) == 1


def test_an_echoed_token_never_reaches_the_error(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str]
) -> None:
    vault_token = standins.identity.token_for(KEY_VAULT_RESOURCE)
    standins.rcl.script(Response.text(f"Bad Request: invalid keyVaultAccessToken {vault_token}", 400))
    error = run_failing(functions, "renew_timer")
    assert vault_token not in error.message and "[redacted]" in error.message


def test_a_server_error_then_success_is_retried_once(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    standins.rcl.add_certificate("retry.contoso.com", 3)
    standins.rcl.script(Response.text("Service Unavailable", 503, "text/plain"))
    run(functions, "renew_timer")
    assert len(standins.rcl.renewal_calls()) == 2
    assert set(records(rcl_env)) == {"retry.contoso.com"}
    assert events.named("RclRenewalRunCompleted")[0]["outcome"] == "succeeded"


def test_renewal_timeout_is_not_repeated(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RCL_TIMEOUT_SECONDS", "0.5")
    app_context.reset()
    standins.rcl.script(
        Response(200, b"[]", JSON, delay=3),
        Response(200, b"[]", JSON, delay=3),
    )
    started = time.monotonic()
    error = run_failing(functions, "renew_timer")
    assert error.code == "RCL_TIMEOUT" and "may still have been scheduled" in (error.remediation or "")
    assert len(standins.rcl.renewal_calls()) == 1  # RCL may have scheduled: asking again would cost quota blindly
    assert time.monotonic() - started < 3


def test_list_timeout_is_repeated_once(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RCL_TIMEOUT_SECONDS", "0.5")
    app_context.reset()
    standins.rcl.script(*[Response(200, b"[]", JSON, delay=3)] * 3)
    error = run_failing(functions, "verify_renewals")
    assert error.code == "RCL_TIMEOUT"
    assert len(standins.rcl.list_calls()) == 2


def test_rcl_unreachable_is_retried_once_and_named(
    functions: dict[str, Any], rcl_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, events: Events
) -> None:
    monkeypatch.setenv("RCL_API_URL", f"http://127.0.0.1:{free_port()}/api/v2")
    app_context.reset()
    error = run_failing(functions, "renew_timer")
    assert error.code == "RCL_UNREACHABLE" and "RCL_API_URL" in (error.remediation or "")
    with table(rcl_env) as client:
        assert client.get_entity("rclbudget", night())["renewalCalls"] == 2


def test_at_most_two_calls_per_endpoint_a_night_across_reruns(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str]
) -> None:
    standins.rcl.script(*[Response.text("Internal Server Error", 500)] * 10)
    assert run_failing(functions, "renew_timer").code == "RCL_SERVER_ERROR"
    # The operator (or a past-due catch-up) runs it again the same night: RCL is not called again.
    again = run_failing(functions, "renew_timer")
    assert again.code == "RCL_CALL_BUDGET_EXHAUSTED" and "50 requests a week" in again.message
    assert len(standins.rcl.renewal_calls()) == 2

    for _ in range(3):
        run_failing(functions, "verify_renewals")
    assert len(standins.rcl.list_calls()) == 2


def test_a_successful_rerun_the_same_night_updates_rather_than_doubles(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str]
) -> None:
    standins.rcl.add_certificate("twice.contoso.com", 3)
    run(functions, "renew_timer")
    run(functions, "renew_timer")
    with table(rcl_env) as client:
        assert len(list(client.query_entities("PartitionKey eq 'rcl'"))) == 1
    assert len(standins.rcl.renewal_calls()) == 2


def test_identity_endpoint_failure_spends_no_rcl_call(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    standins.identity.script(*[Response.json({"error": "unavailable"}, status=500)] * 10)
    error = run_failing(functions, "renew_timer")
    assert error.code == "IDENTITY_UNAVAILABLE" and "Key Vault access token" in error.message
    assert standins.rcl.requests == []
    assert events.named("CertificateRenewalFailed")[0]["reason"] == "IDENTITY_UNAVAILABLE"
    with table(rcl_env) as client:
        assert list(client.query_entities("PartitionKey eq 'rclbudget'")) == []


@pytest.mark.parametrize("name", ["renew_timer", "verify_renewals"])
def test_unreachable_table_fails_before_rcl_is_called(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    dead = rcl_env["AzureWebJobsStorage"].replace(rcl_env["AzureWebJobsStorage"].split("TableEndpoint=")[1], "")
    dead += f"http://127.0.0.1:{free_port()}/devstoreaccount1;"
    monkeypatch.setenv("AzureWebJobsStorage", dead)
    app_context.reset()
    started = time.monotonic()
    error = run_failing(functions, name)
    assert error.code == "STATE_STORE_UNAVAILABLE" and error.remediation
    assert standins.rcl.requests == []
    assert time.monotonic() - started < 20


def test_invalid_rcl_settings_are_named_and_nothing_is_called(
    standins: StandIns,
    functions: dict[str, Any],
    rcl_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
) -> None:
    monkeypatch.setenv("RCL_CLIENT_ID", "11111111-2222-3333-4444-555555555555")
    app_context.reset()
    error = run_failing(functions, "renew_timer")
    assert error.code == "CONFIGURATION_ERROR" and "RCL_CLIENT_SECRET, RCL_TENANT_ID" in error.message
    assert standins.rcl.requests == [] and standins.identity.requests == []
    assert events.named("RclRenewalRunCompleted")[0]["reason"] == "CONFIGURATION_ERROR"


# -- scale ----------------------------------------------------------------------------------------------------------


def test_a_list_of_thousands_of_certificates(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    rcl = standins.rcl
    rcl.add_many(5000, first_days=-2, step_days=0.01)  # 2 days expired ... 48 days out; 1600 within 14 days
    rcl.due_days = 0  # RCL schedules only the already-expired ones
    try:
        run(functions, "renew_timer")
    finally:
        rcl.due_days = 30
    scheduled = len(records(rcl_env))
    assert 150 < scheduled <= 201  # more than one transaction of 100
    for index in range(0, 50):
        rcl.complete_renewal(f"bulk{index}.contoso.com", installed=True)

    events.clear()
    started = time.monotonic()
    run(functions, "verify_renewals")
    elapsed = time.monotonic() - started
    assert len(events.named("CertificateRenewed")) == 50
    assert len(events.named("CertificateRenewalPending")) == scheduled - 50
    near = events.named("CertificateNearExpiry")
    expected = sum(1 for i in range(50, 5000) if -2 + i * 0.01 <= 14)
    assert abs(len(near) - expected) <= 1  # the certificate on the 14-day boundary may fall either side
    assert min(n["daysLeft"] for n in near) == -2
    assert len(rcl.list_calls()) == 1
    assert elapsed < 30, f"checking 5000 certificates took {elapsed:.1f} s"


def test_scheduled_but_unrecordable_fails_the_run_and_still_reports_what_rcl_scheduled(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    # Azure Tables refuses a string property over 64 KiB: the write fails after RCL has scheduled.
    huge = "x" * 40000 + ".contoso.com"
    standins.rcl.script(Response.json([{"id": 1, "name": "ok.contoso.com"}, {"id": 2, "name": huge}]))
    error = run_failing(functions, "renew_timer")
    assert error.code == "STATE_STORE_UNAVAILABLE"
    assert "RCL scheduled 2 certificate(s)" in error.message and "ok.contoso.com" in error.message
    assert len(error.message) < 1000
    assert len(events.named("CertificateRenewalScheduled")) == 2  # telemetry still tells what RCL scheduled
    (completed,) = events.named("RclRenewalRunCompleted")
    assert (completed["outcome"], completed["reason"], completed["scheduledCount"]) == (
        "failed",
        "STATE_STORE_UNAVAILABLE",
        2,
    )
