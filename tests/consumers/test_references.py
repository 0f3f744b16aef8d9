"""Issue 26, the pure part: which rows of a Resource Graph answer are consumers of the app's vault, and what each
follows. Rows are built by the stand-in's builders (the documented property paths), then bent out of shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.consumers.decisions import Version, decide
from shared.consumers.references import QUERY, TYPES, Reference, VaultIdentity, references
from tests.standins import resourcegraph as rg

SUB = "0f0e0d0c-0000-4000-8000-0000000000a1"
VAULT_URL = "https://kv-certs.vault.azure.net"
OTHER = "https://kv-other.vault.azure.net"
VERSION = "0123456789abcdef0123456789abcdef"


def test_the_query_asks_for_every_type_it_reads() -> None:
    assert all(t.lower() in QUERY for t in TYPES)
    assert (
        QUERY.startswith("resources | where type in~ (")
        and "project id, name, type, subscriptionId, properties" in QUERY
    )


def test_secret_uris_of_the_vault_only_versioned_or_not() -> None:
    vault = VaultIdentity.of(VAULT_URL)
    assert vault.names == frozenset({"kv-certs"})
    assert vault.secret_uri(f"{VAULT_URL}/secrets/www") == ("www", None)
    assert vault.secret_uri(f"{VAULT_URL}/secrets/www/") == ("www", None)
    assert vault.secret_uri(f"{VAULT_URL}/secrets/www/{VERSION}") == ("www", VERSION)
    assert vault.secret_uri("https://KV-CERTS.vault.azure.net/secrets/www") == ("www", None)
    for foreign in (f"{OTHER}/secrets/www", f"{VAULT_URL}/certificates/www", f"{VAULT_URL}/secrets", "", "http://[::1"):
        assert vault.secret_uri(foreign) is None
    resource = rg.key_vault_secret_id(SUB, "kv-certs", "www")
    assert vault.secret_resource(resource) == "www"
    assert vault.secret_resource(rg.key_vault_secret_id(SUB, "kv-other", "www")) is None
    assert vault.secret_resource(resource.replace("/vaults/", "/vault/")) == "www"  # Front Door's documented example
    assert vault.secret_resource("/subscriptions/s/providers/Microsoft.KeyVault/vaults/kv-certs") is None
    assert vault.vault_resource(resource.rsplit("/secrets/", 1)[0])


def test_a_vault_row_names_a_vault_whose_url_says_nothing_of_its_name() -> None:
    local = "https://127.0.0.1:8443"
    assert VaultIdentity.of(local).names == frozenset()
    vault = VaultIdentity.of(local, [rg.key_vault(SUB, "certvault", local), rg.key_vault(SUB, "elsewhere", OTHER)])
    assert vault.names == frozenset({"certvault"})


def rows() -> list[dict[str, Any]]:
    vault = rg.key_vault(SUB, "kv-certs", VAULT_URL)
    secret = rg.key_vault_secret_id(SUB, "kv-certs", "www")
    pinned_fd = rg.front_door_secret(SUB, "fd", "pinned", secret, version=VERSION, use_latest=False)
    latest_fd = rg.front_door_secret(SUB, "fd", "latest", secret, version=VERSION, use_latest=True)
    return [
        vault,
        rg.app_gateway(
            SUB,
            "agw",
            {"www": f"{VAULT_URL}/secrets/www/{VERSION}", "api": f"{VAULT_URL}/secrets/api", "x": f"{OTHER}/secrets/x"},
            {"www.contoso.com": "www", "api.contoso.com": "api"},
        ),
        pinned_fd,
        latest_fd,
        rg.front_door_domain(SUB, "fd", "d1", "cdn.contoso.com", latest_fd["id"].upper()),
        rg.web_certificate(SUB, "wc", vault["id"], "www", "AA" * 20, ["www.contoso.com"]),
        rg.web_certificate(SUB, "foreign", rg.key_vault(SUB, "kv-other", OTHER)["id"], "www", "BB" * 20, []),
        rg.web_site(
            SUB, "site", {"www.contoso.com": "cc" * 20, "other.contoso.com": "DD" * 20, "plain.contoso.com": None}
        ),
        rg.api_management(SUB, "apim", "api.contoso.com", f"{VAULT_URL}/secrets/api/{VERSION}", "ee" * 20),
        rg.container_apps_certificate(SUB, "env", "c", f"{VAULT_URL}/secrets/www"),
    ]


def test_each_type_yields_its_references_and_nothing_of_other_vaults() -> None:
    found = {
        (r.consumer_type, r.consumer_id.rsplit("/", 1)[-1], r.certificate): r for r in references(rows(), VAULT_URL)
    }
    assert sorted(found) == sorted(
        [
            ("Microsoft.Network/applicationGateways", "www", "www"),
            ("Microsoft.Network/applicationGateways", "api", "api"),
            ("Microsoft.Cdn/profiles/secrets", "pinned", "www"),
            ("Microsoft.Cdn/profiles/secrets", "latest", "www"),
            ("Microsoft.Web/certificates", "wc", "www"),
            ("Microsoft.Web/sites", "site", "www"),
            ("Microsoft.ApiManagement/service", "apim", "api"),
            ("Microsoft.App/managedEnvironments/certificates", "c", "www"),
        ]
    )
    agw = found[("Microsoft.Network/applicationGateways", "www", "www")]
    assert (agw.version, agw.follows, agw.host_names) == (VERSION, "pinned", ("www.contoso.com",))
    assert found[("Microsoft.Network/applicationGateways", "api", "api")].follows == "latest"
    assert found[("Microsoft.Cdn/profiles/secrets", "pinned", "www")].version == VERSION
    latest = found[("Microsoft.Cdn/profiles/secrets", "latest", "www")]
    assert latest.version is None and latest.host_names == ("cdn.contoso.com",)  # useLatestVersion wins
    site = found[("Microsoft.Web/sites", "site", "www")]
    # Bound by host name to the certificate that lists it (its thumbprint moved on); the other binding is not ours.
    assert site.host_names == ("www.contoso.com",) and site.served_thumbprint == "CC" * 20
    apim = found[("Microsoft.ApiManagement/service", "apim", "api")]
    assert apim.version == VERSION and apim.served_thumbprint == "EE" * 20 and apim.host_names == ("api.contoso.com",)


@pytest.mark.parametrize(
    "row",
    [
        {},
        {"type": 5, "properties": []},
        {"type": "microsoft.network/applicationgateways", "properties": {"sslCertificates": "x"}},
        {"type": "microsoft.network/applicationgateways", "properties": {"sslCertificates": [{"properties": None}]}},
        {"type": "microsoft.cdn/profiles/secrets", "properties": {"parameters": {"type": "CustomerCertificate"}}},
        {"type": "microsoft.web/sites", "properties": {"hostNameSslStates": [{"thumbprint": 7, "sslState": None}]}},
        {"type": "microsoft.apimanagement/service", "properties": {"hostnameConfigurations": [{"keyVaultId": ["x"]}]}},
        {"type": "microsoft.keyvault/vaults", "name": None, "properties": {"vaultUri": 3}},
    ],
)
def test_rows_of_an_unexpected_shape_are_no_consumers(row: dict[str, Any]) -> None:
    assert references([row], VAULT_URL) == []


def version(v: str, thumbprint: str, renewed_hours_ago: float, days_left: int = 80) -> Version:
    now = datetime.now(UTC)
    return Version(v, thumbprint, now - timedelta(hours=renewed_hours_ago), now + timedelta(days=days_left))


def test_decisions() -> None:
    now = datetime.now(UTC)
    current = version("new", "AA" * 20, 30)
    old = version("old", "BB" * 20, 24 * 80, days_left=5)
    pinned = Reference("/r/1", "T", "www", "old")
    finding = decide(pinned, current, old, now)
    assert finding.outcome == "pinned" and finding.event is not None
    assert finding.event[1]["daysLeft"] in (4, 5) and finding.event[1]["pinnedVersion"] == "old"
    assert decide(Reference("/r/1", "T", "www", "NEW"), current, None, now).outcome == "current"
    assert decide(pinned, None, None, now).outcome == "unchecked"
    assert decide(pinned, current, None, now).event[1]["daysLeft"] is None  # type: ignore[index]
    stale = Reference("/r/2", "T", "www", None, ("a.contoso.com",), "BB" * 20)
    assert decide(stale, current, None, now).outcome == "stale"
    assert decide(stale, version("new", "AA" * 20, 23), None, now).outcome == "waiting"
    assert decide(Reference("/r/3", "T", "www", None, (), "aa" * 20), current, None, now).outcome == "current"
    assert decide(Reference("/r/4", "T", "www", None), current, None, now).outcome == "current"  # nothing to compare


@pytest.mark.parametrize(
    "row",
    [
        {"type": "microsoft.web/sites", "properties": {"hostNameSslStates": ["www.contoso.com", None, 3]}},
        {"type": "microsoft.apimanagement/service", "properties": {"hostnameConfigurations": ["x", None]}},
        {"type": "microsoft.network/applicationgateways", "properties": {"httpListeners": ["x", {"properties": "y"}]}},
        {"type": "microsoft.network/applicationgateways", "properties": {"sslCertificates": ["x", 5]}},
        {"type": "microsoft.cdn/profiles/secrets", "properties": {"parameters": "CustomerCertificate"}},
        {"type": "microsoft.cdn/profiles/secrets", "properties": {"parameters": {"type": 1, "secretSource": "x"}}},
        {"type": "microsoft.cdn/profiles/customdomains", "properties": {"tlsSettings": {"secret": "x"}}},
        {"type": "microsoft.web/certificates", "properties": "x"},
        {"type": "microsoft.web/certificates", "properties": {"keyVaultSecretName": 5, "keyVaultId": ["x"]}},
        {"type": "microsoft.app/managedenvironments/certificates", "properties": {"certificateKeyVaultProperties": 1}},
    ],
)
def test_list_items_and_objects_of_the_wrong_kind_are_no_consumers(row: dict[str, Any]) -> None:
    """Review: one row whose arrays hold strings, or whose objects are strings, must not stop the discovery of
    every other resource (an exception here fails the whole run)."""
    good = rg.api_management(SUB, "apim", "api.contoso.com", f"{VAULT_URL}/secrets/api", "ee" * 20)
    found = references([row, good], VAULT_URL)
    assert [r.consumer_type for r in found] == ["Microsoft.ApiManagement/service"]


def test_a_secret_uri_with_the_default_port_is_the_same_vault() -> None:
    """Review: `https://<vault>:443/secrets/<name>` is the same secret (what a hand-written template may hold)."""
    vault = VaultIdentity.of(VAULT_URL)
    assert vault.secret_uri("https://kv-certs.vault.azure.net:443/secrets/www/") == ("www", None)
    assert vault.secret_uri(f"https://kv-certs.vault.azure.net:443/secrets/www/{VERSION}") == ("www", VERSION)
    assert VaultIdentity.of(VAULT_URL + ":443/").secret_uri(f"{VAULT_URL}/secrets/www") == ("www", None)
    assert vault.secret_uri("https://kv-certs.vault.azure.net:8443/secrets/www") is None
