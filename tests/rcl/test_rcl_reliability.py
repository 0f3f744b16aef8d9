"""Issue 18: the nightly RCL path reads every answer safely, reports every morning check, and closes nothing early.
One test (or a few) per finding, through `function_app.app` against the RCL stand-in, the identity stand-in and
Azurite, as the host runs the timers."""

from __future__ import annotations

import logging
import time
import tracemalloc
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import UpdateMode

from shared import context as app_context
from tests.rcl import test_rcl_timer
from tests.rcl.test_rcl_timer import Events, night, records, run, run_failing, table
from tests.standins.base import Response
from tests.standins.rcl import certificate_response, rcl_time
from tests.standins.stack import KEY_VAULT_RESOURCE, StandIns

# The nightly path's fixtures, shared with test_rcl_timer.
events = test_rcl_timer.events
rcl_env = test_rcl_timer.rcl_env

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def age_everything(env: dict[str, str], hours: float) -> None:
    """Time passes for the records: every date they carry (scheduled, seen renewed) moves `hours` back."""
    with table(env) as client:
        for entity in client.query_entities("PartitionKey eq 'rcl'"):
            moved: dict[str, Any] = {"PartitionKey": "rcl", "RowKey": entity["RowKey"]}
            for key in ("scheduledAt", "renewedAt"):
                if isinstance(entity.get(key), datetime):
                    moved[key] = entity[key] - timedelta(hours=hours)
            client.update_entity(moved, mode=UpdateMode.MERGE)


def next_morning(env: dict[str, str]) -> None:
    """A new UTC night: the call budget starts again (the tests' nights all fall on one date)."""
    with table(env) as client:
        client.delete_entity("rclbudget", night())


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def verify_completed(events: Events) -> dict[str, Any]:
    (completed,) = events.named("RclVerifyRunCompleted")
    return completed


# -- 1. boundary dates ------------------------------------------------------------------------------------------------


def test_boundary_dates_are_treated_as_missing_and_never_poison_the_table(
    standins: StandIns,
    functions: dict[str, Any],
    rcl_env: dict[str, str],
    events: Events,
    caplog: pytest.LogCaptureFixture,
) -> None:
    soon = datetime.now(UTC) + timedelta(days=5)
    answer = [
        {"id": 1, "name": "minvalue.contoso.com", "expiryDate": "0001-01-01T00:00:00", "target": "Azure DNS"},
        {"id": 2, "name": "maxvalue.contoso.com", "expiryDate": "9999-12-31T23:59:59.9999999"},
        {
            "id": 3,
            "name": "minissue.contoso.com",
            "issueDate": "0001-01-01T00:00:00",
            "expiryDate": rcl_time(soon),
            "remoteCreateDate": "0001-01-01T00:00:00",
        },
    ]
    standins.rcl.script(Response.json(answer), Response.json(answer))
    run(functions, "renew_timer")
    stored = records(rcl_env)
    assert set(stored) == {"minvalue.contoso.com", "maxvalue.contoso.com", "minissue.contoso.com"}
    assert "expiryDate" not in stored["minvalue.contoso.com"] and "expiryDate" not in stored["maxvalue.contoso.com"]
    named = " ".join(warnings_of(caplog))
    assert "minvalue.contoso.com" in named and "maxvalue.contoso.com" in named and "minissue.contoso.com" in named

    events.clear()
    run(functions, "verify_renewals")  # no STATE_STORE_UNAVAILABLE, no OverflowError
    assert len(standins.rcl.list_calls()) == 1
    assert verify_completed(events)["outcome"] == "succeeded"
    assert len(events.named("CertificateRenewalPending")) == 3


# -- 2. every morning check reports, and an alert watches it --------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Response.text("<html>maintenance</html>", 200, "text/html"), "RCL_BAD_RESPONSE"),
        (Response.json({"error": {"code": "Oops"}}), "RCL_BAD_RESPONSE"),
        (Response.text("Unauthorized", 401), "RCL_UNAUTHORIZED"),
    ],
)
def test_a_failed_morning_check_emits_its_run_event(
    standins: StandIns,
    functions: dict[str, Any],
    rcl_env: dict[str, str],
    events: Events,
    answer: Response,
    reason: str,
) -> None:
    standins.rcl.script(answer)
    assert run_failing(functions, "verify_renewals").code == reason
    completed = verify_completed(events)
    assert (completed["outcome"], completed["reason"], completed["source"]) == ("failed", reason, "rcl")
    assert completed["message"] and isinstance(completed["durationMs"], int)


def test_an_exhausted_budget_and_a_good_check_both_report(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    standins.rcl.script(*[Response.text("Internal Server Error", 500)] * 2)
    run_failing(functions, "verify_renewals")
    events.clear()
    assert run_failing(functions, "verify_renewals").code == "RCL_CALL_BUDGET_EXHAUSTED"
    assert verify_completed(events)["reason"] == "RCL_CALL_BUDGET_EXHAUSTED"

    # The next night, a good check says what it found.
    next_morning(rcl_env)
    standins.rcl.add_certificate("ok.contoso.com", 60)
    standins.rcl.add_certificate("near.contoso.com", 3)
    events.clear()
    run(functions, "verify_renewals")
    completed = verify_completed(events)
    assert completed["outcome"] == "succeeded" and "reason" not in completed
    assert (completed["listedCount"], completed["nearExpiryCount"], completed["openCount"]) == (2, 1, 0)


def test_the_alert_rule_and_docs_watch_the_morning_check() -> None:
    bicep = (ROOT / "infra" / "modules" / "alerts.bicep").read_text()
    assert "RclVerifyRunCompleted" in bicep and "succeeded" in bicep
    readme = (ROOT / "docs" / "telemetry.md").read_text()
    assert "`RclVerifyRunCompleted`" in readme and 'name == "RclVerifyRunCompleted"' in readme


# -- 3. an empty or mostly vanished list is suspect -------------------------------------------------------------------


def test_an_empty_list_keeps_records_open_and_fails_the_check(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    standins.rcl.add_certificate("one.contoso.com", 3)
    standins.rcl.add_certificate("two.contoso.com", 4)
    run(functions, "renew_timer")
    standins.rcl.script(Response.json([]))
    events.clear()
    error = run_failing(functions, "verify_renewals")
    assert error.code == "RCL_LIST_SUSPECT" and error.remediation
    assert events.named("CertificateRenewalFailed") == []
    assert {r["state"] for r in records(rcl_env).values()} == {"scheduled"}
    assert verify_completed(events)["reason"] == "RCL_LIST_SUSPECT"


def test_most_open_records_vanishing_at_once_is_suspect_but_one_gone_is_not(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    for index in range(4):
        standins.rcl.add_certificate(f"v{index}.contoso.com", 3)
    standins.rcl.add_certificate("stays.contoso.com", 80)
    run(functions, "renew_timer")
    for index in range(3):
        standins.rcl.remove(f"v{index}.contoso.com")
    events.clear()
    assert run_failing(functions, "verify_renewals").code == "RCL_LIST_SUSPECT"
    assert events.named("CertificateRenewalFailed") == []
    assert {r["state"] for r in records(rcl_env).values()} == {"scheduled"}


# -- 4. renewed but not installed stays open --------------------------------------------------------------------------


def test_renewed_not_installed_stays_open_warns_on_the_deployed_expiry_and_fails_after_the_grace(
    standins: StandIns,
    functions: dict[str, Any],
    rcl_env: dict[str, str],
    events: Events,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RCL_INSTALL_GRACE_HOURS", "12")
    app_context.reset()
    standins.rcl.add_certificate("deployed.contoso.com", 5)
    standins.rcl.add_certificate("later.contoso.com", 6)
    run(functions, "renew_timer")
    standins.rcl.complete_renewal("deployed.contoso.com", installed=False)
    standins.rcl.complete_renewal("later.contoso.com", installed=False)

    events.clear()
    run(functions, "verify_renewals")
    renewed = events.by_certificate("CertificateRenewed")
    assert renewed["deployed.contoso.com"]["installed"] is False
    stored = records(rcl_env)
    assert stored["deployed.contoso.com"]["state"] == "notinstalled"
    # What is deployed is still the old certificate: it is the one that expires in 5 days.
    near = events.by_certificate("CertificateNearExpiry")
    assert near["deployed.contoso.com"]["daysLeft"] == 4

    # The next morning one was installed, the other not yet (within the grace).
    standins.rcl.complete_renewal("later.contoso.com", installed=True)
    age_everything(rcl_env, 6)
    next_morning(rcl_env)
    events.clear()
    run(functions, "verify_renewals")
    assert events.by_certificate("CertificateRenewed")["later.contoso.com"]["installed"] is True
    assert events.by_certificate("CertificateRenewalPending")["deployed.contoso.com"]["reason"] == "RCL_NOT_INSTALLED"
    assert records(rcl_env)["later.contoso.com"]["state"] == "renewed"

    # Past the install grace it fails, and is closed.
    age_everything(rcl_env, 13)
    next_morning(rcl_env)
    events.clear()
    run(functions, "verify_renewals")
    (failed,) = events.named("CertificateRenewalFailed")
    assert failed["certificateName"] == "deployed.contoso.com" and failed["reason"] == "RCL_NOT_INSTALLED"
    assert records(rcl_env)["deployed.contoso.com"]["state"] == "failed"


# -- 5. duplicate keys in RCL's answer -------------------------------------------------------------------------------


def test_duplicates_in_the_renewal_answer_are_recorded_once(
    standins: StandIns,
    functions: dict[str, Any],
    rcl_env: dict[str, str],
    events: Events,
    caplog: pytest.LogCaptureFixture,
) -> None:
    soon = datetime.now(UTC) + timedelta(days=3)
    twin = certificate_response(7, "twin.contoso.com", soon)
    answer = [twin, dict(twin), {"name": "noid.contoso.com"}, {"name": "noid.contoso.com"}]
    standins.rcl.script(Response.json(answer))
    run(functions, "renew_timer")
    assert set(records(rcl_env)) == {"twin.contoso.com", "noid.contoso.com"}
    assert events.named("RclRenewalRunCompleted")[0]["outcome"] == "succeeded"
    assert any("duplicate" in w and "twin.contoso.com" in w for w in warnings_of(caplog))


# -- 6. a fresh Key Vault token for RCL --------------------------------------------------------------------------------


def test_a_key_vault_token_near_its_end_is_fetched_again_before_it_is_sent(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    standins.identity.lifetimes[KEY_VAULT_RESOURCE] = deque([600])  # the first token has ten minutes left
    standins.rcl.add_certificate("fresh.contoso.com", 3)
    run(functions, "renew_timer")
    assert len(standins.identity.token_requests(KEY_VAULT_RESOURCE)) == 2
    assert len(standins.rcl.renewal_calls()) == 1
    assert not any("Key Vault token" in w for w in warnings_of(caplog))


def test_a_key_vault_token_that_stays_short_is_sent_with_a_warning(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    standins.identity.lifetimes[KEY_VAULT_RESOURCE] = deque([600, 600])
    run(functions, "renew_timer")
    assert len(standins.rcl.renewal_calls()) == 1
    assert any("Key Vault token" in w and "minutes" in w for w in warnings_of(caplog))


# -- 7. the gateway's quota 403 -----------------------------------------------------------------------------------


def test_a_quota_403_is_quota_exceeded_and_never_retried(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str]
) -> None:
    standins.rcl.script(
        Response(
            403,
            b'{"statusCode": 403, "message": "Out of call volume quota. Quota will be replenished in 2.00:00:00."}',
            {"Content-Type": "application/json", "Retry-After": "172800"},
        )
    )
    error = run_failing(functions, "renew_timer")
    assert error.code == "RCL_QUOTA_EXCEEDED" and "50" in (error.remediation or "")
    assert "Register a Client Id" not in (error.remediation or "")
    assert len(standins.rcl.renewal_calls()) == 1


# -- 8. a total deadline and a size cap on RCL's answers ------------------------------------------------------------


def test_a_trickling_rcl_answer_ends_within_the_timeout(
    standins: StandIns,
    functions: dict[str, Any],
    rcl_env: dict[str, str],
    events: Events,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RCL_TIMEOUT_SECONDS", "1")
    app_context.reset()
    standins.rcl.script(Response(200, b"[" + b" " * 20 + b"]", {"Content-Type": "application/json"}, trickle=0.5))
    started = time.monotonic()
    error = run_failing(functions, "renew_timer")
    assert time.monotonic() - started < 3
    assert error.code == "RCL_TIMEOUT"
    assert events.named("RclRenewalRunCompleted")[0]["reason"] == "RCL_TIMEOUT"


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_a_110_mb_rcl_answer_is_refused_without_loading_it(
    standins: StandIns,
    functions: dict[str, Any],
    rcl_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    declare_length: bool,
) -> None:
    monkeypatch.setenv("RCL_MAX_RESPONSE_MB", "8")
    app_context.reset()
    standins.rcl.script(Response.huge_json_array(110 * MIB, declare_length=declare_length))
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        error = run_failing(functions, "verify_renewals")
        peak = (tracemalloc.get_traced_memory()[1] - before) / MIB
    finally:
        tracemalloc.stop()
    assert error.code == "RCL_BAD_RESPONSE" and "RCL_MAX_RESPONSE_MB" in (error.remediation or "") + error.message
    assert peak < 30, f"the check held {peak:.1f} MiB for a 110 MB answer"


# -- 9. a timed-out renewal request is recorded for the morning check ----------------------------------------------


def test_a_timed_out_renewal_request_is_resolved_by_the_morning_check(
    standins: StandIns,
    functions: dict[str, Any],
    rcl_env: dict[str, str],
    events: Events,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RCL_TIMEOUT_SECONDS", "0.5")
    app_context.reset()
    standins.rcl.add_certificate("maybe.contoso.com", 3)
    standins.rcl.add_certificate("other.contoso.com", 70)
    standins.rcl.script(Response(200, b"[]", {"Content-Type": "application/json"}, delay=2))
    assert run_failing(functions, "renew_timer").code == "RCL_TIMEOUT"
    with table(rcl_env) as client:
        (unknown,) = [e for e in client.query_entities("PartitionKey eq 'rcl'") if e["state"] == "unknown"]
    assert unknown["RowKey"] == f"{night()}-unknown"

    # RCL did schedule it after all, and renewed it.
    time.sleep(0.01)
    standins.rcl.complete_renewal("maybe.contoso.com", installed=True)
    monkeypatch.setenv("RCL_TIMEOUT_SECONDS", "10")
    app_context.reset()
    events.clear()
    run(functions, "verify_renewals")
    renewed = events.by_certificate("CertificateRenewed")
    assert set(renewed) == {"maybe.contoso.com"}
    with table(rcl_env) as client:
        assert client.get_entity("rcl", f"{night()}-unknown")["state"] == "resolved"


def test_an_unknown_request_with_nothing_renewed_fails_after_the_grace(
    standins: StandIns,
    functions: dict[str, Any],
    rcl_env: dict[str, str],
    events: Events,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RCL_TIMEOUT_SECONDS", "0.5")
    app_context.reset()
    standins.rcl.add_certificate("quiet.contoso.com", 3)
    standins.rcl.script(Response(200, b"[]", {"Content-Type": "application/json"}, delay=2))
    run_failing(functions, "renew_timer")
    monkeypatch.setenv("RCL_TIMEOUT_SECONDS", "10")
    app_context.reset()
    age_everything(rcl_env, 25)
    events.clear()
    run(functions, "verify_renewals")
    (failed,) = events.named("CertificateRenewalFailed")
    assert failed["reason"] == "RCL_RENEWAL_UNKNOWN"
    with table(rcl_env) as client:
        assert client.get_entity("rcl", f"{night()}-unknown")["state"] == "failed"


# -- 10. an unreadable expiry is reported --------------------------------------------------------------------------


def test_an_unreadable_expiry_is_reported_not_dropped(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    standins.rcl.add_certificate("fine.contoso.com", 60)
    standins.rcl.certificates.append({"id": 999, "name": "garbled.contoso.com", "expiryDate": "31/12/2026"})
    run(functions, "verify_renewals")
    near = events.by_certificate("CertificateNearExpiry")
    assert set(near) == {"garbled.contoso.com"}
    assert near["garbled.contoso.com"]["reason"] == "RCL_EXPIRY_UNREADABLE"
    assert verify_completed(events)["unreadableDateCount"] == 1


# -- 11. names as RCL treats them ----------------------------------------------------------------------------------


def test_names_differing_only_in_case_are_told_apart(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    soon = rcl_time(datetime.now(UTC) + timedelta(days=3))
    answer = [{"name": "Case.contoso.com", "expiryDate": soon}, {"name": "case.contoso.com", "expiryDate": soon}]
    standins.rcl.script(Response.json(answer), Response.json(answer))
    run(functions, "renew_timer")
    events.clear()
    run(functions, "verify_renewals")
    assert events.named("CertificateRenewalFailed") == []
    assert set(events.by_certificate("CertificateRenewalPending")) == {"Case.contoso.com", "case.contoso.com"}


# -- 12. retention, and an earlier expiry flagged ------------------------------------------------------------------


def test_old_records_and_budget_rows_are_removed_in_bounded_batches(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RCL_RETENTION_DAYS", "30")
    app_context.reset()
    old = datetime.now(UTC) - timedelta(days=60)
    recent = datetime.now(UTC) - timedelta(days=2)
    with table(rcl_env) as client:
        client.create_table()
        for index in range(250):
            client.upsert_entity(
                {
                    "PartitionKey": "rcl",
                    "RowKey": f"old-{index}",
                    "certificateName": f"o{index}",
                    "state": "renewed",
                    "scheduledAt": old,
                    "closedAt": old,
                }
            )
        client.upsert_entity(
            {
                "PartitionKey": "rcl",
                "RowKey": "recent",
                "certificateName": "r",
                "state": "failed",
                "scheduledAt": recent,
                "closedAt": recent,
            }
        )
        client.upsert_entity(
            {
                "PartitionKey": "rcl",
                "RowKey": "open-old",
                "certificateName": "still-open",
                "state": "scheduled",
                "scheduledAt": old,
            }
        )
        for days in (40, 50, 1):
            client.upsert_entity(
                {
                    "PartitionKey": "rclbudget",
                    "RowKey": (datetime.now(UTC) - timedelta(days=days)).strftime("%Y%m%d"),
                    "renewalCalls": 1,
                }
            )
    run(functions, "renew_timer")
    with table(rcl_env) as client:
        left = {e["RowKey"] for e in client.query_entities("PartitionKey eq 'rcl'")}
        budget = {e["RowKey"] for e in client.query_entities("PartitionKey eq 'rclbudget'")}
    assert "recent" in left and "open-old" in left and not any(k.startswith("old-") for k in left)
    assert budget == {(datetime.now(UTC) - timedelta(days=1)).strftime("%Y%m%d"), night()}


def test_an_expiry_earlier_than_recorded_is_flagged(
    standins: StandIns, functions: dict[str, Any], rcl_env: dict[str, str], events: Events
) -> None:
    entry = standins.rcl.add_certificate("shrunk.contoso.com", 10)
    standins.rcl.add_certificate("other.contoso.com", 70)
    run(functions, "renew_timer")
    entry["expiryDate"] = rcl_time(datetime.now(UTC) + timedelta(days=2))  # RCL now says it ends sooner
    events.clear()
    run(functions, "verify_renewals")
    (failed,) = events.named("CertificateRenewalFailed")
    assert failed["certificateName"] == "shrunk.contoso.com" and failed["reason"] == "RCL_EXPIRY_EARLIER"
    assert "earlier" in failed["message"]
