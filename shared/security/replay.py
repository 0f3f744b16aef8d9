"""Signed requests are accepted once: each accepted signature is recorded with the table's conditional insert
(across instances), kept for the signature window plus a margin, so a byte-identical request sent again is refused.

The signature covers `{timestamp}.{body}`, and a timestamp older than the window is refused anyway, so a record
only needs to outlive the window; expired records are purged now and then, a bounded batch at a time.
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from azure.core.exceptions import ResourceExistsError

from shared.azure.tables import TABLE_ERRORS, delete_where, storage_failure
from shared.security.signature import MAX_SKEW_SECONDS

if TYPE_CHECKING:
    from azure.data.tables import TableClient

PARTITION = "signature"  # kept in the idempotency table: same lifetime class, no extra setting
KEEP_FOR = timedelta(seconds=2 * MAX_SKEW_SECONDS + 60)  # a timestamp up to 300 s ahead is valid until +600 s
PURGE_EVERY_SECONDS = 600.0
PURGE_BATCH = 200


def signature_row_key(timestamp: str, signature: str) -> str:
    return hashlib.sha256(f"{timestamp}.{signature.strip().lower()}".encode()).hexdigest()


class SignatureReplayStore:
    def __init__(self, table: TableClient, clock: type[datetime] = datetime) -> None:
        self.table = table
        self._clock = clock
        self._lock = threading.Lock()
        self._next_purge = 0.0

    def first_use(self, timestamp: str, signature: str) -> bool:
        """True when this signature was not accepted before (and now is recorded); False for a replay."""
        now = self._clock.now(UTC)
        entity = {
            "PartitionKey": PARTITION,
            "RowKey": signature_row_key(timestamp, signature),
            "expiresAt": now + KEEP_FOR,
        }
        with storage_failure("The request signature could not be recorded"):
            try:
                self.table.create_entity(entity)
            except ResourceExistsError:
                return False
        self._purge_now_and_then(now)
        return True

    def _purge_now_and_then(self, now: datetime) -> None:
        with self._lock:
            if time.monotonic() < self._next_purge:
                return
            self._next_purge = time.monotonic() + PURGE_EVERY_SECONDS
        try:
            expired = self.table.query_entities(
                "PartitionKey eq @pk and expiresAt lt @now",
                parameters={"pk": PARTITION, "now": now},
                select=["PartitionKey", "RowKey"],
                results_per_page=PURGE_BATCH,
            )
            for count, entity in enumerate(expired):
                if count >= PURGE_BATCH:
                    break
                self.table.delete_entity(PARTITION, entity["RowKey"])
        except TABLE_ERRORS:
            pass  # housekeeping only: the next purge tries again

    def purge_expired(self, now: datetime, limit: int) -> int:
        """Remove at most `limit` expired signature records (the timer's housekeeping; first_use purges too)."""
        return delete_where(
            self.table, "PartitionKey eq @pk and expiresAt lt @now", {"pk": PARTITION, "now": now}, limit
        )
