"""Issue 14: Key Vault's near-expiry and expired events close the loop. `keyvault_events` is driven through
`function_app.app` with real `azure.functions.EventGridEvent` objects whose data follows Key Vault's schema (`Id`,
`VaultName`, `ObjectType`, `ObjectName`, `Version`, `NBF`, `EXP`), against the AVX and Key Vault stand-ins (the real
CertificateClient over HTTPS) and Azurite."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared import context as app_context
from shared.notify.install import install_notifications, uninstall_notifications
from shared.rcl.scheduled import ScheduledRenewal
from shared.vault.event_decisions import Malformed, parse_event
from shared.vault.events import RetryLater
from tests.conftest import WebhookCaller
from tests.eventlog import Events, recording
from tests.standins.base import Response
from tests.standins.certs import issue_certificate
from tests.standins.receiver import ReceiverStandIn
from tests.standins.stack import FakeContext, StandIns

NEAR = "Microsoft.KeyVault.CertificateNearExpiry"
EXPIRED = "Microsoft.KeyVault.CertificateExpired"


@pytest.fixture
def events() -> Iterator[Events]:
    with recording() as recorder:
        yield recorder


def key_vault_event(
    standins: StandIns,
    name: str,
    version: str,
    event_type: str = NEAR,
    *,
    event_id: str | None = None,
    vault_url: str | None = None,
    expires: datetime | None = None,
) -> func.EventGridEvent:
    """An event as Key Vault's system topic delivers it (data schema of Microsoft.KeyVault.Certificate* events)."""
    url = vault_url or standins.key_vault.url
    expires = expires or datetime.now(UTC) + timedelta(days=30)
    data = {
        "Id": f"{url}/certificates/{name}/{version}",
        "VaultName": "kv-cr-local",
        "ObjectType": "Certificate",
        "ObjectName": name,
        "Version": version,
        "NBF": int((expires - timedelta(days=90)).timestamp()),
        "EXP": int(expires.timestamp()),
    }
    return func.EventGridEvent(
        id=event_id or str(uuid.uuid4()),
        data=data,
        topic="/subscriptions/0000/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-cr-local",
        subject=name,
        event_type=event_type,
        event_time=datetime.now(UTC),
        data_version="1",
    )


def deliver(functions: dict[str, Any], event: func.EventGridEvent) -> None:
    functions["keyvault_events"].get_user_function()(event, FakeContext("keyvault_events"))


def renew_through_webhook(call_webhook: WebhookCaller, standins: StandIns) -> tuple[str, str]:
    """A certificate the app stored from AppViewX (tags source=appviewx, avxResourceId): its name and version."""
    resource_id = f"portal{uuid.uuid4().hex[:6]}"
    standins.avx.add_certificate("portal.contoso.com", resource_id=resource_id)
    name = f"portal-contoso-com-{uuid.uuid4().hex[:6]}"
    status, body = call_webhook({"resourceId": resource_id, "keyVaultCertificateName": name})
    assert status == 200, body
    stored = standins.key_vault.latest(name)
    assert stored is not None and stored.tags and stored.tags["source"] == "appviewx"
    # Time passes: its current version is 20 days from expiry when Key Vault's event arrives (the app reads the
    # version's own expiry and renews nothing further from it).
    now = datetime.now(UTC)
    near = issue_certificate("portal.contoso.com", days=90, not_before=now - timedelta(days=70))
    aged = standins.key_vault.seed(name, near.certificate, near.private_key, tags=dict(stored.tags))
    return name, aged.version


def test_avx_certificate_is_renewed_once_when_the_event_is_delivered_twice(
    functions: dict[str, Any], call_webhook: WebhookCaller, standins: StandIns, events: Events
) -> None:
    name, version = renew_through_webhook(call_webhook, standins)
    renewals_before = len(standins.avx.renew_calls())
    event = key_vault_event(standins, name, version)

    deliver(functions, event)
    deliver(functions, event)  # Event Grid delivers at least once

    assert len(standins.avx.renew_calls()) == renewals_before + 1
    renewed = standins.key_vault.latest(name)
    assert renewed is not None and renewed.version != version  # a new version of the same certificate
    assert renewed.tags and renewed.tags["source"] == "appviewx" and renewed.tags["avxResourceId"]
    (stored,) = events.named("CertificateRenewed")[-1:]
    assert stored["certificateName"] == name and stored["source"] == "appviewx"
    assert stored["caller"].startswith("keyvault-events ")
    # The renewal has its record, like a webhook renewal.
    records = [r for r in app_context.pending_store().all_records() if r.key_vault_name == name]
    assert [r.state for r in records] == ["renewed", "renewed"]

    # Key Vault's later expired event for the replaced version: nothing more.
    deliver(functions, key_vault_event(standins, name, version, EXPIRED))
    assert len(standins.avx.renew_calls()) == renewals_before + 1


def test_two_events_for_the_same_version_at_once_renew_once(
    functions: dict[str, Any], call_webhook: WebhookCaller, standins: StandIns
) -> None:
    name, version = renew_through_webhook(call_webhook, standins)
    renewals_before = len(standins.avx.renew_calls())
    standins.avx.renew_delay = 0.5  # the first renewal is still running when the second event arrives
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    retried: list[Any] = []

    def run(event_type: str) -> None:
        start.wait()
        event = key_vault_event(standins, name, version, event_type)
        try:
            deliver(functions, event)
        except RetryLater:  # the other one holds the version before AVX: Event Grid redelivers this one
            retried.append(event)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in (NEAR, EXPIRED)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures
    for event in retried:  # Event Grid's redelivery, once the first is done
        deliver(functions, event)
    assert len(standins.avx.renew_calls()) == renewals_before + 1


def test_an_event_for_a_replaced_version_renews_nothing(
    functions: dict[str, Any], call_webhook: WebhookCaller, standins: StandIns, events: Events, caplog: Any
) -> None:
    name, old_version = renew_through_webhook(call_webhook, standins)
    resource_id = standins.key_vault.latest(name).tags["avxResourceId"]  # type: ignore[union-attr, index]
    status, _ = call_webhook({"resourceId": resource_id, "keyVaultCertificateName": name})
    assert status == 200
    renewals_before = len(standins.avx.renew_calls())
    events.items.clear()

    deliver(functions, key_vault_event(standins, name, old_version))

    assert len(standins.avx.renew_calls()) == renewals_before
    assert events.items == []
    assert any("was replaced by version" in r.getMessage() for r in caplog.records)


def test_an_rcl_certificate_is_reported_not_renewed(
    functions: dict[str, Any], app_env: dict[str, str], standins: StandIns, events: Events
) -> None:
    domain = f"shop{uuid.uuid4().hex[:6]}.contoso.com"
    now = datetime.now(UTC)
    app_context.renewal_state().record_scheduled(
        [
            ScheduledRenewal(
                record_key=f"{now:%Y%m%d}-id-7",
                certificate_id=7,
                certificate_name=domain,
                target="Azure Key Vault",
                expiry_date=now + timedelta(days=20),
                scheduled_at=now - timedelta(days=40),
                run_id="night",
            )
        ]
    )
    name = domain.replace(".", "-")  # how RCL names it in Key Vault
    issued = issue_certificate(domain, days=90, not_before=now - timedelta(days=70))
    version = standins.key_vault.seed(name, issued.certificate, issued.private_key, chain=issued.chain).version

    deliver(functions, key_vault_event(standins, name, version))

    (reported,) = events.named("CertificateNearExpiry")
    assert reported["owner"] == "rcl" and reported["certificateName"] == name
    assert reported["daysLeft"] in (19, 20)
    assert standins.rcl.requests == [] and standins.avx.renew_calls() == []


def test_an_unmanaged_certificate_is_reported_and_notified(
    functions: dict[str, Any], app_env: dict[str, str], standins: StandIns, events: Events, monkeypatch: Any
) -> None:
    now = datetime.now(UTC)
    name = f"legacy-{uuid.uuid4().hex[:6]}"
    issued = issue_certificate("legacy.contoso.com", days=90, not_before=now - timedelta(days=91))
    version = standins.key_vault.seed(name, issued.certificate, issued.private_key, tags={"team": "web"}).version
    receiver = ReceiverStandIn().start()
    try:
        monkeypatch.setenv("NOTIFY_WEBHOOK_URL", receiver.webhook_url())
        monkeypatch.setenv("NOTIFY_FORMAT", "json")
        app_context.reset()
        assert install_notifications(app_context.settings()) is not None
        deliver(functions, key_vault_event(standins, name, version, EXPIRED, expires=now - timedelta(days=1)))
        messages = [json.loads(body) for body in receiver.bodies()]
    finally:
        uninstall_notifications()
        receiver.stop()
    (reported,) = events.named("CertificateExpired")
    assert reported["owner"] == "unmanaged" and reported["source"] == "keyvault" and reported["daysLeft"] < 0
    (message,) = messages
    assert message["event"] == "CertificateExpired" and message["certificateName"] == name
    assert standins.avx.renew_calls() == []


@pytest.mark.parametrize(
    "event_type",
    ["Microsoft.KeyVault.CertificateNewVersionCreated", "Microsoft.KeyVault.SecretNearExpiry", "Other.Event"],
)
def test_other_event_types_are_ignored(
    functions: dict[str, Any], app_env: dict[str, str], standins: StandIns, events: Events, event_type: str
) -> None:
    deliver(functions, key_vault_event(standins, "anything", "0" * 32, event_type))
    assert events.items == [] and standins.key_vault.requests == []


def test_other_vaults_and_malformed_data_are_ignored_never_retried(
    functions: dict[str, Any], app_env: dict[str, str], standins: StandIns, events: Events
) -> None:
    deliver(functions, key_vault_event(standins, "www", "a" * 32, vault_url="https://other-vault.vault.azure.net"))
    malformed = key_vault_event(standins, "www", "a" * 32)
    for data in ("not an object", {"ObjectName": "www"}, {**malformed.get_json(), "EXP": "soon"}):
        event = func.EventGridEvent(
            id=str(uuid.uuid4()),
            data=data,  # type: ignore[arg-type]
            topic="t",
            subject="s",
            event_type=NEAR,
            event_time=None,
            data_version="1",
        )
        deliver(functions, event)  # no exception: Event Grid would retry it forever
    assert events.items == [] and standins.key_vault.requests == []


def test_a_key_vault_failure_is_retried_by_event_grid_and_then_renews(
    functions: dict[str, Any], call_webhook: WebhookCaller, standins: StandIns
) -> None:
    name, version = renew_through_webhook(call_webhook, standins)
    renewals_before = len(standins.avx.renew_calls())
    event = key_vault_event(standins, name, version)
    forbidden = Response.json({"error": {"code": "Forbidden", "message": "denied"}}, status=403)
    standins.key_vault.fail_next(1, forbidden, operation="get")
    with pytest.raises(Exception, match="Key Vault could not be read"):
        deliver(functions, event)
    assert len(standins.avx.renew_calls()) == renewals_before
    deliver(functions, event)  # the redelivery: the claim was released
    assert len(standins.avx.renew_calls()) == renewals_before + 1


def test_event_data_is_validated() -> None:
    good = {
        "VaultName": "kv",
        "ObjectType": "Certificate",
        "ObjectName": "www",
        "Version": "ab12",
        "EXP": 1_900_000_000,
    }
    assert parse_event("1", NEAR, good).expires_on == datetime.fromtimestamp(1_900_000_000, UTC)
    for bad in (
        {**good, "ObjectType": "Secret"},
        {**good, "ObjectName": "www/../x"},
        {**good, "Version": ""},
        {**good, "EXP": True},
        {**good, "Id": "https://kv.vault.azure.net/certificates/other/ab12"},
    ):
        with pytest.raises(Malformed):
            parse_event("1", NEAR, bad)


def test_a_claim_is_taken_over_only_when_its_run_died_before_avx() -> None:
    from shared.vault.event_claims import ABANDONED_AFTER, ClaimOutcome
    from shared.vault.event_claims import decide as claim_decision

    now = datetime.now(UTC)
    stale = now - ABANDONED_AFTER - timedelta(seconds=1)
    assert claim_decision({"state": "done", "createdAt": stale}, now) is ClaimOutcome.DONE
    assert claim_decision({"state": "running", "createdAt": now}, now) is ClaimOutcome.HELD
    assert claim_decision({"state": "running", "createdAt": stale, "pendingId": "ab"}, now) is ClaimOutcome.HELD
    assert claim_decision({"state": "running", "createdAt": stale}, now) is ClaimOutcome.NEW


def test_an_event_for_a_certificate_far_from_expiry_renews_nothing(
    functions: dict[str, Any], call_webhook: WebhookCaller, standins: StandIns, events: Events
) -> None:
    """Issue 29: the current version's own expiry (from Key Vault, not the event's data) decides."""
    resource_id = f"far{uuid.uuid4().hex[:6]}"
    standins.avx.add_certificate("far.contoso.com", resource_id=resource_id)
    name = f"far-contoso-com-{uuid.uuid4().hex[:6]}"
    status, body = call_webhook({"resourceId": resource_id, "keyVaultCertificateName": name})
    assert status == 200, body
    stored = standins.key_vault.latest(name)
    assert stored is not None and stored.certificate.not_valid_after_utc - datetime.now(UTC) > timedelta(days=88)
    renewals_before = len(standins.avx.renew_calls())

    deliver(functions, key_vault_event(standins, name, stored.version, expires=datetime.now(UTC) + timedelta(days=2)))

    assert len(standins.avx.renew_calls()) == renewals_before
    latest = standins.key_vault.latest(name)
    assert latest is not None and latest.version == stored.version
