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

A version whose renewal failed (AVX refused it, e.g. 417 OPEN_WORK_ORDERS_FOUND, or its renewal record ended failed)
stays retryable: its claim is `failed` with the count of consecutive failures (`failures`), the last one's time
(`lastFailureAt`) and reason (`lastReason`) — the one place the event path keeps a version's failures. A later event
takes it over once `shared.appviewx.backoff.next_attempt_at` has come (1 h doubling to 32 h), keeping the count.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.appviewx.backoff import next_attempt_at
from shared.azure.tables import TABLE_ERRORS, claim_row, storage_failure, update_mode

if TYPE_CHECKING:
    from azure.data.tables import TableClient

EVENT_PARTITION = "kvevent"
VERSION_PARTITION = "kvversion"
# The function timeout is 10 minutes: a claim running longer belongs to an invocation that died.
ABANDONED_AFTER = timedelta(minutes=15)


class ClaimState(enum.StrEnum):
    """A claim's stored `state`."""

    RUNNING = "running"  # its run has not finished (or died)
    DONE = "done"  # finished; `result` says what happened
    FAILED = "failed"  # a version's renewal failed: retryable after its backoff


class ClaimOutcome(enum.Enum):
    NEW = "new"  # this run holds the claim
    DONE = "done"  # handled before: nothing to do
    HELD = "held"  # another run holds it (or its renewal record does): nothing to do
    BACKOFF = "backoff"  # its renewal failed and the backoff has not passed: nothing is sent


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    pending_id: str | None = None  # the renewal record a version claim is tied to
    result: str | None = None  # what the earlier run recorded
    failures: int = 0  # consecutive failed renewals of the version (kept when a failed claim is taken over)
    last_reason: str | None = None  # the last failure's reason


FAILURE_FIELDS = ("failures", "lastFailureAt", "lastReason")


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def failures_of(existing: dict[str, Any]) -> int:
    """A claim's count of consecutive failures; a claim older versions finished `failed <code>` counts one."""
    count = existing.get("failures")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        return count
    result = str(existing.get("result") or "")
    return 1 if existing.get("state") == ClaimState.DONE and result.startswith("failed") else 0


def version_key(vault_host: str, name: str, version: str) -> str:
    return _digest(f"{vault_host.lower()}|{name.lower()}|{version.lower()}")


def event_key(event_id: str) -> str:
    return _digest(event_id)


def _digest(text: str) -> str:
    # Table keys may not hold / \\ # ?; a digest fits any event id.
    return hashlib.sha256(text.encode()).hexdigest()


def decide(existing: dict[str, Any], now: datetime) -> ClaimOutcome:
    """A second claim of a key: done, held, or taken over (NEW) when its run died before it could matter."""
    failures = failures_of(existing)
    if failures and existing.get("state") in (ClaimState.FAILED, ClaimState.DONE):
        failed_at = _time(existing.get("lastFailureAt")) or _time(existing.get("createdAt")) or now
        return ClaimOutcome.NEW if now >= next_attempt_at(failed_at, failures) else ClaimOutcome.BACKOFF
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

        def stale(existing: dict[str, Any]) -> bool:
            if decide(existing, now) is not ClaimOutcome.NEW:
                return False
            # Taken over: a failed version's count and last reason go on in the row that replaces it.
            entity.update({k: existing[k] for k in FAILURE_FIELDS if existing.get(k) is not None})
            entity["failures"] = failures_of(existing)
            return True

        row = claim_row(
            self.table,
            entity,
            stale=stale,
            insert_failure="The Key Vault event could not be claimed",
            read_failure="The Key Vault event claim could not be read",
        )
        if row.taken:
            return Claim(
                ClaimOutcome.NEW, failures=int(entity.get("failures") or 0), last_reason=entity.get("lastReason")
            )
        existing = row.existing
        if existing is None:  # another run took it over (or released it) meanwhile
            return Claim(ClaimOutcome.HELD)
        return Claim(
            decide(existing, now),
            existing.get("pendingId") or None,
            existing.get("result"),
            failures_of(existing),
            existing.get("lastReason"),
        )

    def fail(self, partition: str, key: str, reason: str, failures: int, now: datetime) -> None:
        """The version's renewal failed (`failures` in a row, the last now): retryable after its backoff. A claim
        tied to a failed renewal record is untied (pendingId emptied) so its own rule applies again."""
        with storage_failure("The Key Vault event claim could not be updated"):
            self.table.update_entity(
                {
                    "PartitionKey": partition,
                    "RowKey": key,
                    "state": ClaimState.FAILED,
                    "failures": failures,
                    "lastFailureAt": now,
                    "lastReason": reason[:256],
                    "result": f"failed {reason}"[:256],
                    "pendingId": "",
                },
                mode=update_mode("merge"),
            )

    def attach(self, partition: str, key: str, pending_id: str) -> None:
        """Tie a version claim to its renewal record, before AVX is called (raises: AVX must not be called then)."""
        with storage_failure("The Key Vault event claim could not be updated"):
            self.table.update_entity(
                {"PartitionKey": partition, "RowKey": key, "pendingId": pending_id}, mode=update_mode("merge")
            )

    def finish(self, partition: str, key: str, result: str) -> None:
        """Mark the claim done with what happened; a lost update only means a later event finds it `running`."""
        try:
            self.table.update_entity(
                {
                    "PartitionKey": partition,
                    "RowKey": key,
                    "state": ClaimState.DONE,
                    "result": result[:256],
                    "failures": 0,
                },
                mode=update_mode("merge"),
            )
        except TABLE_ERRORS:
            pass

    def release(self, partition: str, key: str) -> None:
        """Forget a claim whose work failed before anything happened, so a redelivery can try again."""
        try:
            self.table.delete_entity(partition, key)
        except TABLE_ERRORS:
            pass
