"""Issue 14: `GET /api/certificates`, through `function_app.app`, against the Key Vault stand-in's paged list API (the
real CertificateClient over HTTPS) and the app's records in Azurite."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared import context as app_context
from shared.rcl.scheduled import ScheduledRenewal
from tests.conftest import WebhookCaller
from tests.standins.certs import issue_certificate
from tests.standins.stack import FakeContext, StandIns


def inventory(functions: dict[str, Any], params: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    request = func.HttpRequest(
        method="GET", url="http://localhost/api/certificates", headers={}, params=params or {}, body=b""
    )
    response = functions["certificate_inventory"].get_user_function()(request, FakeContext("certificate_inventory"))
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


def test_the_inventory_pages_through_the_vault_with_source_days_and_last_outcome(
    functions: dict[str, Any], call_webhook: WebhookCaller, standins: StandIns, monkeypatch: pytest.MonkeyPatch
) -> None:
    standins.key_vault.reset()  # only this test's certificates
    now = datetime.now(UTC)
    standins.avx.add_certificate("portal.contoso.com", resource_id="portal")
    status, body = call_webhook({"resourceId": "portal", "keyVaultCertificateName": "portal-contoso-com"})
    assert status == 200, body
    app_context.renewal_state().record_scheduled(
        [
            ScheduledRenewal(
                record_key=f"{now:%Y%m%d}-id-3",
                certificate_id=3,
                certificate_name="shop.contoso.com",
                target="Azure Key Vault",
                expiry_date=now + timedelta(days=10),
                scheduled_at=now - timedelta(minutes=5),
                run_id="night",
            )
        ]
    )
    for name, days_left in (("shop-contoso-com", 10), ("legacy-a", 3), ("legacy-b", 60), ("legacy-c", -2)):
        issued = issue_certificate(f"{name}.example", days=90, not_before=now - timedelta(days=90 - days_left))
        standins.key_vault.seed(name, issued.certificate, issued.private_key)
    monkeypatch.setenv(
        "ENDPOINT_CHECKS", json.dumps([{"certificate": "portal-contoso-com", "host": "portal.contoso.com"}])
    )
    app_context.reset()

    seen: list[dict[str, Any]] = []
    params = {"maxResults": "2"}
    pages = 0
    while True:
        status, body = inventory(functions, params)
        assert status == 200, body
        assert len(body["certificates"]) <= 2
        seen += body["certificates"]
        pages += 1
        if not body["continuation"]:
            break
        params = {"maxResults": "2", "continuation": body["continuation"]}
    assert pages == 3
    by_name = {c["name"]: c for c in seen}
    assert sorted(by_name) == ["legacy-a", "legacy-b", "legacy-c", "portal-contoso-com", "shop-contoso-com"]
    assert len(seen) == 5
    portal = by_name["portal-contoso-com"]
    assert portal["source"] == "appviewx" and portal["lastOutcome"] == "renewed" and portal["lastOutcomeAt"]
    assert portal["thumbprint"] == standins.key_vault.latest("portal-contoso-com").thumbprint  # type: ignore[union-attr]
    assert portal["endpoints"] == [{"host": "portal.contoso.com", "address": "portal.contoso.com:443"}]
    shop = by_name["shop-contoso-com"]
    assert shop["source"] == "rcl" and shop["lastOutcome"] == "scheduled" and shop["daysLeft"] in (9, 10)
    assert by_name["legacy-a"]["source"] == "unmanaged" and by_name["legacy-a"]["lastOutcome"] is None
    assert by_name["legacy-c"]["daysLeft"] < 0
    lists = standins.key_vault.received("GET", "/certificates")
    assert len(lists) == 3 and all(r.query_one("maxresults") == "2" for r in lists)


@pytest.mark.parametrize("params", [{"maxResults": "0"}, {"maxResults": "26"}, {"maxResults": "x"}])
def test_a_bad_page_size_is_refused(functions: dict[str, Any], app_env: dict[str, str], params: dict[str, str]) -> None:
    status, body = inventory(functions, params)
    assert status == 400 and body["error"]["code"] == "INVALID_REQUEST"


@pytest.mark.parametrize(
    "link",
    [
        "https://attacker.example/certificates?$skiptoken=1",
        "{vault}/secrets?$skiptoken=1",
        "http://{host}/certificates?$skiptoken=1",
    ],
)
def test_a_continuation_cannot_point_the_app_elsewhere(
    functions: dict[str, Any], app_env: dict[str, str], standins: StandIns, link: str
) -> None:
    text = link.format(vault=standins.key_vault.url, host=standins.key_vault.url.split("://")[1])
    token = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    for continuation in (token, "%%%", uuid.uuid4().hex):
        status, body = inventory(functions, {"continuation": continuation})
        assert status == 400 and body["error"]["code"] == "INVALID_REQUEST"
    assert standins.key_vault.received("GET", "/certificates") == []
