"""Issue 22: AppViewX files every renewal under a NEW certificate record (page line 188: response.resourceId is
"Identifier of the certificate record that has been created"; 332-336: newCertificateId, newCertificateUuid). The
record that was renewed stays, with its old certificate.

Through `function_app.app` (webhook, status route, `complete_pending` timer, Key Vault events, inventory) against
the AVX stand-in that does what the page says. Where the page is silent (what a manual-approval answer names,
whether search lists validFrom) the tests run the app under each reading.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import context as app_context
from shared.appviewx.records import PendingRecord, RenewalState
from tests.appviewx.test_avx_pipeline import run_complete_pending, status_of, stored_thumbprint, time_passes
from tests.conftest import WebhookCaller
from tests.standins import certs
from tests.standins.avx import AvxCertificate
from tests.standins.base import Response
from tests.standins.stack import REPO_ROOT, StandIns
from tests.vault.test_inventory import inventory
from tests.vault.test_keyvault_events import deliver as deliver_event
from tests.vault.test_keyvault_events import key_vault_event

READINGS = ["new", "requested", "none"]  # what a manual-approval answer names (the page is silent)


def kv_name(record: AvxCertificate) -> str:
    return record.common_name.replace(".", "-").replace("*", "wildcard")


def assert_stored_under_new_record(
    standins: StandIns, functions: dict[str, Any], pending_id: str, replaced: AvxCertificate
) -> AvxCertificate:
    """The renewal AVX made (a new record) is in Key Vault, and everything downstream names that record."""
    (new,) = replaced.renewals
    assert new.resource_id != replaced.resource_id
    name = kv_name(replaced)
    assert stored_thumbprint(standins, name) == certs.thumbprint_hex(new.certificate)
    stored = standins.key_vault.latest(name)
    assert stored is not None and stored.tags is not None
    assert stored.tags["avxResourceId"] == new.resource_id, "Key Vault's tags must name the record AVX now holds"
    record = status_of(functions, pending_id)
    assert record["state"] == "renewed", record
    assert record["avxResourceId"] == new.resource_id, "the status route must name the record AVX now holds"
    assert len(standins.avx.renew_calls()) == 1
    return new


# -- finding 1: lost renewals after manual approval ------------------------------------------------------------------


@pytest.mark.parametrize("reading", READINGS)
def test_manual_approval_by_resource_id_is_stored_under_the_new_record(
    standins: StandIns, call_webhook: WebhookCaller, functions: dict[str, Any], reading: str
) -> None:
    standins.avx.approval_answer_names = reading  # type: ignore[assignment]
    item = standins.avx.add_certificate(f"approve-rid-{reading}.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id}, params={"autoApproval": "false"})
    assert status == 202, answer

    run_complete_pending(functions)  # nobody approved yet: the old record's certificate is not the renewal
    assert standins.key_vault.latest(kv_name(item)) is None
    assert status_of(functions, answer["pendingId"])["state"] == "pending"

    standins.avx.approve(item.resource_id)
    time_passes(20)
    run_complete_pending(functions)
    assert_stored_under_new_record(standins, functions, answer["pendingId"], item)


@pytest.mark.parametrize("reading", READINGS)
def test_manual_approval_by_common_name_and_serial_is_stored_under_the_new_record(
    standins: StandIns, call_webhook: WebhookCaller, functions: dict[str, Any], reading: str
) -> None:
    standins.avx.approval_answer_names = reading  # type: ignore[assignment]
    item = standins.avx.add_certificate(f"approve-cn-{reading}.contoso.com", history=2)
    body = {"commonName": item.common_name, "serialNumber": item.serial_number}
    status, answer = call_webhook(body, params={"autoApproval": "false"})
    assert status == 202, answer

    run_complete_pending(functions)
    assert standins.key_vault.latest(kv_name(item)) is None  # neither the current nor an older record
    standins.avx.approve(item.resource_id)
    time_passes(20)
    run_complete_pending(functions)
    assert_stored_under_new_record(standins, functions, answer["pendingId"], item)
    assert len(standins.key_vault.received("POST", "/import")) == 1


# -- the recovery paths --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lists_valid_from", [True, False])
def test_a_renewal_whose_answer_timed_out_completes_under_the_new_record(
    standins: StandIns,
    call_webhook: WebhookCaller,
    functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    lists_valid_from: bool,
) -> None:
    monkeypatch.setenv("AVX_TIMEOUT_SECONDS", "1")
    app_context.reset()
    standins.avx.answer_delay = 3  # AVX renews, then answers after the app stopped waiting
    standins.avx.search_lists_valid_from = lists_valid_from  # else the download's notBefore tells
    item = standins.avx.add_certificate(f"timeout-{lists_valid_from}.contoso.com".lower(), history=1)
    status, answer = call_webhook({"resourceId": item.resource_id})
    assert status == 202 and answer["reason"] == "AVX_TIMEOUT", answer

    run_complete_pending(functions)
    assert_stored_under_new_record(standins, functions, answer["pendingId"], item)


def test_a_renewal_whose_process_died_between_avx_and_key_vault_completes_under_the_new_record(
    standins: StandIns, app_env: dict[str, str], functions: dict[str, Any]
) -> None:
    item = standins.avx.add_certificate("crashed-new.contoso.com")
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
    assert len(item.renewals) == 1 and standins.key_vault.latest(kv_name(item)) is None

    (record,) = app_context.pending_store().all_records()
    time_passes(20)  # the dead invocation's lease runs out
    run_complete_pending(functions)
    assert_stored_under_new_record(standins, functions, record.pending_id, item)


def test_renewals_of_two_twins_after_a_lost_answer_are_ambiguous_and_name_both_records(
    standins: StandIns, call_webhook: WebhookCaller, functions: dict[str, Any]
) -> None:
    common_name = "twins-new.contoso.com"
    mine = standins.avx.add_certificate(common_name)
    other = standins.avx.add_certificate(common_name)  # another AVX record of the same name (another team)
    standins.avx.script(Response(drop=True))  # the answer never reaches the app
    status, answer = call_webhook({"commonName": common_name, "serialNumber": mine.serial_number})
    assert status == 202 and answer["avx"] is None, answer
    renewed = [standins.avx.renew_outside(mine.resource_id), standins.avx.renew_outside(other.resource_id)]
    time_passes(20)
    run_complete_pending(functions)
    record = status_of(functions, answer["pendingId"])
    assert record["state"] == "pending" and "AVX_RENEWAL_AMBIGUOUS" in record["lastError"], record
    for new in renewed:
        assert new.resource_id in record["lastError"]
    assert standins.key_vault.latest(kv_name(mine)) is None


def test_a_twin_issued_before_the_request_never_qualifies(
    standins: StandIns, call_webhook: WebhookCaller, functions: dict[str, Any]
) -> None:
    common_name = "twin-before.contoso.com"
    mine = standins.avx.add_certificate(common_name)
    other = standins.avx.add_certificate(common_name)
    # The twin was renewed (a new record) three hours before this app's request: beyond any CA's backdating.
    standins.avx.renew_outside(other.resource_id, not_before=datetime.now(UTC) - timedelta(hours=3))
    standins.avx.script(Response(drop=True))  # AVX renews, but the answer never reaches the app
    status, answer = call_webhook({"commonName": common_name, "serialNumber": mine.serial_number})
    assert status == 202, answer
    run_complete_pending(functions)
    assert standins.key_vault.latest(kv_name(mine)) is None, "the twin's renewal was stored as this one"
    assert status_of(functions, answer["pendingId"])["state"] == "pending"

    renewed = standins.avx.renew_outside(mine.resource_id)  # this renewal, listed now
    time_passes(20)
    run_complete_pending(functions)
    assert stored_thumbprint(standins, kv_name(mine)) == certs.thumbprint_hex(renewed.certificate)


# -- finding 2: one AVX round trip per warm call --------------------------------------------------------------------


def test_one_avx_round_trip_per_call_for_both_request_shapes(standins: StandIns, call_webhook: WebhookCaller) -> None:
    item = standins.avx.add_certificate("one-trip.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id})
    assert status == 200, answer
    assert [r.path.rsplit("/", 1)[-1] for r in standins.avx.requests] == ["renew"]
    assert answer["avx"]["resourceId"] == item.renewals[0].resource_id  # the answer names the new record

    standins.avx.reset_records()
    other = standins.avx.add_certificate("one-trip2.contoso.com")
    status, answer = call_webhook({"commonName": other.common_name, "serialNumber": other.serial_number})
    assert status == 200, answer
    assert [r.path.rsplit("/", 1)[-1] for r in standins.avx.requests] == ["renew"]


# -- downstream: the record AVX now holds ----------------------------------------------------------------------------


def test_the_next_renewal_from_a_near_expiry_event_renews_the_record_avx_now_holds(
    standins: StandIns, call_webhook: WebhookCaller, functions: dict[str, Any]
) -> None:
    item = standins.avx.add_certificate("chain.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id})
    assert status == 200, answer
    (first,) = item.renewals
    stored = standins.key_vault.latest("chain-contoso-com")
    assert stored is not None and stored.tags is not None and stored.tags["avxResourceId"] == first.resource_id

    deliver_event(functions, key_vault_event(standins, "chain-contoso-com", stored.version))
    assert standins.avx.renew_calls()[-1].json()["resourceId"] == first.resource_id
    (second,) = first.renewals
    again = standins.key_vault.latest("chain-contoso-com")
    assert again is not None and again.tags is not None and again.tags["avxResourceId"] == second.resource_id
    assert again.thumbprint == certs.thumbprint_hex(second.certificate)


def test_the_inventory_names_the_record_avx_now_holds(
    standins: StandIns, call_webhook: WebhookCaller, functions: dict[str, Any]
) -> None:
    standins.key_vault.reset()
    item = standins.avx.add_certificate("who.contoso.com")
    assert call_webhook({"resourceId": item.resource_id})[0] == 200
    status, body = inventory(functions)
    assert status == 200, body
    (entry,) = [c for c in body["certificates"] if c["name"] == "who-contoso-com"]
    assert entry["source"] == "appviewx" and entry["avxResourceId"] == item.renewals[0].resource_id


def test_a_renewal_by_an_old_resource_id_avx_has_since_renewed_names_the_new_record(
    standins: StandIns, call_webhook: WebhookCaller
) -> None:
    item = standins.avx.add_certificate("old-id.contoso.com")
    assert call_webhook({"resourceId": item.resource_id})[0] == 200
    status, answer = call_webhook({"resourceId": item.resource_id})  # the old id again: AVX decides
    assert status == 200, answer
    second = item.renewals[-1]
    assert answer["avx"]["resourceId"] == second.resource_id != item.renewals[0].resource_id
    stored = standins.key_vault.latest("old-id-contoso-com")
    assert stored is not None and stored.thumbprint == certs.thumbprint_hex(second.certificate)


# -- migration: records written before (same-id assumption) ---------------------------------------------------------


def test_a_record_written_under_the_same_id_assumption_still_completes(
    standins: StandIns, app_env: dict[str, str], functions: dict[str, Any]
) -> None:
    item = standins.avx.add_certificate("legacy-record.contoso.com")
    listed_from = item.certificate.not_valid_before_utc.isoformat()
    listed_to = item.certificate.not_valid_after_utc.isoformat()
    record = PendingRecord.new(
        datetime.now(UTC),
        reason="AVX_NO_CERTIFICATE",
        storage="import",
        requested_resource_id=item.resource_id,
        avx_resource_id=item.resource_id,  # what the old code recorded: "AVX renews in place"
        common_name=item.common_name,
        serial_number=item.serial_number,
        replaced_valid_from=listed_from,
        replaced_valid_to=listed_to,
    )
    app_context.pending_store().create(record)
    standins.avx.renew_outside(item.resource_id)  # approved in AVX: a new record
    run_complete_pending(functions)
    assert_stored_under_new_record_without_call(standins, functions, record.pending_id, item)


def assert_stored_under_new_record_without_call(
    standins: StandIns, functions: dict[str, Any], pending_id: str, replaced: AvxCertificate
) -> None:
    (new,) = replaced.renewals
    assert stored_thumbprint(standins, kv_name(replaced)) == certs.thumbprint_hex(new.certificate)
    record = status_of(functions, pending_id)
    assert record["state"] == RenewalState.RENEWED and record["avxResourceId"] == new.resource_id, record
