"""Idempotent webhook calls: an `Idempotency-Key` is claimed with the table's conditional insert, so concurrent
duplicates (on any instance) cannot both reach AVX; a repeat within 24 h gets the first answer back.

Before AVX is called the claim is tied to the renewal record (`attach`): a claim whose invocation died after that
point is never started anew (AVX may have renewed); a repeat is answered from the record instead."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.azure.tables import TABLE_ERRORS, claim_row, delete_where, update_mode

if TYPE_CHECKING:  # the table SDK is imported where it is used, to keep cold start short
    from azure.data.tables import TableClient

KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,128}$")  # 1-128 visible ASCII characters
REPLAY_WINDOW = timedelta(hours=24)
# A claim still "running" after this long belongs to an invocation that died (the function timeout is 10 min).
ABANDONED_AFTER = timedelta(minutes=15)
PARTITION = "webhook"


class KeyState(StrEnum):
    """A claimed key's stored `state`."""

    RUNNING = "running"  # its invocation has not answered (yet)
    COMPLETED = "completed"  # answered: the answer is stored for repeats


class ClaimOutcome(StrEnum):
    """What a claim of a key came to."""

    NEW = "new"  # this request holds the key
    REPLAY = "replay"  # answered before: the first answer again
    IN_PROGRESS = "in-progress"  # another request holds it
    MISMATCH = "mismatch"  # the key was used for a different request
    RECORDED = "recorded"  # its invocation died after AVX: answered from the renewal record


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    status: int | None = None
    body: dict[str, Any] | None = None
    pending_id: str | None = None  # RECORDED: the renewal record of a claim whose invocation died after AVX


def valid_key(key: str) -> bool:
    return bool(KEY_PATTERN.match(key))


def scoped_key(caller_scope: str, key: str) -> str:
    """The key as stored: per caller, so caller B sending A's key neither gets A's answer nor learns it exists."""
    return f"{caller_scope}\n{key}"


def fingerprint(body: bytes, query: dict[str, str]) -> str:
    """What makes two requests "the same": the body and the query the app reads."""
    digest = hashlib.sha256(body)
    digest.update(json.dumps(sorted(query.items())).encode())
    return digest.hexdigest()


def decide(existing: dict[str, Any], request_fingerprint: str, now: datetime) -> ClaimOutcome:
    """What a repeat of a claimed key gets: the first answer, 409, 422, or a fresh start when the claim is stale."""
    created = existing.get("createdAt")
    if isinstance(created, datetime) and created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    if not isinstance(created, datetime) or now - created >= REPLAY_WINDOW:
        return ClaimOutcome.NEW
    if existing.get("state") == KeyState.RUNNING and now - created >= ABANDONED_AFTER and not existing.get("pendingId"):
        return ClaimOutcome.NEW  # a dead invocation that provably never reached AVX (no renewal record tied to the key)
    if existing.get("fingerprint") != request_fingerprint:
        return ClaimOutcome.MISMATCH
    if existing.get("state") == KeyState.RUNNING and now - created >= ABANDONED_AFTER:
        return (
            ClaimOutcome.RECORDED
        )  # a dead invocation after AVX may have acted: answer from its record, never renew again
    return ClaimOutcome.REPLAY if existing.get("state") == KeyState.COMPLETED else ClaimOutcome.IN_PROGRESS


def scope(key: str) -> str:
    """What the renewal record keeps of the caller's key: its digest, never the key itself."""
    return _row_key(key)


def _row_key(key: str) -> str:
    # Table keys may not hold / \\ # ?; a digest also keeps callers' keys out of storage.
    return hashlib.sha256(key.encode()).hexdigest()


class IdempotencyStore:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    def claim(self, key: str, request_fingerprint: str, now: datetime | None = None) -> Claim:
        now = now or datetime.now(UTC)
        entity = {
            "PartitionKey": PARTITION,
            "RowKey": _row_key(key),
            "state": KeyState.RUNNING,
            "fingerprint": request_fingerprint,
            "createdAt": now,
        }
        row = claim_row(
            self.table,
            entity,
            stale=lambda existing: decide(existing, request_fingerprint, now) is ClaimOutcome.NEW,
            insert_failure="The idempotency key could not be recorded",
            read_failure="The idempotency key could not be read",
        )
        if row.taken:
            return Claim(ClaimOutcome.NEW)
        existing = row.existing
        if existing is None:  # another request took over or released the key meanwhile
            return Claim(ClaimOutcome.IN_PROGRESS)
        outcome = decide(existing, request_fingerprint, now)
        if outcome is ClaimOutcome.REPLAY:
            return Claim(
                ClaimOutcome.REPLAY, int(existing.get("status", 500)), json.loads(existing.get("body") or "{}")
            )
        if outcome is ClaimOutcome.RECORDED:
            return Claim(ClaimOutcome.RECORDED, pending_id=str(existing.get("pendingId")))
        return Claim(outcome)

    def attach(self, key: str, pending_id: str) -> None:
        """Tie the running claim to its renewal record, just before AVX is called."""
        try:
            self.table.update_entity(
                {"PartitionKey": PARTITION, "RowKey": _row_key(key), "pendingId": pending_id},
                mode=update_mode("merge"),
            )
        except TABLE_ERRORS:
            pass  # the record itself is written; a lost link only matters if this invocation dies too

    def complete(self, key: str, status: int, body: dict[str, Any]) -> None:
        try:
            self.table.update_entity(
                {
                    "PartitionKey": PARTITION,
                    "RowKey": _row_key(key),
                    "state": KeyState.COMPLETED,
                    "status": status,
                    "body": json.dumps(body),
                },
                mode=update_mode("merge"),
            )
        except TABLE_ERRORS:
            # The renewal itself is done and answered; a lost replay record only means a repeat is treated anew.
            pass

    def release(self, key: str) -> None:
        """Forget a claim whose invocation failed unexpectedly, so the caller's retry is not refused with 409."""
        try:
            self.table.delete_entity(PARTITION, _row_key(key))
        except TABLE_ERRORS:
            pass

    def purge_expired(self, now: datetime, limit: int) -> int:
        """Remove at most `limit` keys claimed over the replay window ago (a repeat after it is a new request)."""
        return delete_where(
            self.table,
            "PartitionKey eq @pk and createdAt lt @cutoff",
            {"pk": PARTITION, "cutoff": now - REPLAY_WINDOW},
            limit,
        )
