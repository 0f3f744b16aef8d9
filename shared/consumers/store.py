"""What the last discovery run found, per certificate, in the consumer table (`CONSUMER_TABLE`).

One row per certificate (partition `consumers`, row key = the certificate name in lower case): its consumers as JSON
(at most `MAX_PER_CERTIFICATE`, with how many more there were) and the host names they serve. The inventory shows
them; the endpoint check probes the host names. A complete run replaces the rows (a certificate no longer used loses
its row); a run cut by CONSUMER_MAX_PER_RUN only adds and updates, since it cannot know what disappeared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.azure.tables import storage_failure, update_mode
from shared.consumers.decisions import ConsumerFinding
from shared.core.settings import MAX_ENDPOINT_CHECKS, EndpointCheck, is_dns_name
from shared.core.timestamps import iso_utc

if TYPE_CHECKING:
    from azure.data.tables import TableClient

PARTITION = "consumers"
MAX_PER_CERTIFICATE = 100  # a table property holds at most 64 KiB: consumers beyond this are counted, not listed
MAX_HOSTS_PER_CERTIFICATE = 50


@dataclass(frozen=True)
class KnownConsumers:
    """A certificate's consumers as stored by the last discovery run."""

    certificate: str
    consumers: list[dict[str, Any]]
    host_names: list[str]
    more: int = 0  # consumers beyond MAX_PER_CERTIFICATE


def group(findings: Sequence[ConsumerFinding]) -> dict[str, KnownConsumers]:
    """The findings per certificate (lower-case name), pinned consumers first."""
    grouped: dict[str, list[ConsumerFinding]] = {}
    for finding in findings:
        grouped.setdefault(finding.reference.certificate.lower(), []).append(finding)
    known = {}
    for key, items in grouped.items():
        ordered = sorted(items, key=lambda f: (f.reference.version is None, f.reference.consumer_id))
        hosts: list[str] = []
        for finding in ordered:
            hosts += [h for h in finding.reference.host_names if h not in hosts]
        known[key] = KnownConsumers(
            certificate=items[0].reference.certificate,
            consumers=[f.entry() for f in ordered[:MAX_PER_CERTIFICATE]],
            host_names=hosts[:MAX_HOSTS_PER_CERTIFICATE],
            more=max(0, len(ordered) - MAX_PER_CERTIFICATE),
        )
    return known


class ConsumerStore:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    def save(self, known: Mapping[str, KnownConsumers], at: datetime, *, complete: bool) -> None:
        with storage_failure("The discovered consumers could not be saved"):
            for key, item in known.items():
                entity = {
                    "PartitionKey": PARTITION,
                    "RowKey": key,
                    "certificate": item.certificate,
                    "consumers": json.dumps(item.consumers, separators=(",", ":")),
                    "hostNames": json.dumps(item.host_names),
                    "more": item.more,
                    "discoveredAt": iso_utc(at),
                }
                self.table.upsert_entity(entity, mode=update_mode("replace"))
            if complete:
                for row in list(self.table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION})):
                    if row["RowKey"] not in known:
                        self.table.delete_entity(PARTITION, row["RowKey"])

    def all(self) -> dict[str, KnownConsumers]:
        """Every certificate's stored consumers (lower-case name); rows that cannot be read are skipped."""
        with storage_failure("The discovered consumers could not be read"):
            rows = list(self.table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION}))
        found = {}
        for row in rows:
            try:
                consumers = json.loads(row.get("consumers") or "[]")
                hosts = json.loads(row.get("hostNames") or "[]")
            except ValueError:
                continue
            if isinstance(consumers, list) and isinstance(hosts, list):
                found[row["RowKey"]] = KnownConsumers(
                    str(row.get("certificate") or row["RowKey"]),
                    [c for c in consumers if isinstance(c, dict)],
                    [str(h) for h in hosts],
                    int(row.get("more") or 0),
                )
        return found


def with_discovered(
    listed: Sequence[EndpointCheck], known: Mapping[str, KnownConsumers], limit: int = MAX_ENDPOINT_CHECKS
) -> tuple[EndpointCheck, ...]:
    """The hand-listed endpoints, then each discovered host name (port 443) that is not listed already for the same
    certificate; wildcard names cannot be asked for by SNI and are left out. At most `limit` in all."""
    seen = {(c.certificate.lower(), c.host) for c in listed}
    checks = list(listed)
    for item in known.values():
        for host in item.host_names:
            name = host.strip().rstrip(".").lower()
            if (item.certificate.lower(), name) in seen or not is_dns_name(name):
                continue
            seen.add((item.certificate.lower(), name))
            checks.append(EndpointCheck(certificate=item.certificate, host=name, address_host=name, port=443))
    return tuple(checks[:limit])
