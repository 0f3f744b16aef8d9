"""Once per Key Vault event, and at most one renewal per certificate version, across deliveries and instances.

Event Grid delivers at least once, and Key Vault sends NearExpiry and later Expired for the same version. Two claims,
each a conditional insert (the table refuses a second insert of the same key, on any instance), in the idempotency
table (`IDEMPOTENCY_TABLE`, partitions apart from the webhook's keys):

- `kvevent` / digest of the event id: a redelivered event is handled once;
- `kvversion` / digest of vault host + certificate name + version: one renewal per version. Before AVX is called
  the claim is tied to the renewal record (`attach`): a version whose renewal may have happened is never renewed
  again (the record is completed by `complete_pending`), whatever happens to the invocation.

A claim still `running` after ABANDONED_AFTER belongs to an invocation that died: it is taken over (ETag-conditional,
so by one run only) unless it is tied to a renewal record. A claim whose work failed before anything happened is
released, so Event Grid's retry can try again.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.azure.tables import TABLE_ERRORS, claim_row, delete_where, storage_failure, update_mode

if TYPE_CHECKING:
    from azure.data.tables import TableClient

EVENT_PARTITION = "kvevent"
VERSION_PARTITION = "kvversion"
# The function timeout is 10 minutes: a claim running longer belongs to an invocation that died.
ABANDONED_AFTER = timedelta(minutes=15)
# Event Grid retries a delivery for up to 24 hours: an event claim older than this can never see that event again.
EVENT_CLAIM_KEPT = timedelta(days=7)


class ClaimState(enum.StrEnum):
    """A claim's stored `state`."""

    RUNNING = "running"  # its run has not finished (or died)
    DONE = "done"  # finished; `result` says what happened


class ClaimOutcome(enum.Enum):
    NEW = "new"  # this run holds the claim
    DONE = "done"  # handled before: nothing to do
    HELD = "held"  # another run holds it (or its renewal record does): nothing to do


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    pending_id: str | None = None  # the renewal record a version claim is tied to
    result: str | None = None  # what the earlier run recorded
    retryable: bool = False  # the earlier run's renewal was refused before anything was renewed


def version_key(vault_host: str, name: str, version: str) -> str:
    return _digest(f"{vault_host.lower()}|{name.lower()}|{version.lower()}")


def event_key(event_id: str) -> str:
    return _digest(event_id)


def _digest(text: str) -> str:
    # Table keys may not hold / \\ # ?; a digest fits any event id.
    return hashlib.sha256(text.encode()).hexdigest()


def decide(existing: dict[str, Any], now: datetime) -> ClaimOutcome:
    """A second claim of a key: done, held, or taken over (NEW) when its run died before it could matter."""
    if existing.get("state") == ClaimState.DONE:
        return ClaimOutcome.DONE
    if existing.get("pendingId"):
        return ClaimOutcome.HELD  # AVX may have renewed: the renewal record is completed by complete_pending
    created = existing.get("createdAt")
    if isinstance(created, datetime) and created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    if isinstance(created, datetime) and now - created < ABANDONED_AFTER:
        return ClaimOutcome.HELD
    return ClaimOutcome.NEW


class EventClaims:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    def claim(self, partition: str, key: str, detail: dict[str, str], now: datetime | None = None) -> Claim:
        """Take the claim `partition`/`key` (StateStoreError when the table cannot be reached)."""
        now = now or datetime.now(UTC)
        entity: dict[str, Any] = {
            "PartitionKey": partition,
            "RowKey": key,
            "state": ClaimState.RUNNING,
            "createdAt": now,
        }
        entity.update({k: v[:256] for k, v in detail.items() if v})
        row = claim_row(
            self.table,
            entity,
            stale=lambda existing: decide(existing, now) is ClaimOutcome.NEW,
            insert_failure="The Key Vault event could not be claimed",
            read_failure="The Key Vault event claim could not be read",
        )
        if row.taken:
            return Claim(ClaimOutcome.NEW)
        existing = row.existing
        if existing is None:  # another run took it over (or released it) meanwhile
            return Claim(ClaimOutcome.HELD)
        return Claim(
            decide(existing, now), existing.get("pendingId"), existing.get("result"), existing.get("retryable") is True
        )

    def attach(self, partition: str, key: str, pending_id: str) -> None:
        """Tie a version claim to its renewal record, before AVX is called (raises: AVX must not be called then)."""
        with storage_failure("The Key Vault event claim could not be updated"):
            self.table.update_entity(
                {"PartitionKey": partition, "RowKey": key, "pendingId": pending_id}, mode=update_mode("merge")
            )

    def finish(self, partition: str, key: str, result: str, *, retryable: bool = False) -> None:
        """Mark the claim done with what happened (`retryable`: nothing was renewed, a later attempt may try again
        after its backoff); a lost update only means a later event finds it `running`."""
        entity = {"PartitionKey": partition, "RowKey": key, "state": ClaimState.DONE, "result": result[:256]}
        if retryable:
            entity["retryable"] = True
        try:
            self.table.update_entity(entity, mode=update_mode("merge"))
        except TABLE_ERRORS:
            pass

    def release(self, partition: str, key: str) -> None:
        """Forget a claim whose work failed before anything happened, so a redelivery can try again."""
        try:
            self.table.delete_entity(partition, key)
        except TABLE_ERRORS:
            pass

    def purge_expired(self, now: datetime, version_cutoff: datetime, limit: int) -> int:
        """Remove at most `limit` claims: events claimed over EVENT_CLAIM_KEPT ago, and version claims made before
        `version_cutoff` (the record retention: a certificate version that old has expired; a public certificate
        lives at most 398 days)."""
        events = delete_where(
            self.table,
            "PartitionKey eq @pk and createdAt lt @cutoff",
            {"pk": EVENT_PARTITION, "cutoff": now - EVENT_CLAIM_KEPT},
            limit,
        )
        versions = delete_where(
            self.table,
            "PartitionKey eq @pk and createdAt lt @cutoff",
            {"pk": VERSION_PARTITION, "cutoff": version_cutoff},
            limit - events,
        )
        return events + versions
