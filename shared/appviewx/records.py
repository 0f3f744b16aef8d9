"""Renewal records of the AppViewX path: written before AVX is called, updated by every outcome.

A record holds AVX ids, names, what is being replaced, attempts and the last error — never certificate content, keys
or passwords. States: `accepted` (written before AVX was called; AVX may be acting), `pending` (AVX renewed or may
have; not in Key Vault yet), `renewed` (stored in Key Vault), `failed` (with its reason). Rows written by older
versions with state `completed` read as `renewed`.

Whoever works on an open record holds its lease (`lease_owner`, `lease_until`), taken and saved with ETag-conditional
updates, so two runs (or a run and the webhook) never store the same record twice. The backoff and give-up rules are
pure functions (`shared.appviewx.backoff`); `PendingStore` is the table I/O.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.appviewx.backoff import gives_up, record_retry_at
from shared.appviewx.record_fields import (  # re-exported: the record's states live beside its field checks
    OPEN_STATES,
    RenewalState,
    UnreadableRecord,
    checked_field,
    shown_as_outcome,
)
from shared.azure.last_outcomes import LastOutcome, OutcomesByVault
from shared.azure.tables import storage_failure, update_mode
from shared.core.errors import StateStoreError
from shared.core.events import Source
from shared.core.redaction import redact
from shared.core.timestamps import iso_utc

if TYPE_CHECKING:  # the table SDK is imported where it is used, to keep cold start short
    from azure.data.tables import TableClient

log = logging.getLogger("certrenew.records")
PARTITION = "avx"
# A lease outlives the invocation holding it (the function timeout is 10 min); after it, the holder is presumed dead.
LEASE = timedelta(minutes=15)


GAVE_UP = "PENDING_GAVE_UP"
# A write-ahead record whose renewal never reached AVX (tying it to its caller failed, or the process died before
# the save that marks it sent): it ends failed with this reason, is never searched for in AVX and alerts nobody.
NOT_SENT = "NOT_SENT"
# An `accepted` record whose renewal waits on the renewal queue: AVX has not been called for it. Only the queue
# function claims it (`claim_queued`); the timer looks at it again after QUEUED_HOLD and ends it failed
# (QUEUE_MESSAGE_LOST) only once its message can no longer arrive: past the message's expiry as the queue reported it
# on a delivery (`queue_expires_at`), else past the queue's default time-to-live from the record's creation. Never on
# age alone while the message may still be delivered (a late message is honoured: the record says what to do).
QUEUED = "QUEUED"
QUEUED_HOLD = timedelta(hours=2)
# Azure Queue Storage's default message time-to-live (Put Message `messagettl`; the output binding sets none): after
# it the queue deletes the message, so it can no longer arrive.
QUEUE_MESSAGE_TTL = timedelta(days=7)


class RecordTaken(Exception):
    """Another run changed the record since it was read (its ETag no longer matches)."""


def is_due(record: PendingRecord, now: datetime, ignore_retry_delay: bool = False) -> bool:
    """Open, its next try has come, and nobody holds a live lease on it. `ignore_retry_delay` (the operator's
    `complete-pending --now`): its retry delay need not have passed, unless it waits on the renewal queue (the queue
    function settles it; the timer only after QUEUED_HOLD, when its message is lost)."""
    leased = record.lease_until is not None and record.lease_until > now
    if record.state not in OPEN_STATES or leased:
        return False
    return record.next_attempt_at <= now or (ignore_retry_delay and not record.is_queued)


@dataclass(frozen=True)
class PendingRecord:
    """One AppViewX renewal, from before AVX is called until it is in Key Vault (or failed for good)."""

    pending_id: str
    state: RenewalState
    reason: str  # why it is in its state: ACCEPTED, AVX_TIMEOUT, AVX_NO_CERTIFICATE, KEY_VAULT_STORE_FAILED, ...
    storage: str  # "import" (PFX/PEM with key) or "merge" (into Key Vault's pending CSR)
    created_at: datetime
    next_attempt_at: datetime
    attempts: int = 0
    avx_resource_id: str | None = None  # as AVX's renew answer named it (the renewed certificate's id)
    avx_request_id: str | None = None
    requested_resource_id: str | None = None
    common_name: str | None = None
    serial_number: str | None = None  # the serial of the certificate being replaced
    replaced_valid_from: str | None = None  # validity of the certificate being replaced, as AVX listed it
    replaced_valid_to: str | None = None
    key_vault_name: str | None = None
    key_vault_url: str | None = None  # the vault it is stored in (one of KEY_VAULT_URLS); None: the default vault
    last_error: str | None = None
    key_vault_certificate_id: str | None = None
    completed_at: datetime | None = None
    caller: str | None = None
    idempotency_scope: str | None = None  # digest of the caller's Idempotency-Key, when one was given
    lease_owner: str | None = None
    lease_until: datetime | None = None
    # False from the write-ahead until the save that precedes the AVX call (True): a record never marked sent never
    # reached AVX. None on rows older versions wrote: they may have, and are completed as before.
    sent_to_avx: bool | None = None
    # The queue message's expiry as the queue reported it on a delivery (its own fact, for the lost-message rule).
    queue_expires_at: datetime | None = None
    etag: str | None = field(default=None, compare=False, repr=False)  # of the row as read; never stored

    @classmethod
    def new(cls, now: datetime, **fields: Any) -> PendingRecord:
        # A new record is tried at the first run after it was made.
        fields.setdefault("state", RenewalState.PENDING)
        return cls(pending_id=uuid.uuid4().hex, created_at=now, next_attempt_at=now, **fields)

    @classmethod
    def accepted(cls, now: datetime, owner: str, **fields: Any) -> PendingRecord:
        """The write-ahead record, leased by the invocation about to call AVX."""
        return cls.new(
            now,
            state=RenewalState.ACCEPTED,
            reason="ACCEPTED",
            lease_owner=owner,
            lease_until=now + LEASE,
            sent_to_avx=False,
            **fields,
        )

    @classmethod
    def queued(cls, now: datetime, **fields: Any) -> PendingRecord:
        """The record of an asynchronous renewal, written before its queue message; nobody holds it yet."""
        return replace(
            cls.new(now, state=RenewalState.ACCEPTED, reason=QUEUED, sent_to_avx=False, **fields),
            next_attempt_at=now + QUEUED_HOLD,
        )

    @property
    def is_queued(self) -> bool:
        """Waiting on the renewal queue: AVX has not been called for it."""
        return self.state is RenewalState.ACCEPTED and self.reason == QUEUED

    @property
    def never_sent(self) -> bool:
        """A write-ahead record that was never marked sent: AVX was never called for it (nothing to search for)."""
        return self.state is RenewalState.ACCEPTED and self.sent_to_avx is False and not self.is_queued

    def queue_message_gone(self, now: datetime) -> bool:
        """The queued record's message can no longer arrive: past its expiry (as a delivery reported it, else the
        queue's default time-to-live from the record's creation)."""
        return now >= (self.queue_expires_at or self.created_at + QUEUE_MESSAGE_TTL)

    def sending(self) -> PendingRecord:
        """Marked sent to AVX: saved right before the AVX call, so a record without the mark never reached AVX."""
        return replace(self, sent_to_avx=True)

    def calling_avx(self, now: datetime, **fields: Any) -> PendingRecord:
        """A queued record about to be sent to AVX (marked sent in the save that precedes the call): from here on
        it is an ordinary write-ahead record (the timer completes it once its lease runs out, never renewing again)."""
        return replace(self, reason="ACCEPTED", next_attempt_at=now, sent_to_avx=True, **fields)

    def requeued(self, error: str, now: datetime) -> PendingRecord:
        """Back on the queue after a failure that provably came before AVX acted (the queue retries it)."""
        return replace(
            self,
            reason=QUEUED,
            last_error=_short(error),
            lease_until=None,
            next_attempt_at=now + QUEUED_HOLD,
            sent_to_avx=False,
        )

    def claimed(self, owner: str, now: datetime) -> PendingRecord:
        return replace(self, lease_owner=owner, lease_until=now + LEASE)

    def pending(self, reason: str, message: str | None, now: datetime) -> PendingRecord:
        """Not stored yet, to be tried by the next run (the webhook's first try ends here)."""
        return replace(
            self,
            state=RenewalState.PENDING,
            reason=reason,
            last_error=_short(message),
            next_attempt_at=now,
            lease_until=None,
        )

    def failed_try(self, error: str, now: datetime, max_days: float) -> PendingRecord:
        attempts = self.attempts + 1
        if gives_up(self.created_at, now, max_days):
            return replace(
                self,
                attempts=attempts,
                last_error=_short(error),
                state=RenewalState.FAILED,
                reason=GAVE_UP,
                completed_at=now,
                lease_until=None,
            )
        return replace(
            self,
            state=RenewalState.PENDING,
            attempts=attempts,
            last_error=_short(error),
            next_attempt_at=record_retry_at(attempts, now),
            lease_until=None,
        )

    def failed(self, reason: str, message: str | None, now: datetime) -> PendingRecord:
        return replace(
            self,
            state=RenewalState.FAILED,
            reason=reason,
            last_error=_short(message),
            completed_at=now,
            lease_until=None,
        )

    def renewed(self, key_vault_id: str, name: str, now: datetime) -> PendingRecord:
        return replace(
            self,
            attempts=self.attempts + 1,
            state=RenewalState.RENEWED,
            reason="RENEWED",
            key_vault_certificate_id=key_vault_id,
            key_vault_name=name,
            completed_at=now,
            last_error=None,
            lease_until=None,
        )

    completed = renewed  # the name older callers used

    def public(self) -> dict[str, Any]:
        """The record as the status endpoint shows it (camelCase, ISO dates; no lease internals)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key in ("etag", "lease_owner", "idempotency_scope"):
                continue
            camel = "".join(w.capitalize() if i else w for i, w in enumerate(key.split("_")))
            out[camel] = iso_utc(value) if isinstance(value, datetime) else value
        return out


def _short(message: str | None) -> str | None:
    """A record's lastError: at most 1,000 characters, without any secret the redaction guard knows (the status
    route shows it)."""
    return redact(message[:1000]) if message else message


def _to_entity(record: PendingRecord) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": PARTITION, "RowKey": record.pending_id}
    for key, value in asdict(record).items():
        if key not in ("pending_id", "etag") and value is not None:
            entity[key] = value
    return entity


def _from_entity(entity: Any) -> PendingRecord:
    """The record a row holds (UnreadableRecord, a StateStoreError, when a field has the wrong type)."""
    fields = {
        k: checked_field(k, entity.get(k))
        for k in PendingRecord.__dataclass_fields__
        if k not in ("pending_id", "etag")
    }
    if not isinstance(fields["storage"], str) or not isinstance(fields["reason"], str):
        raise UnreadableRecord("A renewal record has no storage or reason")
    metadata = getattr(entity, "metadata", None) or {}
    return PendingRecord(pending_id=str(entity["RowKey"]), etag=metadata.get("etag"), **fields)  # type: ignore[arg-type]


def read_rows(entities: list[dict[str, Any]]) -> tuple[list[PendingRecord], list[str]]:
    """The rows that read as records, and the keys of those that do not (each logged with why): one row no version of
    the app wrote cannot hide every other record from completion, the status table or the inventory."""
    records, unreadable = [], []
    for entity in entities:
        try:
            records.append(_from_entity(entity))
        except StateStoreError as exc:
            log.warning("Renewal record %s skipped: %s", str(entity.get("RowKey"))[:40], exc.message)
            unreadable.append(str(entity.get("RowKey"))[:64])
    return records, unreadable


@dataclass(frozen=True)
class OpenRows:
    """The open rows of one completion pass: the records due, the unreadable rows not reported yet, and the open
    records not due (waiting out a retry delay, on the renewal queue, or leased by a run in progress)."""

    due: list[PendingRecord]
    unreported: list[str]
    waiting: list[PendingRecord] = field(default_factory=list)


# Set on an unreadable row once it was reported (merged in, nothing else of the row changes): reported once.
UNREADABLE_REPORTED = "unreadable_reported_at"


class PendingStore:
    def __init__(self, table: TableClient, outcomes: OutcomesByVault | None = None) -> None:
        self.table = table
        self.outcomes = outcomes  # each certificate's last outcome (shared.azure.last_outcomes), when kept

    def create(self, record: PendingRecord) -> PendingRecord:
        """Insert a new record (the write-ahead before AVX is called)."""
        with storage_failure("The renewal could not be recorded"):
            metadata = self.table.create_entity(_to_entity(record))
        return replace(record, etag=metadata.get("etag"))

    def save(self, record: PendingRecord) -> PendingRecord:
        """Write the record; conditional on its ETag when it was read or written here (RecordTaken if it changed)."""
        from azure.core import MatchConditions

        with storage_failure("The renewal record could not be saved"):
            try:
                if record.etag:
                    metadata = self.table.update_entity(
                        _to_entity(record),
                        mode=update_mode("replace"),
                        etag=record.etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                else:
                    metadata = self.table.upsert_entity(_to_entity(record), mode=update_mode("replace"))
            except (ResourceModifiedError, ResourceNotFoundError, ResourceExistsError):
                raise RecordTaken(record.pending_id) from None
        self._note_outcome(record)
        return replace(record, etag=metadata.get("etag"))

    def _note_outcome(self, record: PendingRecord) -> None:
        """The certificate's last outcome: settled, or left pending for the next run (not a write-ahead, not a claim)."""
        if self.outcomes is not None and record.key_vault_name and shown_as_outcome(record.state, record.lease_until):
            at = record.completed_at or record.created_at
            self.outcomes(record.key_vault_url).record(
                record.key_vault_name, LastOutcome(record.state, at, record.reason, Source.APPVIEWX)
            )

    def claim(
        self, record: PendingRecord, owner: str, now: datetime, ignore_retry_delay: bool = False
    ) -> PendingRecord | None:
        """Take the record's lease, or None when another run changed or holds it."""
        if not is_due(record, now, ignore_retry_delay):
            return None
        try:
            return self.save(record.claimed(owner, now))
        except RecordTaken:
            return None

    def claim_queued(self, record: PendingRecord, owner: str, now: datetime) -> PendingRecord | None:
        """The queue function's claim on a queued record (its hold does not apply); None when the record is no longer
        queued, another invocation holds it, or it changed since it was read (a duplicate delivery)."""
        leased = record.lease_until is not None and record.lease_until > now
        if not record.is_queued or leased:
            return None
        try:
            return self.save(record.claimed(owner, now))
        except RecordTaken:
            return None

    def get(self, pending_id: str) -> PendingRecord | None:
        with storage_failure("The renewal record could not be read"):
            try:
                return _from_entity(self.table.get_entity(PARTITION, pending_id))
            except ResourceNotFoundError:
                return None

    def due(self, now: datetime) -> list[PendingRecord]:
        """Open records whose next attempt has come and whose lease (if any) ran out (one query; the table is small)."""
        return self.open_rows(now).due

    def open_rows(self, now: datetime, ignore_retry_delay: bool = False) -> OpenRows:
        """The due records (`ignore_retry_delay`: also those waiting out a retry delay, for an operator who just
        approved a renewal), the open ones not due, and the unreadable open rows not reported yet (one unreadable row
        never hides others). One query; the table of open records is small."""
        with storage_failure("The pending renewals could not be listed"):
            entities = list(
                self.table.query_entities(
                    "PartitionKey eq @pk and ( state eq @accepted or state eq @pending )",
                    parameters={"pk": PARTITION, "accepted": RenewalState.ACCEPTED, "pending": RenewalState.PENDING},
                )
            )
        records, unreadable = read_rows(entities)
        reported = {str(e.get("RowKey"))[:64] for e in entities if e.get(UNREADABLE_REPORTED) is not None}
        ordered = sorted(records, key=lambda r: r.next_attempt_at)
        due = [r for r in ordered if is_due(r, now, ignore_retry_delay)]
        waiting = [r for r in ordered if not is_due(r, now, ignore_retry_delay)]
        return OpenRows(due, [key for key in unreadable if key not in reported], waiting)

    def mark_reported(self, row_key: str, now: datetime) -> None:
        """Note on an unreadable row that it was reported (a merge of one property: the row is otherwise kept)."""
        with storage_failure("The unreadable renewal record could not be marked"):
            self.table.update_entity(
                {"PartitionKey": PARTITION, "RowKey": row_key, UNREADABLE_REPORTED: now}, mode=update_mode("merge")
            )

    def all_records(self) -> list[PendingRecord]:
        """Every record, newest first (for the operator's status table)."""
        with storage_failure("The pending renewals could not be listed"):
            entities = list(self.table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION}))
        return sorted(read_rows(entities)[0], key=lambda r: r.created_at, reverse=True)
