"""Issue 25: one deployment, several vaults. Everything through `function_app.app` with two Key Vault stand-ins (two
HTTPS hosts: the stack's own at 127.0.0.1 and a second one answering as `localhost`, so its name is `localhost`), the
real CertificateClient, the AVX and identity stand-ins and Azurite."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import context as app_context
from tests.appviewx.test_pending_and_idempotency import run_complete_pending, status_of
from tests.appviewx.test_renew_queue import deliver as deliver_queued
from tests.appviewx.test_renew_queue import post_async
from tests.conftest import WebhookCaller
from tests.eventlog import Events, recording
from tests.rcl.test_rcl_timer import run as run_timer
from tests.standins.base import Response
from tests.standins.certs import issue_certificate
from tests.standins.keyvault import KeyVaultStandIn
from tests.standins.stack import KEY_VAULT_RESOURCE, StandIns
from tests.vault.test_inventory import inventory
from tests.vault.test_keyvault_events import deliver as deliver_event
from tests.vault.test_keyvault_events import key_vault_event
from tests.vault.test_renewal_sweep import sweep as run_sweep

SECOND = "localhost"  # the second vault's name: the first label of its host


@pytest.fixture(scope="module")
def second_vault(standins: StandIns) -> Iterator[KeyVaultStandIn]:
    vault = KeyVaultStandIn(
        standins.ca.server_context(), expected_token=standins.identity.token_for(KEY_VAULT_RESOURCE)
    )
    vault.public_host = SECOND
    vault.start()
    yield vault
    vault.stop()


@pytest.fixture
def two_vaults(
    app_env: dict[str, str], standins: StandIns, second_vault: KeyVaultStandIn, monkeypatch: pytest.MonkeyPatch
) -> KeyVaultStandIn:
    second_vault.reset()
    standins.key_vault.reset()
    monkeypatch.setenv("KEY_VAULT_URLS", f"{standins.key_vault.url},{second_vault.url}")
    app_context.reset()
    return second_vault


@pytest.fixture
def events() -> Iterator[Events]:
    with recording() as recorder:
        yield recorder


def test_a_webhook_renewal_lands_in_each_vault(
    standins: StandIns, two_vaults: KeyVaultStandIn, call_webhook: WebhookCaller, events: Events
) -> None:
    first = standins.avx.add_certificate("one.contoso.com")
    second = standins.avx.add_certificate("two.contoso.com")

    status, answer = call_webhook({"resourceId": first.resource_id})
    assert status == 200, answer
    assert answer["keyVault"]["vaultUrl"] == standins.key_vault.url
    status, answer = call_webhook({"resourceId": second.resource_id, "keyVault": SECOND})
    assert status == 200, answer
    assert answer["keyVault"]["vaultUrl"] == two_vaults.url
    assert answer["keyVault"]["id"].startswith(two_vaults.url + "/certificates/two-contoso-com/")
    # by URL as listed, too
    third = standins.avx.add_certificate("three.contoso.com")
    status, answer = call_webhook({"resourceId": third.resource_id, "keyVault": two_vaults.url})
    assert status == 200, answer

    assert standins.key_vault.latest("one-contoso-com") is not None
    assert standins.key_vault.latest("two-contoso-com") is None
    assert two_vaults.latest("two-contoso-com") is not None and two_vaults.latest("three-contoso-com") is not None
    assert two_vaults.latest("one-contoso-com") is None
    renewed = {e["certificateName"]: e for e in events.named("CertificateRenewed")}
    assert renewed["two-contoso-com"]["vault"] == SECOND
    assert renewed["one-contoso-com"]["vault"] == "127"  # the first label of the first stand-in's host
    # One identity token serves both vaults.
    assert len(standins.identity.token_requests(KEY_VAULT_RESOURCE)) == 1


def test_a_vault_not_listed_is_refused_before_avx(
    standins: StandIns, two_vaults: KeyVaultStandIn, call_webhook: WebhookCaller
) -> None:
    item = standins.avx.add_certificate("nowhere.contoso.com")
    for target in ("kv-elsewhere", "https://kv-elsewhere.vault.azure.net", f"https://localhost:{two_vaults.port + 1}"):
        status, answer = call_webhook({"resourceId": item.resource_id, "keyVault": target})
        assert status == 400, answer
        assert answer["error"]["code"] == "KEY_VAULT_NOT_ALLOWED"
        assert SECOND in answer["error"]["message"] and "127" in answer["error"]["message"]
    assert standins.avx.requests == []


def test_a_caller_limited_to_one_vault_is_refused_the_other(
    standins: StandIns,
    two_vaults: KeyVaultStandIn,
    call_webhook: WebhookCaller,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    monkeypatch.setenv("KEY_VAULT_CALLERS", json.dumps({"team-two": [SECOND]}))
    app_context.reset()
    item = standins.avx.add_certificate("team.contoso.com")
    team_two = {"X-MS-CLIENT-PRINCIPAL-ID": "team-two", "X-MS-CLIENT-PRINCIPAL-NAME": "team-two@contoso.com"}

    status, answer = call_webhook({"resourceId": item.resource_id}, headers=team_two)  # the default vault
    assert status == 403, answer
    assert answer["error"]["code"] == "KEY_VAULT_FORBIDDEN"
    assert standins.avx.requests == []

    status, answer = call_webhook({"resourceId": item.resource_id, "keyVault": SECOND}, headers=team_two)
    assert status == 200, answer
    # A caller nobody limited may write to either.
    other = standins.avx.add_certificate("other.contoso.com")
    status, answer = call_webhook({"resourceId": other.resource_id}, headers={"X-MS-CLIENT-PRINCIPAL-ID": "ops"})
    assert status == 200, answer


def test_a_pending_renewal_for_the_second_vault_completes_there(
    standins: StandIns, two_vaults: KeyVaultStandIn, call_webhook: WebhookCaller, functions: dict[str, Any]
) -> None:
    item = standins.avx.add_certificate("later.contoso.com")
    two_vaults.fail_next(1, Response(503, {"error": {"code": "ServiceUnavailable", "message": "down"}}), "import")
    status, answer = call_webhook({"resourceId": item.resource_id, "keyVault": SECOND})
    assert status == 202, answer
    pending_id = answer["pendingId"]
    code, record = status_of(functions, pending_id)
    assert code == 200 and record["keyVaultUrl"] == two_vaults.url

    run_complete_pending(functions)

    code, record = status_of(functions, pending_id)
    assert record["state"] == "renewed", record
    assert record["keyVaultCertificateId"].startswith(two_vaults.url + "/")
    assert two_vaults.latest("later-contoso-com") is not None
    assert standins.key_vault.latest("later-contoso-com") is None


def test_an_async_renewal_for_the_second_vault_is_queued_with_it(
    standins: StandIns, two_vaults: KeyVaultStandIn, functions: dict[str, Any]
) -> None:
    item = standins.avx.add_certificate("queued.contoso.com")
    response, answer, queue = post_async(functions, {"resourceId": item.resource_id, "keyVault": SECOND})
    assert response.status_code == 202, answer
    assert queue.value is not None and json.loads(queue.value)["request"]["keyVault"] == two_vaults.url
    deliver_queued(functions, queue.value)
    _, record = status_of(functions, answer["pendingId"])
    assert record["state"] == "renewed" and record["keyVaultUrl"] == two_vaults.url
    assert two_vaults.latest("queued-contoso-com") is not None
    assert standins.key_vault.latest("queued-contoso-com") is None


def test_an_event_from_the_second_vault_renews_into_it(
    standins: StandIns,
    two_vaults: KeyVaultStandIn,
    call_webhook: WebhookCaller,
    functions: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    standins.avx.add_certificate("evented.contoso.com", resource_id="evented")
    status, answer = call_webhook({"resourceId": "evented", "keyVault": SECOND})
    assert status == 200, answer
    stored = two_vaults.latest("evented-contoso-com")
    assert stored is not None
    # Time passes: the version is 20 days from expiry (issue 29: its own expiry decides whether an event renews).
    near = issue_certificate("evented.contoso.com", not_before=datetime.now(UTC) - timedelta(days=70))
    stored = two_vaults.seed("evented-contoso-com", near.certificate, near.private_key, tags=dict(stored.tags or {}))
    renewals = len(standins.avx.renew_calls())

    # The VaultName does not match the Id's vault: dropped with a warning.
    forged = key_vault_event(standins, "evented-contoso-com", stored.version, vault_url=two_vaults.url)
    forged.get_json()["VaultName"] = "kv-someone-else"
    deliver_event(functions, forged)
    assert len(standins.avx.renew_calls()) == renewals
    assert any("VaultName" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")

    # An event from a vault that is not listed: dropped with a warning.
    unlisted = key_vault_event(
        standins, "evented-contoso-com", stored.version, vault_url="https://kv-x.vault.azure.net"
    )
    deliver_event(functions, unlisted)
    assert len(standins.avx.renew_calls()) == renewals

    event = key_vault_event(standins, "evented-contoso-com", stored.version, vault_url=two_vaults.url)
    event.get_json()["VaultName"] = SECOND
    deliver_event(functions, event)

    assert len(standins.avx.renew_calls()) == renewals + 1
    renewed = two_vaults.latest("evented-contoso-com")
    assert renewed is not None and renewed.version != stored.version
    assert standins.key_vault.latest("evented-contoso-com") is None


def test_the_inventory_lists_both_vaults_filters_and_pages(
    standins: StandIns, two_vaults: KeyVaultStandIn, functions: dict[str, Any]
) -> None:
    for vault, names in ((standins.key_vault, ("a-one", "a-two", "a-three")), (two_vaults, ("b-one", "b-two"))):
        for name in names:
            issued = issue_certificate(f"{name}.example", days=90)
            vault.seed(name, issued.certificate, issued.private_key)

    seen: list[dict[str, Any]] = []
    params = {"maxResults": "2"}
    for _ in range(10):
        status, body = inventory(functions, params)
        assert status == 200, body
        assert len(body["certificates"]) <= 2
        seen += body["certificates"]
        if not body["continuation"]:
            break
        params = {"maxResults": "2", "continuation": body["continuation"]}
    assert sorted((c["vault"], c["name"]) for c in seen) == [
        ("127", "a-one"),
        ("127", "a-three"),
        ("127", "a-two"),
        (SECOND, "b-one"),
        (SECOND, "b-two"),
    ]

    status, body = inventory(functions, {"vault": SECOND})
    assert status == 200, body
    assert sorted(c["name"] for c in body["certificates"]) == ["b-one", "b-two"]
    assert {c["vault"] for c in body["certificates"]} == {SECOND}
    assert body["continuation"] is None

    status, body = inventory(functions, {"vault": "kv-elsewhere"})
    assert status == 400 and body["error"]["code"] == "KEY_VAULT_NOT_ALLOWED"


def test_the_morning_check_says_which_vault_an_rcl_certificate_was_found_in(
    standins: StandIns,
    two_vaults: KeyVaultStandIn,
    functions: dict[str, Any],
    events: Events,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RENEWAL_STATE_TABLE", f"rcl{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("RCL_RETRY_DELAY_SECONDS", "0.05")
    app_context.reset()
    standins.rcl.reset()
    standins.rcl.add_certificate("found.contoso.com", 5, target="Azure Key Vault")
    standins.rcl.add_certificate("unseen.contoso.com", 6, target="Azure Key Vault")
    run_timer(functions, "renew_timer")
    renewed = standins.rcl.complete_renewal("found.contoso.com", installed=True)
    standins.rcl.complete_renewal("unseen.contoso.com", installed=True)
    # RCL installed found.contoso.com in the second vault (as Key Vault names it: found-contoso-com).
    expiry = datetime.strptime(renewed["expiryDate"][:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    issued = issue_certificate("found.contoso.com", days=90, not_before=expiry - timedelta(days=90))
    two_vaults.seed("found-contoso-com", issued.certificate, issued.private_key)

    run_timer(functions, "verify_renewals")

    by_name = events.by_certificate("CertificateRenewed")
    assert by_name["found.contoso.com"]["vault"] == SECOND
    assert "vault" not in by_name["unseen.contoso.com"]  # found in no vault: not told
    rows = {r["certificateName"]: r for r in app_context.renewal_state().all_records()}
    assert rows["found.contoso.com"]["vault"] == SECOND


def test_endpoint_checks_may_name_the_vault(
    standins: StandIns, two_vaults: KeyVaultStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.core.errors import SettingsError

    checks = [
        {"certificate": "www-contoso-com", "host": "www.contoso.com"},
        {"certificate": "www-contoso-com", "host": "www.contoso.com", "vault": SECOND},
    ]
    monkeypatch.setenv("ENDPOINT_CHECKS", json.dumps(checks))
    app_context.reset()
    first, second = app_context.settings().endpoint_checks.endpoints
    assert first.vault is None and second.vault == two_vaults.url

    monkeypatch.setenv("ENDPOINT_CHECKS", json.dumps([{**checks[0], "vault": "kv-elsewhere"}]))
    app_context.reset()
    with pytest.raises(SettingsError, match=r"ENDPOINT_CHECKS\[0\].*kv-elsewhere.*not one of the app's vaults"):
        app_context.settings().endpoint_checks  # noqa: B018


def test_duplicate_vaults_are_refused_naming_the_entry(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.core.errors import SettingsError

    monkeypatch.setenv("KEY_VAULT_URLS", f"{app_env['KEY_VAULT_URL']}, {app_env['KEY_VAULT_URL'].upper()}/")
    app_context.reset()
    with pytest.raises(SettingsError, match=r"KEY_VAULT_URLS entry 2 .* is a duplicate"):
        app_context.settings().key_vault  # noqa: B018


def test_the_daily_sweep_renews_a_due_certificate_in_the_vault_it_is_in(
    standins: StandIns, two_vaults: KeyVaultStandIn, functions: dict[str, Any], events: Events
) -> None:
    standins.avx.add_certificate("swept.contoso.com", resource_id="swept")
    issued = issue_certificate("swept.contoso.com", days=90, not_before=datetime.now(UTC) - timedelta(days=70))
    old = two_vaults.seed(
        "swept-contoso-com",
        issued.certificate,
        issued.private_key,
        tags={"source": "appviewx", "avxResourceId": "swept"},
    )

    run_sweep(functions)

    assert len(standins.avx.renew_calls()) == 1
    renewed = two_vaults.latest("swept-contoso-com")
    assert renewed is not None and renewed.version != old.version
    assert standins.key_vault.latest("swept-contoso-com") is None
    completed = {e["vault"]: e for e in events.named("RenewalSweepCompleted")}
    assert set(completed) == {"127", SECOND} and completed[SECOND]["renewed"] == 1


def test_an_idempotency_key_is_scoped_to_its_vault(
    standins: StandIns, two_vaults: KeyVaultStandIn, call_webhook: WebhookCaller
) -> None:
    item = standins.avx.add_certificate("keyed.contoso.com")
    key = {"Idempotency-Key": "change-42"}
    status, first = call_webhook({"resourceId": item.resource_id, "keyVault": SECOND}, headers=key)
    assert status == 200, first
    status, again = call_webhook({"resourceId": item.resource_id, "keyVault": SECOND}, headers=key)
    assert (status, again) == (200, first)  # the first answer, replayed
    assert len(standins.avx.renew_calls()) == 1
    # The same key for the default vault is another request of another scope: not a 422, renewed there.
    status, other = call_webhook({"resourceId": item.resource_id}, headers=key)
    assert status == 200, other
    assert other["keyVault"]["vaultUrl"] == standins.key_vault.url


def test_last_outcomes_are_kept_per_vault_live_and_backfilled(
    standins: StandIns, two_vaults: KeyVaultStandIn, call_webhook: WebhookCaller, functions: dict[str, Any]
) -> None:
    # The same certificate name in both vaults: AppViewX renews it into the second one only, so only the second
    # vault's entry carries the outcome (the rows are a partition per vault: shared.azure.last_outcomes).
    item = standins.avx.add_certificate("twin.contoso.com")
    status, answer = call_webhook({"resourceId": item.resource_id, "keyVault": SECOND})
    assert status == 200, answer
    unmanaged = issue_certificate("twin.contoso.com", days=90)
    standins.key_vault.seed("twin-contoso-com", unmanaged.certificate, unmanaged.private_key, tags={"team": "x"})
    entries = {}
    for vault in ("127", SECOND):
        status, body = inventory(functions, {"vault": vault})
        assert status == 200, body
        entries[vault] = next(c for c in body["certificates"] if c["name"] == "twin-contoso-com")
    assert entries[SECOND]["lastOutcome"] == "renewed" and entries[SECOND]["source"] == "appviewx"
    assert entries["127"]["lastOutcome"] is None and entries["127"]["source"] == "unmanaged"

    # A record written before the rows existed (no outcomes kept) is folded into its own vault's rows by the backfill.
    from shared.appviewx.records import PendingRecord, PendingStore
    from shared.vault.housekeeping import HousekeepingStores, backfill_step

    now = datetime.now(UTC)
    legacy = PendingStore(app_context.pending_store().table)  # no last-outcome rows: as an older version wrote
    record = PendingRecord.new(now, reason="RENEWED", storage="import", key_vault_url=two_vaults.url)
    legacy.save(record.renewed(f"{two_vaults.url}/certificates/legacy-b/v1", "legacy-b", now))
    stores = HousekeepingStores(app_context.pending_store(), None, None, None, app_context.last_outcomes, None)  # type: ignore[arg-type]
    while not app_context.last_outcomes().backfill_state("avx")[0]:
        backfill_step(stores, app_context.last_outcomes)
    assert "legacy-b" in app_context.last_outcomes(two_vaults.url).read()
    assert "legacy-b" not in app_context.last_outcomes().read()


def test_an_rcl_certificate_found_in_the_second_vault_has_its_outcome_there(
    standins: StandIns,
    two_vaults: KeyVaultStandIn,
    functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The morning check finds RCL's renewed certificate in the second vault: its last outcome is that vault's row, so
    # the second vault's inventory shows it and a same-named certificate of the default vault is not credited with it.
    monkeypatch.setenv("RENEWAL_STATE_TABLE", f"rcl{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("RCL_RETRY_DELAY_SECONDS", "0.05")
    app_context.reset()
    standins.rcl.reset()
    standins.rcl.add_certificate("where.contoso.com", 5, target="Azure Key Vault")
    run_timer(functions, "renew_timer")
    renewed = standins.rcl.complete_renewal("where.contoso.com", installed=True)
    expiry = datetime.strptime(renewed["expiryDate"][:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    issued = issue_certificate("where.contoso.com", days=90, not_before=expiry - timedelta(days=90))
    two_vaults.seed("where-contoso-com", issued.certificate, issued.private_key)
    other = issue_certificate("where.contoso.com", days=200)  # another team's twin in the default vault
    standins.key_vault.seed("where-contoso-com", other.certificate, other.private_key, tags={"team": "x"})

    run_timer(functions, "verify_renewals")

    entries = {}
    for vault in ("127", SECOND):
        status, body = inventory(functions, {"vault": vault})
        assert status == 200, body
        entries[vault] = next(c for c in body["certificates"] if c["name"] == "where-contoso-com")
    assert entries[SECOND]["lastOutcome"] == "renewed", entries[SECOND]
    assert entries[SECOND]["source"] == "rcl"
    assert entries["127"]["lastOutcome"] != "renewed", entries["127"]


def test_a_queued_renewal_for_a_vault_no_longer_listed_ends_failed_without_avx(
    standins: StandIns,
    two_vaults: KeyVaultStandIn,
    functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The operator removes the second vault while a renewal for it waits on the queue: AVX was never called, so the
    # delivery ends the record failed with a reason (nothing outside the list is written), never crashing on it.
    item = standins.avx.add_certificate("removed.contoso.com")
    response, answer, queue = post_async(functions, {"resourceId": item.resource_id, "keyVault": SECOND})
    assert response.status_code == 202, answer
    monkeypatch.setenv("KEY_VAULT_URLS", standins.key_vault.url)
    app_context.reset()

    deliver_queued(functions, queue.value or "")

    _, record = status_of(functions, answer["pendingId"])
    assert record["state"] == "failed" and record["reason"] == "KEY_VAULT_NOT_ALLOWED", record
    assert standins.avx.renew_calls() == []
    assert two_vaults.latest("removed-contoso-com") is None and standins.key_vault.latest("removed-contoso-com") is None
