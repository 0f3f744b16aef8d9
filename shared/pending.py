"""Durable pending AppViewX renewals: what AVX renewed (or may have) that is not in Key Vault yet.

A record holds AVX ids, names, attempts and the last error — never certificate content, keys or passwords.
The backoff and give-up rules are pure functions; `PendingStore` is the table I/O.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceNotFoundError

from shared.errors import StateStoreError
from shared.tables import TABLE_ERRORS, update_mode
from shared.timestamps import iso_utc

if TYPE_CHECKING:  # the table SDK is imported where it is used, to keep cold start short
    from azure.data.tables import TableClient

PARTITION = "avx"
FIRST_RETRY = timedelta(minutes=15)
MAX_RETRY = timedelta(hours=24)

OPEN, COMPLETED, FAILED = "pending", "completed", "failed"


def next_attempt_at(failed_attempts: int, last_attempt: datetime) -> datetime:
    """After the n-th failed try, wait 15 min doubling per try, at most 24 h (cert-manager-style backoff)."""
    if failed_attempts <= 0:
        return last_attempt
    delay = FIRST_RETRY * (2 ** min(failed_attempts - 1, 16))
    return last_attempt + min(delay, MAX_RETRY)


def gives_up(created_at: datetime, now: datetime, max_days: float) -> bool:
    return now - created_at >= timedelta(days=max_days)


def is_due(record: PendingRecord, now: datetime) -> bool:
    return record.state == OPEN and record.next_attempt_at <= now


@dataclass(frozen=True)
class PendingRecord:
    pending_id: str
    state: str
    reason: str  # why it is pending: KEY_VAULT_STORE_FAILED, AVX_NO_CERTIFICATE, AVX_TIMEOUT
    storage: str  # "import" (PFX/PEM with key) or "merge" (into Key Vault's pending CSR)
    created_at: datetime
    next_attempt_at: datetime
    attempts: int = 0
    avx_resource_id: str | None = None
    avx_request_id: str | None = None
    requested_resource_id: str | None = None
    common_name: str | None = None
    serial_number: str | None = None  # the serial that was renewed (the old certificate)
    key_vault_name: str | None = None
    last_error: str | None = None
    key_vault_certificate_id: str | None = None
    completed_at: datetime | None = None
    caller: str | None = None

    @classmethod
    def new(cls, now: datetime, **fields: Any) -> PendingRecord:
        # A new record is tried at the first run after it was made.
        return cls(pending_id=uuid.uuid4().hex, state=OPEN, created_at=now, next_attempt_at=now, **fields)

    def failed_try(self, error: str, now: datetime, max_days: float) -> PendingRecord:
        attempts = self.attempts + 1
        if gives_up(self.created_at, now, max_days):
            return replace(self, attempts=attempts, last_error=error, state=FAILED, completed_at=now)
        return replace(self, attempts=attempts, last_error=error, next_attempt_at=next_attempt_at(attempts, now))

    def completed(self, key_vault_id: str, name: str, now: datetime) -> PendingRecord:
        return replace(
            self,
            attempts=self.attempts + 1,
            state=COMPLETED,
            key_vault_certificate_id=key_vault_id,
            key_vault_name=name,
            completed_at=now,
            last_error=None,
        )

    def public(self) -> dict[str, Any]:
        """The record as the status endpoint shows it (camelCase, ISO dates)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            camel = "".join(w.capitalize() if i else w for i, w in enumerate(key.split("_")))
            out[camel] = iso_utc(value) if isinstance(value, datetime) else value
        return out


def _to_entity(record: PendingRecord) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": PARTITION, "RowKey": record.pending_id}
    for key, value in asdict(record).items():
        if key != "pending_id" and value is not None:
            entity[key] = value
    return entity


def _from_entity(entity: dict[str, Any]) -> PendingRecord:
    fields = {k: entity.get(k) for k in PendingRecord.__dataclass_fields__ if k != "pending_id"}
    for key in ("created_at", "next_attempt_at", "completed_at"):
        value = fields.get(key)
        if isinstance(value, datetime) and value.tzinfo is None:
            fields[key] = value.replace(tzinfo=UTC)
    fields["attempts"] = int(fields.get("attempts") or 0)
    return PendingRecord(pending_id=entity["RowKey"], **fields)  # type: ignore[arg-type]


class PendingStore:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    def save(self, record: PendingRecord) -> PendingRecord:
        try:
            self.table.upsert_entity(_to_entity(record), mode=update_mode("replace"))
        except TABLE_ERRORS as exc:
            raise StateStoreError(f"The pending renewal could not be recorded: {type(exc).__name__}") from None
        return record

    def get(self, pending_id: str) -> PendingRecord | None:
        try:
            return _from_entity(self.table.get_entity(PARTITION, pending_id))
        except ResourceNotFoundError:
            return None
        except TABLE_ERRORS as exc:
            raise StateStoreError(f"The pending renewal could not be read: {type(exc).__name__}") from None

    def due(self, now: datetime) -> list[PendingRecord]:
        """Open records whose next attempt has come (one query; the table is small)."""
        try:
            entities = self.table.query_entities(
                "PartitionKey eq @pk and state eq @state", parameters={"pk": PARTITION, "state": OPEN}
            )
            records = [_from_entity(e) for e in entities]
        except TABLE_ERRORS as exc:
            raise StateStoreError(f"The pending renewals could not be listed: {type(exc).__name__}") from None
        return sorted((r for r in records if is_due(r, now)), key=lambda r: r.next_attempt_at)

    def all_records(self) -> list[PendingRecord]:
        """Every record, newest first (for the operator's status table)."""
        try:
            records = [
                _from_entity(e) for e in self.table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION})
            ]
        except TABLE_ERRORS as exc:
            raise StateStoreError(f"The pending renewals could not be listed: {type(exc).__name__}") from None
        return sorted(records, key=lambda r: r.created_at, reverse=True)
