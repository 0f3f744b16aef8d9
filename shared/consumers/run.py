"""The discovery run: which Azure resources use the vault's certificates, and which of them are behind.

Sequences the I/O — one Resource Graph query, paged (`shared.azure.resourcegraph`); Key Vault once per certificate and
once per pinned version (`shared.azure.keyvault`); a TLS probe of the host names of versionless consumers that do
not say what they serve (`shared.consumers.probes`); the consumer table (`shared.consumers.store`) — and emits one event
per consumer that is behind (the decisions: `shared.consumers.decisions`). With CONSUMER_SUBSCRIPTIONS empty nothing
is called at all. A Key Vault failure leaves that certificate's consumers unchecked, never the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from shared.azure.keyvault import StoredCertificate
from shared.azure.resourcegraph import QueryResult
from shared.consumers.decisions import DiscoverySummary, Version, decide, limited_event
from shared.consumers.probes import AddressOf, Probe, default_address, needs_probe, probe_hosts, with_probed
from shared.consumers.references import QUERY, Reference, references
from shared.consumers.store import ConsumerStore, group
from shared.core.errors import CertRenewError
from shared.core.events import Event
from shared.core.settings import ConsumerSettings
from shared.core.telemetry import emit_event
from shared.endpoints.probe import served_certificate

log = logging.getLogger("certrenew.consumers")


class CertificateVersions(Protocol):
    def current(self, name: str) -> StoredCertificate | None: ...

    def version(self, name: str, version: str) -> StoredCertificate | None: ...


class ResourceQuery(Protocol):
    def query(self, query: str, max_rows: int) -> QueryResult: ...


@dataclass(frozen=True)
class DiscoveryDependencies:
    settings: ConsumerSettings
    graph: Callable[[], ResourceQuery]  # made only when discovery is on
    key_vault: Callable[[], CertificateVersions]
    vault_url: str
    store: Callable[[], ConsumerStore] | None = None  # None: nothing is saved (the CLI's dry look)
    probe: Probe = served_certificate  # reads what a host name serves (TLS), for consumers that do not say
    address_of: AddressOf = default_address  # where a discovered host name is reached (port 443)


class _Versions:
    """Key Vault reads of one run, each at most once."""

    def __init__(self, key_vault: CertificateVersions) -> None:
        self.key_vault = key_vault
        self.read: dict[tuple[str, str | None], Version | None] = {}

    def get(self, name: str, version: str | None = None) -> Version | None:
        key = (name.lower(), version.lower() if version else None)
        if key not in self.read:
            self.read[key] = self._fetch(name, version)
        return self.read[key]

    def _fetch(self, name: str, version: str | None) -> Version | None:
        try:
            stored = self.key_vault.version(name, version) if version else self.key_vault.current(name)
        except CertRenewError as exc:  # KeyVaultError, IdentityError: safe to log
            log.warning("Consumer discovery: %s could not be read from Key Vault: %s", name, exc.message)
            return None
        if stored is None or not stored.thumbprint:
            return None
        return Version(stored.version, stored.thumbprint, stored.not_before, stored.expires_on)

    def pinned(self, reference: Reference, current: Version | None) -> Version | None:
        if reference.version is None or current is None or reference.version.lower() == current.version.lower():
            return None
        return self.get(reference.certificate, reference.version)


def _emit(event: tuple[Event, dict[str, Any]]) -> None:
    name, properties = event
    emit_event(name, properties)


def discover_consumers(
    deps: DiscoveryDependencies, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> DiscoverySummary:
    """One discovery run: query, decide, emit, save; the summary for the log."""
    settings = deps.settings
    if not settings.enabled:
        return DiscoverySummary(enabled=False)
    result = deps.graph().query(QUERY, settings.max_per_run)
    if result.limited:
        log.warning("Consumer discovery stopped after %d resources (CONSUMER_MAX_PER_RUN)", len(result.rows))
        _emit(limited_event(settings.max_per_run, result.total_records, len(result.rows)))
    versions = _Versions(deps.key_vault())
    at = now()
    found = [(r, versions.get(r.certificate)) for r in references(result.rows, deps.vault_url)]
    hosts = [(r.certificate, h) for r, current in found if needs_probe(r, current, at) for h in r.host_names]
    served = probe_hosts(hosts, deps.probe, deps.address_of) if hosts else {}
    findings = []
    for reference, current in found:
        if current is not None and needs_probe(reference, current, at):
            reference = with_probed(reference, current, served)
        finding = decide(reference, current, versions.pinned(reference, current), at)
        if finding.event is not None:
            _emit(finding.event)
        findings.append(finding)
    summary = DiscoverySummary(True, tuple(findings), len(result.rows), result.pages, result.limited)
    _emit(summary.event())
    if deps.store is not None:
        deps.store().save(group(summary.findings), now(), complete=not result.limited)
    return summary
