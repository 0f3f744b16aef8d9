"""Issue 31: the daily renewal sweep `plan_renewals`, driven through `function_app.app` with Event Grid absent: the
timer function as the host calls it, the real CertificateClient over HTTPS against the Key Vault stand-in, the AVX
stand-in and Azurite. The plan route and the inventory show what it decided."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared.core.events import Event
from tests.eventlog import Events, recording
from tests.standins.base import Response
from tests.standins.certs import issue_certificate
from tests.standins.stack import FakeContext, StandIns
from tests.vault.test_keyvault_events import deliver, key_vault_event

pytestmark = pytest.mark.usefixtures("app_env")


@pytest.fixture(autouse=True)
def empty_vault(standins: StandIns) -> None:
    """The sweep looks at every certificate of the vault: start each test with none (other tests' stay otherwise)."""
    with standins.key_vault.lock:
        standins.key_vault.certificates.clear()
        standins.key_vault.pending.clear()


@pytest.fixture
def events() -> Iterator[Events]:
    with recording() as recorder:
        yield recorder


def sweep(functions: dict[str, Any]) -> None:
    timer = func.timer.TimerRequest(past_due=False)
    functions["plan_renewals"].get_user_function()(timer, FakeContext("plan_renewals"))


def get_json(functions: dict[str, Any], name: str, route: str) -> dict[str, Any]:
    request = func.HttpRequest(method="GET", url=f"http://localhost:7071/api/{route}", headers={}, params={}, body=b"")
    response = functions[name].get_user_function()(request, FakeContext(name))
    assert response.status_code == 200, response.get_body()
    return json.loads(response.get_body())


def plan_of(functions: dict[str, Any]) -> dict[str, dict[str, Any]]:
    body = get_json(functions, "renewal_plan", "certificates/plan")
    return {c["name"]: c for c in body["certificates"]}


def avx_certificate(standins: StandIns, *, days: int, days_left: float) -> tuple[str, str]:
    """A certificate the app stored from AppViewX earlier (its tags) whose current version has `days_left` of
    `days`: its Key Vault name and version."""
    resource_id = f"res{uuid.uuid4().hex[:8]}"
    common_name = f"app{uuid.uuid4().hex[:6]}.contoso.com"
    standins.avx.add_certificate(common_name, resource_id=resource_id)
    issued = issue_certificate(
        common_name, days=days, not_before=datetime.now(UTC) - timedelta(days=days) + timedelta(days=days_left)
    )
    name = common_name.replace(".", "-")
    stored = standins.key_vault.seed(
        name, issued.certificate, issued.private_key, tags={"source": "appviewx", "avxResourceId": resource_id}
    )
    return name, stored.version


def unmanaged_certificate(standins: StandIns, *, days: int, days_left: float) -> tuple[str, str]:
    common_name = f"legacy{uuid.uuid4().hex[:6]}.fabrikam.com"
    issued = issue_certificate(
        common_name, days=days, not_before=datetime.now(UTC) - timedelta(days=days) + timedelta(days=days_left)
    )
    name = common_name.replace(".", "-")
    return name, standins.key_vault.seed(name, issued.certificate, issued.private_key, tags={"team": "x"}).version


def test_a_due_avx_certificate_is_renewed_once_by_the_sweep_and_not_again_by_an_event(
    functions: dict[str, Any], standins: StandIns, events: Events
) -> None:
    name, old_version = avx_certificate(standins, days=90, days_left=20)
    assert plan_of(functions)[name]["action"] == "renew"

    sweep(functions)
    assert len(standins.avx.renew_calls()) == 1
    renewed = standins.key_vault.latest(name)
    assert renewed is not None and renewed.version != old_version
    assert renewed.tags and renewed.tags["source"] == "appviewx"
    (done,) = events.named("CertificateRenewed")
    assert done["certificateName"] == name and done["caller"] == "renewal-sweep"

    sweep(functions)  # the next day: the new version is not due
    deliver(functions, key_vault_event(standins, name, old_version))  # Event Grid, late, for the replaced version
    assert len(standins.avx.renew_calls()) == 1
    assert plan_of(functions)[name]["action"] == "wait"
    (completed, _) = events.named("RenewalSweepCompleted")
    assert completed["renewed"] == 1 and completed["source"] == "sweep"


def test_the_sweep_and_an_event_for_the_same_version_renew_once(functions: dict[str, Any], standins: StandIns) -> None:
    name, version = avx_certificate(standins, days=90, days_left=20)
    deliver(functions, key_vault_event(standins, name, version))
    sweep(functions)
    assert len(standins.avx.renew_calls()) == 1


def test_certificates_not_due_are_left_alone_and_a_six_day_certificate_renews_at_half(
    functions: dict[str, Any], standins: StandIns
) -> None:
    fresh, _ = avx_certificate(standins, days=90, days_left=80)
    short, short_version = avx_certificate(standins, days=6, days_left=2)
    plan = plan_of(functions)
    assert plan[fresh]["action"] == "wait" and plan[fresh]["reason"].startswith("not due until")
    assert plan[short]["action"] == "renew"

    sweep(functions)
    assert len(standins.avx.renew_calls()) == 1
    renewed = standins.key_vault.latest(short)
    assert renewed is not None and renewed.version != short_version
    assert len(standins.key_vault.certificates[fresh]) == 1


def test_an_unmanaged_certificate_gets_one_warning_per_step_and_version(
    functions: dict[str, Any], standins: StandIns, events: Events
) -> None:
    name, version = unmanaged_certificate(standins, days=90, days_left=6)
    for _ in range(3):
        sweep(functions)
    warnings = [e for e in events.named("CertificateNearExpiry") if e["certificateName"] == name]
    assert len(warnings) == 1
    (warning,) = warnings
    assert warning["ladderStep"] == 7 and warning["owner"] == "unmanaged" and warning["reason"] == "NOT_MANAGED"
    assert warning["keyVaultVersion"] == version and warning["source"] == "sweep"
    assert not standins.avx.renew_calls()
    assert plan_of(functions)[name]["action"] == "report"


def test_a_failed_renewal_backs_off_and_force_overrides(
    functions: dict[str, Any], standins: StandIns, events: Events, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.operator.cli import main

    name, version = avx_certificate(standins, days=90, days_left=5)
    body = {
        "response": None,
        "message": "Since requested certificate's work order is in progress, cannot initiate another action",
        "appStatusCode": "OPEN_WORK_ORDERS_FOUND",
    }
    standins.avx.script(Response(417, json.dumps(body).encode(), {"Content-Type": "application/json"}))
    sweep(functions)
    assert len(standins.avx.renew_calls()) == 1
    assert standins.key_vault.latest(name).version == version  # type: ignore[union-attr]
    planned = plan_of(functions)[name]
    assert planned["action"] == "backoff" and planned["failures"] == 1
    assert planned["lastFailureReason"] == "OPEN_WORK_ORDERS_FOUND" and planned["retryAt"]
    (warning,) = [e for e in events.named("CertificateNearExpiry") if e["certificateName"] == name]
    assert warning["owner"] == "appviewx" and warning["reason"] == "OPEN_WORK_ORDERS_FOUND"

    sweep(functions)  # within the backoff: AVX is not asked again
    assert len(standins.avx.renew_calls()) == 1
    inventory = get_json(functions, "certificate_inventory", "certificates")
    (entry,) = [c for c in inventory["certificates"] if c["name"] == name]
    assert entry["renewalBackoff"]["failures"] == 1

    # The operator's `renew NAME` refuses while in backoff; --force renews now, and a success resets the backoff.
    assert main(["renew", name]) == 2
    assert "add --force" in capsys.readouterr().err
    assert main(["renew", name, "--force"]) == 0
    assert f"{name}: renewed" in capsys.readouterr().out
    assert len(standins.avx.renew_calls()) == 2
    assert plan_of(functions)[name]["failures"] == 0
    assert main(["plan"]) == 0
    out = capsys.readouterr().out
    assert name in out and "ok      key-vault:" in out


def test_a_webhook_renewal_after_a_failed_sweep_ends_the_backoff(
    functions: dict[str, Any], standins: StandIns, call_webhook: Any
) -> None:
    # The backoff rows are written by the sweep and the event path; a renewal that lands through the webhook (or a
    # completed pending record) ends them too: the inventory no longer shows a backoff, the plan no failures.
    name, _ = avx_certificate(standins, days=90, days_left=5)
    body = {"response": None, "message": "work order in progress", "appStatusCode": "OPEN_WORK_ORDERS_FOUND"}
    standins.avx.script(Response(417, json.dumps(body).encode(), {"Content-Type": "application/json"}))
    sweep(functions)
    assert plan_of(functions)[name]["failures"] == 1

    resource_id = standins.key_vault.latest(name).tags["avxResourceId"]  # type: ignore[union-attr]
    status, answer = call_webhook({"resourceId": resource_id, "keyVaultCertificateName": name})
    assert status == 200, answer
    inventory = get_json(functions, "certificate_inventory", "certificates")
    (entry,) = [c for c in inventory["certificates"] if c["name"] == name]
    assert entry["lastOutcome"] == "renewed" and entry["renewalBackoff"] is None
    assert plan_of(functions)[name]["failures"] == 0


def test_the_limit_defers_the_rest_with_an_event(
    functions: dict[str, Any], standins: StandIns, events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import context as app_context

    monkeypatch.setenv("RENEWAL_SWEEP_MAX_RENEWALS", "1")
    app_context.reset()
    urgent, _ = avx_certificate(standins, days=90, days_left=3)
    later, _ = avx_certificate(standins, days=90, days_left=15)
    sweep(functions)
    assert len(standins.avx.renew_calls()) == 1
    assert len(standins.key_vault.certificates[urgent]) == 2  # the most urgent first
    (deferred,) = events.named("RenewalSweepDeferred")
    assert deferred["deferred"] == 1 and deferred["maxRenewals"] == 1
    sweep(functions)  # the next run takes the rest
    assert len(standins.key_vault.certificates[later]) == 2


def test_the_plan_names_each_case_and_its_checks(functions: dict[str, Any], standins: StandIns) -> None:
    avx_due, _ = avx_certificate(standins, days=90, days_left=20)
    unmanaged, _ = unmanaged_certificate(standins, days=90, days_left=60)
    body = get_json(functions, "renewal_plan", "certificates/plan")
    by_name = {c["name"]: c for c in body["certificates"]}
    assert by_name[avx_due]["action"] == "renew" and "AppViewX" in by_name[avx_due]["reason"]
    assert by_name[unmanaged]["action"] == "report" and "nobody renews it" in by_name[unmanaged]["reason"]
    assert {c["name"]: c["ok"] for c in body["checks"]} == {
        "appviewx-settings": True,
        "tables": True,
        "key-vault": True,
    }
    assert body["ready"] is True
    assert Event.RENEWAL_SWEEP_COMPLETED == "RenewalSweepCompleted"


def test_a_key_vault_event_and_the_sweep_share_one_warning_per_step(
    functions: dict[str, Any], standins: StandIns, events: Events
) -> None:
    name, version = unmanaged_certificate(standins, days=90, days_left=25)
    deliver(functions, key_vault_event(standins, name, version, expires=datetime.now(UTC) + timedelta(days=25)))
    sweep(functions)
    warnings = [e for e in events.named("CertificateNearExpiry") if e["certificateName"] == name]
    assert len(warnings) == 1 and warnings[0]["ladderStep"] == 30 and warnings[0]["owner"] == "unmanaged"


# -- review (issue 31): a failing world and concurrent paths ---------------------------------------------------------


def wait_for(condition: Any, seconds: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_certificate_renewed_by_an_event_while_the_sweep_runs_is_not_renewed_again(
    functions: dict[str, Any], standins: StandIns
) -> None:
    """The sweep lists the vault once, then renews one certificate after another (each may wait on AVX for
    minutes). A Key Vault event (or the webhook, or a second sweep) that renews a listed certificate meanwhile
    leaves a new, not-due version current: the sweep must not renew that one again."""
    import threading

    avx_certificate(standins, days=90, days_left=3)  # the most urgent: the sweep starts with it
    later, later_version = avx_certificate(standins, days=90, days_left=20)
    refused = {"response": None, "message": "busy", "appStatusCode": "OPEN_WORK_ORDERS_FOUND"}
    # The sweep's first renewal (the urgent one) takes 3 s at AVX, then is refused.
    standins.avx.script(Response(417, json.dumps(refused).encode(), {"Content-Type": "application/json"}, delay=3.0))
    runner = threading.Thread(target=sweep, args=(functions,))
    runner.start()
    wait_for(lambda: len(standins.avx.renew_calls()) == 1)  # the sweep listed the vault and works on `urgent`
    deliver(functions, key_vault_event(standins, later, later_version))  # Event Grid renews `later` meanwhile
    assert len(standins.key_vault.certificates[later]) == 2
    runner.join(30)
    assert not runner.is_alive()
    assert len(standins.key_vault.certificates[later]) == 2, "renewed twice: the event's new version again"
    assert len(standins.avx.renew_calls()) == 2


@pytest.fixture
def table_proxy(app_env: dict[str, str], azurite: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The app's tables behind a fault-injecting proxy (tests/standins/tableproxy.py)."""
    from shared import context as app_context
    from tests.standins.tableproxy import CountingProxy

    proxy = CountingProxy(azurite.port).start()
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string.replace(f":{azurite.port}/", f":{proxy.port}/"))
    app_context.reset()
    yield proxy
    proxy.stop()
    app_context.reset()


def table_error(status: int, code: str) -> Response:
    body = {"odata.error": {"code": code, "message": {"lang": "en-US", "value": f"{code} (injected)"}}}
    return Response.json(body, status=status)


def test_a_table_failure_on_one_certificate_does_not_stop_the_sweep(
    functions: dict[str, Any], standins: StandIns, events: Events, table_proxy: Any
) -> None:
    first, first_version = avx_certificate(standins, days=90, days_left=3)
    second, _ = avx_certificate(standins, days=90, days_left=15)
    # The first certificate's version claim cannot be written (the write and its 3 retries fail); then the table
    # answers again.
    table_proxy.fail_next(4, table_error(500, "InternalError"), kind="write")
    sweep(functions)
    assert standins.key_vault.latest(first).version == first_version  # type: ignore[union-attr]
    assert len(standins.key_vault.certificates[second]) == 2, "one certificate's table failure stopped the run"
    (completed,) = events.named("RenewalSweepCompleted")
    assert completed["renewed"] == 1 and completed["failed"] == 1


def test_a_renewal_left_pending_is_still_warned_on_the_ladder_while_its_version_stays_current(
    functions: dict[str, Any], standins: StandIns, events: Events
) -> None:
    """AppViewX accepts the renewal but sends no certificate (an approver must act): the version's claim is taken,
    so later sweeps do not renew it again. If the approval never comes (complete_pending gives up), that version
    still expires: it must earn its ladder warning, not be skipped as 'already claimed' in silence."""
    name, version = avx_certificate(standins, days=90, days_left=5)
    answer = {"response": {"certificateContent": None, "resourceId": "r", "requestId": "REQ1"}, "message": "ok"}
    standins.avx.script(Response(200, json.dumps(answer).encode(), {"Content-Type": "application/json"}))
    sweep(functions)
    assert events.named("CertificateRenewalPending")
    for _ in range(2):
        sweep(functions)  # the next days: still the same version, still pending
    assert len(standins.avx.renew_calls()) == 1  # never renewed twice
    warnings = [e for e in events.named("CertificateNearExpiry") if e["certificateName"] == name]
    assert len(warnings) == 1, "a version whose renewal never completed expires unheard"
    (warning,) = warnings
    assert warning["ladderStep"] == 7 and warning["owner"] == "appviewx" and warning["keyVaultVersion"] == version
    assert warning["reason"] == "RENEWAL_UNFINISHED"


def test_a_list_link_that_never_moves_on_ends_the_listing(
    functions: dict[str, Any], standins: StandIns, events: Events
) -> None:
    """Key Vault may answer a page with no certificates and a nextLink; a nextLink that comes back again (a broken
    page chain) would keep the sweep listing until the function's timeout."""
    avx_certificate(standins, days=90, days_left=20)
    stuck = Response.json(
        {"value": [], "nextLink": f"{standins.key_vault.url}/certificates?$skiptoken=0&maxresults=25"}
    )
    standins.key_vault.fail_next(300, stuck, operation="list")
    sweep(functions)
    assert len(standins.key_vault.received("GET", "/certificates")) <= 3, "listed the same page again and again"
    (completed,) = events.named("RenewalSweepCompleted")
    assert completed["truncated"] is True


def test_the_plan_names_consumers_pinned_to_an_old_version(
    functions: dict[str, Any], standins: StandIns, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 31: the plan says why, including "pinned consumers once discovery exists" (issue 26): a renewal does
    not reach a consumer pinned to a version."""
    from shared import context as app_context
    from shared.consumers.store import KnownConsumers

    monkeypatch.setenv("CONSUMER_SUBSCRIPTIONS", "0f0e0d0c-0000-4000-8000-0000000000a1")
    monkeypatch.setenv("CONSUMER_TABLE", f"consumers{uuid.uuid4().hex[:8]}")
    app_context.reset()
    name, version = avx_certificate(standins, days=90, days_left=20)
    other, _ = avx_certificate(standins, days=90, days_left=20)
    agw = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/applicationGateways/agw/sslCertificates/www"
    consumers = [
        {"id": agw, "type": "Microsoft.Network/applicationGateways", "follows": "pinned", "version": version},
        {"id": "/subscriptions/s/x/fd", "type": "Microsoft.Cdn/profiles/secrets", "follows": "latest"},
    ]
    known = {name.lower(): KnownConsumers(name, consumers, [])}
    app_context.consumer_store().save(known, datetime.now(UTC), complete=True)

    plan = plan_of(functions)
    assert plan[name]["pinnedConsumers"] == [
        {"id": agw, "type": "Microsoft.Network/applicationGateways", "version": version}
    ]
    assert "1 consumer(s) pinned to a version" in plan[name]["reason"]
    assert plan[other]["pinnedConsumers"] == [] and "pinned" not in plan[other]["reason"]


def test_a_list_link_to_another_host_is_a_failed_key_vault_check_not_a_crash(
    functions: dict[str, Any], standins: StandIns
) -> None:
    """Review: a nextLink that leaves the vault is refused (the app's token never goes there); the plan reports it
    as its key-vault check, like any other listing failure, instead of answering 500."""
    avx_certificate(standins, days=90, days_left=20)
    foreign = Response.json({"value": [], "nextLink": "https://attacker.example/certificates?$skiptoken=1"})
    standins.key_vault.fail_next(1, foreign, operation="list")
    body = get_json(functions, "renewal_plan", "certificates/plan")
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["key-vault"]["ok"] is False and body["ready"] is False
    assert "attacker.example" not in json.dumps(body)


def test_a_ladder_step_claimed_by_a_run_that_died_before_its_event_is_warned_by_the_next_sweep(
    functions: dict[str, Any], standins: StandIns, events: Events
) -> None:
    """Review: the step is claimed before the event is emitted; a run that dies in between leaves a `running` claim.
    The next sweep (a day later) takes it over and warns; a claim that young belongs to a run still going."""
    from urllib.parse import urlsplit

    from shared import context as app_context
    from shared.vault.event_claims import version_key
    from shared.vault.ladder import LADDER_PARTITION

    name, version = unmanaged_certificate(standins, days=90, days_left=6)
    claims = app_context.sweep_dependencies().events.claims
    key = version_key(urlsplit(standins.key_vault.url).netloc, name, f"{version}|step7")
    claims.claim(LADDER_PARTITION, key, {"certificate": name}, datetime.now(UTC) - timedelta(minutes=5))
    sweep(functions)  # the claim's run may still be going: not warned twice
    assert [e for e in events.named("CertificateNearExpiry") if e["certificateName"] == name] == []

    claims.release(LADDER_PARTITION, key)
    claims.claim(LADDER_PARTITION, key, {"certificate": name}, datetime.now(UTC) - timedelta(hours=24))
    sweep(functions)  # yesterday's run died between the claim and the event
    (warning,) = [e for e in events.named("CertificateNearExpiry") if e["certificateName"] == name]
    assert warning["ladderStep"] == 7 and warning["keyVaultVersion"] == version
    sweep(functions)
    assert len([e for e in events.named("CertificateNearExpiry") if e["certificateName"] == name]) == 1
