"""Issue 26: the Azure resources that use a certificate. `discover_consumers`, driven through `function_app.app` as the
host runs it, against the Resource Graph stand-in over HTTPS (azure-core's pipeline, the managed identity's token from
the identity stand-in) and the Key Vault stand-in through the real CertificateClient; the consumer table in Azurite."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared import context as app_context
from shared.core.errors import CertRenewError, SettingsError
from shared.core.settings import Settings
from shared.notify.install import install_notifications, uninstall_notifications
from tests.eventlog import Events, recording
from tests.standins import resourcegraph as rg
from tests.standins.base import Response
from tests.standins.certs import issue_certificate, thumbprint_hex
from tests.standins.endpoints import TlsEndpoint, refused_address
from tests.standins.keyvault import StoredVersion
from tests.standins.receiver import ReceiverStandIn
from tests.standins.stack import FakeContext, StandIns
from tests.vault.test_inventory import inventory

SUB = "0f0e0d0c-0000-4000-8000-0000000000a1"
OTHER_SUB = "0f0e0d0c-0000-4000-8000-0000000000b2"
VAULT = "certvault"


@pytest.fixture
def events() -> Iterator[Events]:
    with recording() as recorder:
        yield recorder


@dataclass
class Renewed:
    name: str
    old: StoredVersion
    current: StoredVersion


def refused_port() -> int:
    return int(refused_address().rsplit(":", 1)[1])


def seed_renewed(standins: StandIns, *, renewed_days_ago: float = 2, old_days_left: int = 10) -> Renewed:
    """A certificate renewed `renewed_days_ago` days ago: the old version (`old_days_left` left), then the current one."""
    now = datetime.now(UTC)
    name = f"www-contoso-com-{uuid.uuid4().hex[:8]}"
    old = issue_certificate("www.contoso.com", days=90, not_before=now - timedelta(days=90 - old_days_left))
    new = issue_certificate("www.contoso.com", days=90, not_before=now - timedelta(days=renewed_days_ago))
    first = standins.key_vault.seed(name, old.certificate, old.private_key, chain=old.chain)
    second = standins.key_vault.seed(name, new.certificate, new.private_key, chain=new.chain)
    return Renewed(name, first, second)


def secret_uri(standins: StandIns, name: str, version: str | None = None) -> str:
    return f"{standins.key_vault.url}/secrets/{name}" + (f"/{version}" if version else "")


def vault_row(standins: StandIns) -> dict[str, Any]:
    return rg.key_vault(SUB, VAULT, standins.key_vault.url)


def enable(monkeypatch: pytest.MonkeyPatch, subscriptions: str = SUB, **extra: str) -> None:
    monkeypatch.setenv("CONSUMER_SUBSCRIPTIONS", subscriptions)
    monkeypatch.setenv("CONSUMER_DISCOVERY_SCHEDULE", "0 30 */6 * * *")
    monkeypatch.setenv("CONSUMER_TABLE", f"consumers{uuid.uuid4().hex[:8]}")
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    app_context.reset()


def run(functions: dict[str, Any]) -> None:
    functions["discover_consumers"].get_user_function()(
        func.timer.TimerRequest(past_due=False), FakeContext("discover_consumers")
    )


def summary_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    (record,) = [r for r in caplog.records if r.getMessage().startswith("Consumer discovery: ")]
    return record.getMessage().splitlines()


# -- binding --------------------------------------------------------------------------------------------------------
def test_timer_binding_is_what_the_host_reads(functions: dict[str, Any]) -> None:
    (binding,) = json.loads(functions["discover_consumers"].get_function_json())["bindings"]
    assert binding["type"] == "timerTrigger"
    assert binding["schedule"] == "%CONSUMER_DISCOVERY_SCHEDULE%"
    assert binding["useMonitor"] is True and binding["runOnStartup"] is False


# -- the issue's "Done when" ----------------------------------------------------------------------------------------
def test_a_pinned_application_gateway_is_reported_and_a_versionless_front_door_follows_latest(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Renewed 12 hours ago: the versionless Front Door may still be syncing, so its host is not probed (that is below).
    cert = seed_renewed(standins, renewed_days_ago=0.5)
    secret_resource = rg.key_vault_secret_id(SUB, VAULT, cert.name)
    front_door = rg.front_door_secret(SUB, "fd-prod", "www-secret", secret_resource, version=None, use_latest=True)
    standins.resource_graph.add(
        vault_row(standins),
        rg.app_gateway(
            SUB,
            "agw-prod",
            {"www": secret_uri(standins, cert.name, cert.old.version)},
            {"www.contoso.com": "www"},
        ),
        front_door,
        rg.front_door_domain(SUB, "fd-prod", "www-domain", "cdn.contoso.com", front_door["id"]),
    )
    enable(monkeypatch)

    run(functions)

    (pinned,) = events.named("CertificateConsumerPinned")
    assert pinned["certificateName"] == cert.name
    assert pinned["consumerType"] == "Microsoft.Network/applicationGateways"
    assert pinned["consumerId"].endswith("/applicationGateways/agw-prod/sslCertificates/www")
    assert pinned["pinnedVersion"] == cert.old.version and pinned["currentVersion"] == cert.current.version
    assert pinned["daysLeft"] in (9, 10) and pinned["expiryDate"]
    assert str(pinned["source"]) == "discovery"
    assert events.named("CertificateConsumerStale") == []  # the versionless Front Door secret: no event
    (completed,) = events.named("ConsumerDiscoveryCompleted")
    assert completed["consumers"] == 2 and completed["pinned"] == 1 and completed["stale"] == 0
    lines = summary_lines(caplog)
    assert "2 consumer(s)" in lines[0] and "1 pinned to an old version" in lines[0]
    assert any(line.strip().startswith("current") and "(latest) [cdn.contoso.com]" in line for line in lines[1:])

    (query,) = standins.resource_graph.queries()
    body = query.json()
    assert body["subscriptions"] == [SUB] and body["options"]["resultFormat"] == "objectArray"
    assert (
        "microsoft.network/applicationgateways" in body["query"] and "microsoft.cdn/profiles/secrets" in body["query"]
    )
    assert query.header("Authorization") == f"Bearer {standins.resource_graph.expected_token}"
    assert standins.identity.token_requests(standins.resource_graph.url)  # scope <RESOURCE_MANAGER_URL>/.default

    stored = app_context.consumer_store().all()[cert.name.lower()]
    assert stored.consumers[0] == {
        "id": pinned["consumerId"],
        "type": "Microsoft.Network/applicationGateways",
        "follows": "pinned",
        "version": cert.old.version,
        "status": "pinned",
    }  # pinned first
    assert (
        stored.consumers[1]["follows"] == "latest" and stored.consumers[1]["type"] == "Microsoft.Cdn/profiles/secrets"
    )
    assert sorted(stored.host_names) == ["cdn.contoso.com", "www.contoso.com"]


def test_an_app_service_site_still_bound_to_the_old_thumbprint_a_day_after_renewal_is_stale(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
) -> None:
    late = seed_renewed(standins, renewed_days_ago=2)
    fresh = seed_renewed(standins, renewed_days_ago=0.25)  # renewed 6 hours ago: App Service may still sync
    vault_id = vault_row(standins)["id"]
    standins.resource_graph.add(
        vault_row(standins),
        rg.web_certificate(SUB, "www-cert", vault_id, late.name, late.current.thumbprint, ["www.contoso.com"]),
        rg.web_site(SUB, "www-app", {"www.contoso.com": late.old.thumbprint}),
        rg.web_certificate(SUB, "shop-cert", vault_id, fresh.name, fresh.old.thumbprint, ["shop.contoso.com"]),
        rg.web_site(SUB, "shop-app", {"shop.contoso.com": fresh.old.thumbprint}),
    )
    enable(monkeypatch)

    run(functions)

    (stale,) = events.named("CertificateConsumerStale")
    assert stale["certificateName"] == late.name
    assert stale["consumerType"] == "Microsoft.Web/sites" and stale["consumerId"].endswith("/sites/www-app")
    assert stale["servedThumbprint"] == late.old.thumbprint
    assert stale["expectedThumbprint"] == late.current.thumbprint
    assert stale["currentVersion"] == late.current.version and stale["hostNames"] == "www.contoso.com"
    assert events.named("CertificateConsumerPinned") == []
    stored = app_context.consumer_store().all()
    assert {c["status"] for c in stored[fresh.name.lower()].consumers} == {"waiting"}
    assert {c["status"] for c in stored[late.name.lower()].consumers} == {"current", "stale"}


def test_paging_over_several_pages_finds_every_consumer(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
) -> None:
    cert = seed_renewed(standins)
    rows = [vault_row(standins)]
    for index in range(5):
        uri = secret_uri(standins, cert.name, cert.old.version if index % 2 else None)
        rows.append(rg.container_apps_certificate(SUB, f"env-{index}", "www", uri))
    rows.append(rg.app_gateway(OTHER_SUB, "agw-other", {"www": secret_uri(standins, cert.name, cert.old.version)}, {}))
    standins.resource_graph.add(*rows)
    standins.resource_graph.page_size = 2
    enable(monkeypatch)

    run(functions)

    queries = standins.resource_graph.queries()
    assert len(queries) == 3  # 6 rows of the listed subscription, 2 a page
    tokens = [q.json()["options"].get("$skipToken") for q in queries]
    assert tokens[0] is None and all(tokens[1:]) and len(set(tokens[1:])) == 2
    assert len({q.json()["query"] for q in queries}) == 1  # the same query with each token
    pinned = events.named("CertificateConsumerPinned")
    assert len(pinned) == 2 and all(
        p["consumerType"] == "Microsoft.App/managedEnvironments/certificates" for p in pinned
    )
    (completed,) = events.named("ConsumerDiscoveryCompleted")
    assert completed["consumers"] == 5 and completed["pages"] == 3 and completed["limited"] is False


def test_discovery_is_off_without_subscriptions_and_calls_nothing(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
    caplog: pytest.LogCaptureFixture,
) -> None:
    standins.resource_graph.add(vault_row(standins))
    enable(monkeypatch, subscriptions="")

    run(functions)

    assert standins.resource_graph.requests == [] and standins.resource_graph.connections == 0
    assert standins.identity.token_requests(standins.resource_graph.url) == []
    assert events.items == []
    assert summary_lines(caplog) == ["Consumer discovery: CONSUMER_SUBSCRIPTIONS is empty; discovery is off"]


# -- throttling, limits, failures -----------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{"retry_after": "1"}, {"retry_after": None, "resets_after": "00:00:01"}])
def test_throttling_is_waited_out(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
    headers: dict[str, Any],
) -> None:
    cert = seed_renewed(standins)
    standins.resource_graph.add(
        rg.api_management(SUB, "apim", "api.contoso.com", secret_uri(standins, cert.name), cert.current.thumbprint)
    )
    standins.resource_graph.throttle(1, **headers)
    enable(monkeypatch)

    run(functions)

    (first, second) = standins.resource_graph.queries()
    assert first.json() == second.json()  # the same query, once the quota was back
    (completed,) = events.named("ConsumerDiscoveryCompleted")
    assert completed["consumers"] == 1 and completed["pinned"] == 0


def test_the_per_run_limit_cuts_the_list_with_an_event(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
) -> None:
    cert = seed_renewed(standins)
    for index in range(5):
        standins.resource_graph.add(
            rg.container_apps_certificate(SUB, f"env-{index}", "www", secret_uri(standins, cert.name))
        )
    standins.resource_graph.page_size = 2
    enable(monkeypatch, CONSUMER_MAX_PER_RUN="3")

    run(functions)

    (limited,) = events.named("ConsumerDiscoveryLimited")
    assert limited["limit"] == 3 and limited["totalRecords"] == 5
    (completed,) = events.named("ConsumerDiscoveryCompleted")
    assert completed["consumers"] == 3 and completed["limited"] is True
    # $top asks only for what is left of the limit (the stand-in serves 2 a page whatever it asks)
    assert [q.json()["options"]["$top"] for q in standins.resource_graph.queries()] == [3, 1]


def test_a_refused_query_fails_the_run_with_a_named_cause(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    standins.resource_graph.scripted.append(rg._error(403, "AuthorizationFailed", "no Reader role"))
    enable(monkeypatch)

    with pytest.raises(Exception) as failure:
        run(functions)

    assert getattr(failure.value, "code", None) == "RESOURCE_GRAPH_UNAVAILABLE"
    assert "Reader" in failure.value.message  # type: ignore[attr-defined]
    assert any("RESOURCE_GRAPH_UNAVAILABLE" in r.getMessage() for r in caplog.records)


# -- settings -------------------------------------------------------------------------------------------------------
def test_settings_are_validated_by_name() -> None:
    good = Settings({"CONSUMER_SUBSCRIPTIONS": f" {SUB.upper()}, {OTHER_SUB},{SUB} "}).consumers
    assert good.subscriptions == (SUB, OTHER_SUB) and good.enabled
    assert good.resource_manager_url == "https://management.azure.com"
    assert good.scope == "https://management.azure.com/.default" and good.max_per_run == 2000
    assert Settings({}).consumers.enabled is False
    with pytest.raises(SettingsError) as bad:
        _ = Settings(
            {
                "CONSUMER_SUBSCRIPTIONS": f"{SUB},not-a-guid",
                "RESOURCE_MANAGER_URL": "http://management.example.com",
                "CONSUMER_MAX_PER_RUN": "0",
            }
        ).consumers
    text = str(bad.value.problems)
    assert "CONSUMER_SUBSCRIPTIONS: entry 2 must be a subscription id" in text
    assert "RESOURCE_MANAGER_URL must be an https:// URL" in text and "CONSUMER_MAX_PER_RUN" in text
    loopback = Settings({"RESOURCE_MANAGER_URL": "http://127.0.0.1:8080/"}).consumers
    assert loopback.resource_manager_url == "http://127.0.0.1:8080"


# -- what the discovery feeds: the inventory, the endpoint check, notifications -------------------------------------
def test_the_inventory_lists_each_certificates_consumers_pinned_first(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    standins.key_vault.reset()  # only this test's certificates
    cert = seed_renewed(standins)
    unused = seed_renewed(standins)
    secret_resource = rg.key_vault_secret_id(SUB, VAULT, cert.name)
    standins.resource_graph.add(
        vault_row(standins),
        rg.front_door_secret(SUB, "fd", "www", secret_resource, version=None, use_latest=True),
        rg.api_management(SUB, "apim", "api.contoso.com", secret_uri(standins, cert.name, cert.old.version), "AB" * 20),
    )
    enable(monkeypatch)
    run(functions)

    status, body = inventory(functions)

    assert status == 200, body
    by_name = {c["name"]: c for c in body["certificates"]}
    first, second = by_name[cert.name]["consumers"]
    assert first["type"] == "Microsoft.ApiManagement/service" and first["follows"] == "pinned"
    assert first["version"] == cert.old.version and first["status"] == "pinned"
    assert second["type"] == "Microsoft.Cdn/profiles/secrets" and second["follows"] == "latest"
    assert "version" not in second
    assert by_name[unused.name]["consumers"] == []


def test_discovered_host_names_join_the_endpoint_check(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
) -> None:
    cert = seed_renewed(standins)
    # "localhost": a discovered name this machine resolves; nothing serves TLS on its port 443.
    standins.resource_graph.add(
        rg.app_gateway(
            SUB, "agw", {"www": secret_uri(standins, cert.name)}, {"localhost": "www", "*.contoso.com": "www"}
        )
    )
    enable(monkeypatch, ENDPOINT_CHECKS="[]", ENDPOINT_CHECK_SCHEDULE="0 0 */6 * * *")
    run(functions)
    events.clear()

    functions["verify_endpoints"].get_user_function()(
        func.timer.TimerRequest(past_due=False), FakeContext("verify_endpoints")
    )

    by_host = events.by_host()
    assert list(by_host) == ["localhost"]  # the wildcard listener name cannot be asked for by SNI
    event_name, attributes = by_host["localhost"]
    assert event_name in ("EndpointCheckFailed", "CertificateNotDeployed")
    assert attributes["certificateName"] == cert.name and attributes["address"] == "localhost:443"


def test_a_pinned_consumer_is_notified(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = seed_renewed(standins)
    standins.resource_graph.add(
        rg.container_apps_certificate(SUB, "env", "www", secret_uri(standins, cert.name, cert.old.version))
    )
    enable(monkeypatch)
    receiver = ReceiverStandIn().start()
    try:
        monkeypatch.setenv("NOTIFY_WEBHOOK_URL", receiver.webhook_url())
        monkeypatch.setenv("NOTIFY_FORMAT", "json")
        app_context.reset()
        assert install_notifications(app_context.settings()) is not None
        run(functions)
        bodies = [json.loads(body) for body in receiver.bodies()]
    finally:
        uninstall_notifications()
        receiver.stop()
    (message,) = bodies
    assert message["event"] == "CertificateConsumerPinned" and message["source"] == "discovery"
    assert message["certificateName"] == cert.name
    assert message["consumerType"] == "Microsoft.App/managedEnvironments/certificates"
    assert message["pinnedVersion"] == cert.old.version and message["currentVersion"] == cert.current.version
    assert message["daysLeft"] in (9, 10)


def test_a_versionless_consumer_whose_host_still_serves_the_old_certificate_is_stale(
    standins: StandIns, app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, events: Events
) -> None:
    """An Application Gateway does not say in Resource Graph which version it loaded: its listener's host name is
    probed over TLS (the endpoint check's reader). The host name is resolved to a local TLS server serving the old
    certificate; everything else is the app's own path (Resource Graph, Key Vault, the probe)."""
    from dataclasses import replace

    from shared.consumers.run import discover_consumers

    now = datetime.now(UTC)
    old = issue_certificate("www.contoso.com", days=90, not_before=now - timedelta(days=80))
    new = issue_certificate("www.contoso.com", days=90, not_before=now - timedelta(days=2))
    name = f"www-contoso-com-{uuid.uuid4().hex[:8]}"
    for issued in (old, new):
        standins.key_vault.seed(name, issued.certificate, issued.private_key, chain=issued.chain)
    standins.resource_graph.add(
        rg.app_gateway(
            SUB, "agw", {"www": secret_uri(standins, name)}, {"www.contoso.com": "www", "api.contoso.com": "www"}
        )
    )
    enable(monkeypatch)
    endpoint = TlsEndpoint(old.certificate, old.private_key, old.chain).start()
    try:
        local = {"www.contoso.com": ("127.0.0.1", endpoint.port), "api.contoso.com": ("127.0.0.1", refused_port())}
        deps = replace(app_context.discovery_dependencies(), address_of=lambda host: local[host])
        summary = discover_consumers(deps)
    finally:
        endpoint.stop()

    (stale,) = events.named("CertificateConsumerStale")
    assert stale["consumerType"] == "Microsoft.Network/applicationGateways"
    assert stale["servedThumbprint"] == thumbprint_hex(old.certificate)
    assert stale["expectedThumbprint"] == thumbprint_hex(new.certificate)
    assert stale["hostNames"] == "www.contoso.com, api.contoso.com"
    assert [f.outcome for f in summary.findings] == ["stale"]


@pytest.mark.parametrize(
    "answer",
    [
        Response.json({"data": {"not": "a list"}}),
        Response.text("<html>gateway</html>", content_type="text/html"),
        Response.json({"data": [], "$skipToken": 42}),
        Response.json({"error": {"code": "InternalServerError", "message": "x"}}, 500),
    ],
)
def test_an_answer_that_is_not_a_query_result_fails_the_run_cleanly(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
    answer: Response,
) -> None:
    # Five times: a 5xx is retried (the query is a read), then given up.
    standins.resource_graph.scripted.extend([answer] * 5)
    enable(monkeypatch)
    monkeypatch.setattr("shared.azure.resourcegraph.MAX_RETRY_AFTER_SECONDS", 0.01)

    with pytest.raises(CertRenewError) as failure:
        run(functions)

    assert failure.value.code == "RESOURCE_GRAPH_UNAVAILABLE"
    assert events.named("ConsumerDiscoveryCompleted") == []
    assert app_context.consumer_store().all() == {}  # nothing saved from a failed run


def test_a_skip_token_that_comes_back_again_ends_the_paging(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    page = {"totalRecords": 9, "count": 0, "resultTruncated": "false", "data": [], "$skipToken": "same"}
    standins.resource_graph.scripted.extend([Response.json(page)] * 3)
    enable(monkeypatch)

    with pytest.raises(CertRenewError) as failure:
        run(functions)

    assert "did not end" in failure.value.message and len(standins.resource_graph.queries()) == 2


def test_teams_and_slack_messages_name_the_resource_and_both_versions() -> None:
    from shared.notify.formats import build_message

    pinned = {
        "source": "discovery",
        "certificateName": "www-contoso-com",
        "consumerId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/applicationGateways/agw",
        "consumerType": "Microsoft.Network/applicationGateways",
        "pinnedVersion": "old0123",
        "currentVersion": "new4567",
        "daysLeft": 9,
    }
    teams = json.dumps(build_message("teams", "CertificateConsumerPinned", pinned))
    assert "pinned to an old version: www-contoso-com" in teams and "old0123" in teams and "new4567" in teams
    assert "applicationGateways/agw" in teams and "9 day(s)" in teams
    stale = {**pinned, "servedThumbprint": "A" * 40, "expectedThumbprint": "B" * 40}
    slack = json.dumps(build_message("slack", "CertificateConsumerStale", stale))
    assert "still uses the old certificate: www-contoso-com" in slack and "A" * 40 in slack and "B" * 40 in slack


# -- on demand, from the operator CLI -------------------------------------------------------------------------------
def test_the_cli_runs_one_discovery_now(
    standins: StandIns,
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from shared.operator.cli import main

    cert = seed_renewed(standins)
    standins.resource_graph.add(
        rg.container_apps_certificate(SUB, "env", "www", secret_uri(standins, cert.name, cert.old.version))
    )
    enable(monkeypatch)

    assert main(["discover-consumers"]) == 0
    assert len(events.named("CertificateConsumerPinned")) == 1 and len(standins.resource_graph.queries()) == 1

    standins.resource_graph.scripted.append(rg._error(403, "AuthorizationFailed", "no Reader role"))
    app_context.reset()
    assert main(["discover-consumers"]) == 1
    err = capsys.readouterr().err
    assert "FAILED [RESOURCE_GRAPH_UNAVAILABLE]" in err and "Reader" in err


def test_pages_smaller_than_asked_for_are_followed_to_the_end(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
) -> None:
    """Resource Graph may answer fewer rows than `$top` (its answers are size-limited too): the paging goes on while a
    `$skipToken` comes, not for a number of pages worked out from `$top`."""
    cert = seed_renewed(standins)
    for index in range(9):
        standins.resource_graph.add(
            rg.container_apps_certificate(SUB, f"env-{index}", "www", secret_uri(standins, cert.name))
        )
    standins.resource_graph.page_size = 2  # whatever $top asks
    enable(monkeypatch)

    run(functions)

    assert len(standins.resource_graph.queries()) == 5
    (completed,) = events.named("ConsumerDiscoveryCompleted")
    assert completed["consumers"] == 9 and completed["pages"] == 5 and completed["limited"] is False


def test_a_page_resource_graph_says_is_truncated_is_reported_as_a_cut(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
) -> None:
    """Review: QueryResponse.resultTruncated "Indicates whether the query results are truncated". A truncated answer
    with no $skipToken to continue is not the whole list: it must be reported as cut (and not saved as complete,
    which deletes the consumers it left out)."""
    cert = seed_renewed(standins)
    row = rg.container_apps_certificate(SUB, "env", "www", secret_uri(standins, cert.name))
    page = {"totalRecords": 7, "count": 1, "resultTruncated": "true", "data": [row], "facets": []}
    standins.resource_graph.scripted.append(Response.json(page))
    enable(monkeypatch)

    run(functions)

    (completed,) = events.named("ConsumerDiscoveryCompleted")
    assert completed["consumers"] == 1 and completed["limited"] is True
    assert events.named("ConsumerDiscoveryLimited")

    # The same page says "true" also when fewer rows were left than $top asked for: all of them read is no cut.
    standins.resource_graph.scripted.append(Response.json({**page, "totalRecords": 1}))
    run(functions)
    (_, second) = events.named("ConsumerDiscoveryCompleted")
    assert second["limited"] is False


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_a_huge_answer_fails_the_run_without_being_held_whole(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    declare_length: bool,
) -> None:
    """Review: a page larger than any Resource Graph page should be (a broken proxy, a runaway answer) is refused as
    it arrives, not read whole into memory and parsed; it is asked again for fewer rows, down to one."""
    from shared.azure import resourcegraph

    monkeypatch.setattr(resourcegraph, "MAX_PAGE_BYTES", 1024 * 1024)  # the rule is the same at its real size
    huge = Response.huge_json_array(8 * 1024 * 1024, declare_length=declare_length)
    standins.resource_graph.scripted.extend([huge] * 11)  # $top 1000, 500, ... 1: never small enough
    enable(monkeypatch)

    with pytest.raises(CertRenewError) as failure:
        run(functions)

    assert failure.value.code == "RESOURCE_GRAPH_UNAVAILABLE"
    assert "larger than" in failure.value.message
    tops = [q.json()["options"]["$top"] for q in standins.resource_graph.queries()]
    assert tops == [1000, 500, 250, 125, 62, 31, 15, 7, 3, 1]


def test_a_page_too_large_is_asked_again_for_fewer_rows(
    standins: StandIns,
    functions: dict[str, Any],
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
) -> None:
    from shared.azure import resourcegraph

    monkeypatch.setattr(resourcegraph, "MAX_PAGE_BYTES", 1024 * 1024)
    cert = seed_renewed(standins)
    for index in range(3):
        standins.resource_graph.add(
            rg.container_apps_certificate(SUB, f"env-{index}", "www", secret_uri(standins, cert.name))
        )
    standins.resource_graph.page_size = 2
    standins.resource_graph.scripted.append(Response.huge_json_array(2 * 1024 * 1024, declare_length=True))
    enable(monkeypatch)

    run(functions)

    (completed,) = events.named("ConsumerDiscoveryCompleted")
    assert completed["consumers"] == 3 and completed["limited"] is False
    assert [q.json()["options"]["$top"] for q in standins.resource_graph.queries()] == [1000, 500, 500]
