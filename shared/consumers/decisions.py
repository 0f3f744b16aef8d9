"""Certificate consumers, the decisions: does a consumer use Key Vault's current version? Pure, no I/O.

- A consumer pinned to a version that is not the current one never moves to a renewal: `CertificateConsumerPinned`
  (both versions, and the days left of the pinned one).
- A versionless consumer moves on its own schedule (Application Gateway and API Management poll about every 4 hours,
  App Service syncs within about 24 hours): when what it serves (its thumbprint) is still another certificate a day
  after the renewal (`STALE_AFTER`), `CertificateConsumerStale`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.azure.resourcegraph import MAX_PAGES
from shared.consumers.references import Reference
from shared.core.events import Event, Source
from shared.core.timestamps import iso_utc, utc
from shared.endpoints.decisions import days_left

STALE_AFTER = timedelta(hours=24)  # beyond the slowest documented sync (App Service, about 24 h)


@dataclass(frozen=True)
class Version:
    """One version of a Key Vault certificate, as far as the decisions need it."""

    version: str
    thumbprint: str
    not_before: datetime | None
    expires_on: datetime | None


@dataclass(frozen=True)
class ConsumerFinding:
    reference: Reference
    outcome: str  # current | pinned | stale | waiting (renewed less than a day ago) | unchecked
    event: tuple[Event, dict[str, Any]] | None = None

    def entry(self) -> dict[str, Any]:
        """The consumer as the inventory and the consumer table show it."""
        entry: dict[str, Any] = {
            "id": self.reference.consumer_id,
            "type": self.reference.consumer_type,
            "follows": self.reference.follows,
        }
        if self.reference.version is not None:
            entry["version"] = self.reference.version
        entry["status"] = self.outcome
        return entry


def _base(reference: Reference) -> dict[str, Any]:
    return {
        "source": Source.DISCOVERY,
        "certificateName": reference.certificate,
        "consumerId": reference.consumer_id,
        "consumerType": reference.consumer_type,
    }


def decide(reference: Reference, current: Version | None, pinned: Version | None, now: datetime) -> ConsumerFinding:
    """What `reference` comes to, given Key Vault's current version (None: not known) and, for a pinned reference,
    the pinned version (None when Key Vault could not show it)."""
    if current is None:
        return ConsumerFinding(reference, "unchecked")
    if reference.version is not None:
        if reference.version.lower() == current.version.lower():
            return ConsumerFinding(reference, "current")
        expires = pinned.expires_on if pinned else None
        return ConsumerFinding(
            reference,
            "pinned",
            (
                Event.CONSUMER_PINNED,
                {
                    **_base(reference),
                    "pinnedVersion": reference.version,
                    "currentVersion": current.version,
                    "expiryDate": iso_utc(expires),
                    "daysLeft": days_left(expires, now),
                },
            ),
        )
    served = reference.served_thumbprint
    if served is None or served.upper() == current.thumbprint.upper():
        return ConsumerFinding(reference, "current")
    renewed_at = current.not_before
    if renewed_at is None or utc(now) - utc(renewed_at) < STALE_AFTER:
        return ConsumerFinding(reference, "waiting")
    return ConsumerFinding(
        reference,
        "stale",
        (
            Event.CONSUMER_STALE,
            {
                **_base(reference),
                "servedThumbprint": served.upper(),
                "expectedThumbprint": current.thumbprint.upper(),
                "currentVersion": current.version,
                "renewedAt": iso_utc(renewed_at),
                "hostNames": ", ".join(reference.host_names),
            },
        ),
    )


@dataclass(frozen=True)
class DiscoverySummary:
    enabled: bool
    findings: tuple[ConsumerFinding, ...] = ()
    rows: int = 0
    pages: int = 0
    limited: bool = False

    def count(self, outcome: str) -> int:
        return sum(1 for f in self.findings if f.outcome == outcome)

    def event(self) -> tuple[Event, dict[str, Any]]:
        return Event.CONSUMER_DISCOVERY_COMPLETED, {
            "source": Source.DISCOVERY,
            "consumers": len(self.findings),
            "pinned": self.count("pinned"),
            "stale": self.count("stale"),
            "rows": self.rows,
            "pages": self.pages,
            "limited": self.limited,
        }

    def lines(self) -> list[str]:
        if not self.enabled:
            return ["Consumer discovery: CONSUMER_SUBSCRIPTIONS is empty; discovery is off"]
        head = (
            f"Consumer discovery: {len(self.findings)} consumer(s) of the vault's certificates in {self.rows} "
            f"resource(s), {self.pages} page(s): {self.count('pinned')} pinned to an old version, "
            f"{self.count('stale')} stale, {self.count('current')} current"
            + (" (stopped at CONSUMER_MAX_PER_RUN)" if self.limited else "")
        )
        return [head, *(f"  {_line(f)}" for f in self.findings)]


def _line(finding: ConsumerFinding) -> str:
    reference = finding.reference
    follows = f"pinned to {reference.version}" if reference.version else "latest"
    hosts = f" [{', '.join(reference.host_names)}]" if reference.host_names else ""
    return f"{finding.outcome:<9} {reference.certificate} <- {reference.consumer_type} {reference.consumer_id} ({follows}){hosts}"


def limited_event(limit: int, total: int | None, read: int) -> tuple[Event, dict[str, Any]]:
    matched = f"{total} resource(s)" if total is not None else "more resources"
    return Event.CONSUMER_DISCOVERY_LIMITED, {
        "source": Source.DISCOVERY,
        "limit": limit,
        "totalRecords": total,
        "rows": read,
        "message": f"Resource Graph matched {matched}; this run read {read} (CONSUMER_MAX_PER_RUN={limit}, at most "
        f"{MAX_PAGES} pages)",
    }
