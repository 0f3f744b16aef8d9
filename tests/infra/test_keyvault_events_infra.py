"""Issue 14 infrastructure, checked on the Bicep text: Key Vault's system topic and the subscription of
keyvault_events (two event types, retries, dead-letter), and the workbook whose queries the offline KQL check reads."""

from __future__ import annotations

import json
import re

from tests.infra.bicep_text import INFRA, bicep_files, resources
from tests.infra.test_kql import shipped_queries


def one(type_name: str):  # type: ignore[no-untyped-def]
    """The app's own vault's (further vaults, issue 25, have theirs in keyvault-extra*.bicep)."""
    (found,) = [r for path in bicep_files() if "extra" not in path.name for r in resources(path, type_name)]
    return found


def test_the_vaults_system_topic_delivers_the_two_certificate_events_to_keyvault_events() -> None:
    topic = one("Microsoft.EventGrid/systemTopics")
    assert "topicType: 'Microsoft.KeyVault.vaults'" in topic.body and "source: keyVault.id" in topic.body
    subscription = one("Microsoft.EventGrid/systemTopics/eventSubscriptions")
    body = subscription.body
    assert "endpointType: 'AzureFunction'" in body and "/functions/keyvault_events'" in body
    types = re.findall(r"'(Microsoft\.KeyVault\.[A-Za-z]+)'", body.split("includedEventTypes")[1].split("]")[0])
    assert types == ["Microsoft.KeyVault.CertificateNearExpiry", "Microsoft.KeyVault.CertificateExpired"]
    assert re.search(r"maxDeliveryAttempts:\s*\d+", body) and re.search(r"eventTimeToLiveInMinutes:\s*\d+", body)
    assert "endpointType: 'StorageBlob'" in body and "blobContainerName: deadLetterContainer.name" in body
    # The dead-letter writer is the topic's own identity, on the container only (the account has no shared keys).
    assert "scope: deadLetterContainer" in (INFRA / "modules" / "keyvault-events.bicep").read_text()


def test_the_workbook_ships_its_queries_where_the_kql_check_reads_them() -> None:
    workbook = one("Microsoft.Insights/workbooks")
    assert "serializedData: loadTextContent('workbook.json')" in workbook.body
    content = json.loads((INFRA / "modules" / "workbook.json").read_text())
    titles = [i["content"].get("title", "") for i in content["items"] if i["type"] == 3]
    assert any("days left" in t for t in titles) and any("Pending" in t for t in titles)
    assert any("by reason" in t for t in titles) and any("pinned to an old version first" in t for t in titles)
    checked = [q for q in shipped_queries() if q.id.startswith("infra/modules/workbook.json")]
    assert len(checked) == len(titles) == 5
