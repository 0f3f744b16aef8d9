"""The renewal queue's worker (asynchronous webhook requests): the record written before the message, one delivery
(claimed first, so a message delivered twice renews once) through the webhook's checks, AVX call and Key Vault
steps, and the poison handler that settles a message the host gave up on."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from shared.appviewx.records import PendingRecord, RecordTaken, RenewalState
from shared.appviewx.renewal_rules import AVX_BUSY, avx_renew_outcome
from shared.appviewx.storing import NotStored, Pipeline, save_settled, settle_not_stored
from shared.appviewx.validation import RenewCommand, avx_error_answer
from shared.appviewx.webhook_renewal import (
    AvxDidNotRenew,
    Webhook,
    WebhookAnswer,
    prepare,
    record_fields,
    renew_at_avx,
    store_renew_answer,
)
from shared.core.errors import ApiError
from shared.core.settings import VaultNotListed

log = logging.getLogger("certrenew.appviewx")

# -- the renewal queue (asynchronous webhook requests) -------------------------------------------------------------

SKIPPED: Literal["skipped"] = "skipped"  # a queue delivery that found nothing to do


class RetryQueued(Exception):
    """A failure that provably came before AVX acted: the record is (back) on the queue and the message is retried
    (the host's backoff, host.json); after the last try the poison handler ends the record with this reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass(frozen=True)
class QueuedOutcome:
    """Where one queue delivery left its record: renewed, pending, failed, or skipped (nothing done)."""

    state: RenewalState | Literal["skipped"]
    pending_id: str
    code: str | None = None
    message: str | None = None


def accept_queued(command: RenewCommand, pipeline: Pipeline, *, idempotency_scope: str | None = None) -> PendingRecord:
    """Write the record of an asynchronous renewal (state accepted, reason QUEUED), before its queue message.
    Raises StateStoreError when it cannot be written (nothing queued, nothing renewed)."""
    record = PendingRecord.queued(
        datetime.now(UTC), caller=pipeline.caller, idempotency_scope=idempotency_scope, **record_fields(command)
    )
    return pipeline.records.create(record)


def differs_from_record(record: PendingRecord, command: RenewCommand) -> str | None:
    """The first field in which a queue message's request differs from its record (None: it is the record's). A
    common name or serial the message leaves out may have been filled in on the record by AVX's search."""
    fields = record_fields(command)
    for key in ("requested_resource_id", "key_vault_name", "storage"):
        if fields[key] != getattr(record, key):
            return key
    for key in ("common_name", "serial_number"):
        if fields[key] is not None and fields[key] != getattr(record, key):
            return key
    return None


def _no_record(pending_id: str) -> QueuedOutcome:
    log.error("Queued renewal %s has no record; nothing renewed", pending_id)
    return QueuedOutcome(SKIPPED, pending_id, "NOT_FOUND", "no renewal record has this id")


def _redirected(record: PendingRecord, command: RenewCommand) -> QueuedOutcome | None:
    """Whoever can write to the queue cannot redirect a renewal: the record, written by the webhook, decides."""
    differs = differs_from_record(record, command)
    if differs is None:
        return None
    log.error("Queue message for renewal %s dropped: its %s differs from the record's", record.pending_id, differs)
    return QueuedOutcome(SKIPPED, record.pending_id, "MESSAGE_MISMATCH", f"the message's {differs} is not the record's")


def _fail_queued(record: PendingRecord, error: ApiError, pipeline: Pipeline) -> QueuedOutcome:
    problem = NotStored(error.code, error.message, permanent=True, remediation=error.remediation)
    outcome = settle_not_stored(record, problem, pipeline)
    return QueuedOutcome(outcome.state, record.pending_id, error.code, error.message)


def _requeue(record: PendingRecord, code: str, message: str, pipeline: Pipeline) -> RetryQueued:
    save_settled(pipeline, record.requeued(f"{code}: {message}", datetime.now(UTC)))
    log.warning("Queued renewal %s not sent to AppViewX yet (%s); the queue retries it", record.pending_id, code)
    return RetryQueued(code, message)


def renew_queued(
    pending_id: str, command: RenewCommand, pipeline: Pipeline, *, message_expires_at: datetime | None = None
) -> QueuedOutcome:
    """One delivery of a queued renewal: the same checks, AVX call and Key Vault pipeline as the webhook.

    The record is claimed first (ETag-conditional lease), so a message delivered twice, or to two instances at once,
    renews once; a record no longer queued is never renewed again. Raises RetryQueued (the queue retries) for a
    failure that provably came before AVX acted; StateStoreError when the table is unreachable. A late message is
    honoured while its record is queued; `message_expires_at` (the queue's own expiry of this message) is kept on the
    record for the lost-message rule."""
    records = pipeline.records
    record = records.get(pending_id)
    if record is None or (redirected := _redirected(record, command)) is not None:  # the record decides
        return _no_record(pending_id) if record is None else redirected
    claimed = records.claim_queued(record, pipeline.owner, datetime.now(UTC))
    if claimed is None and record.is_queued:
        # Still queued but held by another delivery: running, or dead before AVX (its lease runs out in 15 min).
        # Returning would delete the message and lose the renewal: fail, so the host delivers it again later
        # (host.json's retries span more than the lease).
        log.warning("Queued renewal %s is held by another delivery; the queue retries it", pending_id)
        raise RetryQueued("RECORD_HELD", "another delivery holds this queued renewal; retried after its lease")
    if claimed is None:
        log.info(
            "Queued renewal %s is %s (%s) or held by another run; not renewed again",
            pending_id,
            record.state,
            record.reason,
        )
        return QueuedOutcome(SKIPPED, pending_id, record.reason, f"record is {record.state}")
    if message_expires_at is not None:  # saved with the record's next write (requeued, or sent to AVX)
        claimed = replace(claimed, queue_expires_at=message_expires_at)
    aimed = _checked_in_its_vault(claimed, command, pipeline)
    if isinstance(aimed, QueuedOutcome):
        return aimed
    command, pipeline, hook = aimed
    try:  # from here AVX may act: an ordinary write-ahead record, completed by the timer if this run dies
        record = records.save(claimed.calling_avx(datetime.now(UTC), **record_fields(command)))
    except RecordTaken:
        return QueuedOutcome(SKIPPED, pending_id, "TAKEN", "record changed by another run")
    try:
        result = renew_at_avx(hook, record)
    except AvxDidNotRenew as refused:
        if avx_renew_outcome(refused.error) == AVX_BUSY:
            raise _requeue(record, refused.error.code, refused.error.message, pipeline) from None
        return _fail_queued(record, avx_error_answer(refused.error), pipeline)
    answer = result if isinstance(result, WebhookAnswer) else store_renew_answer(hook, record, result)
    return _answer_outcome(answer, pending_id)


def _checked_in_its_vault(
    claimed: PendingRecord, command: RenewCommand, pipeline: Pipeline
) -> tuple[RenewCommand, Pipeline, Webhook] | QueuedOutcome:
    """The renewal aimed at its record's vault, after the webhook's checks before AVX (`prepare`); a refusal ends the
    record failed (a 5xx one raises RetryQueued: the queue retries). A vault removed from KEY_VAULT_URLS since the
    renewal was queued is refused like a vault never listed: AVX is not called, nothing is written outside the list."""
    try:
        command, pipeline, hook = _in_its_vault(claimed, command, pipeline)
    except VaultNotListed:
        gone = ApiError(
            400,
            "KEY_VAULT_NOT_ALLOWED",
            f"The renewal's vault {claimed.key_vault_url!r:.140} is no longer one of the app's vaults; nothing was "
            "renewed.",
            "List the vault in KEY_VAULT_URLS again and send the renewal again (with a new Idempotency-Key).",
        )
        return _fail_queued(claimed, gone, pipeline)
    rejection = prepare(command, pipeline)
    if rejection is None:
        return command, pipeline, hook
    if rejection.status >= 500:
        raise _requeue(claimed, rejection.code, rejection.message, pipeline)
    return _fail_queued(claimed, rejection, pipeline)


def _in_its_vault(
    record: PendingRecord, command: RenewCommand, pipeline: Pipeline
) -> tuple[RenewCommand, Pipeline, Webhook]:
    """The renewal aimed at the vault the record was accepted for (what the stored record says, not the message)."""
    command = replace(command, key_vault=record.key_vault_url or command.key_vault)
    # the caller who asked, kept in the renewal's events
    pipeline = replace(pipeline.for_vault(command.key_vault), caller=record.caller)
    return command, pipeline, Webhook(command, pipeline)


def _answer_outcome(answer: WebhookAnswer, pending_id: str) -> QueuedOutcome:
    if answer.status == 200:
        return QueuedOutcome(RenewalState.RENEWED, pending_id)
    error = answer.body.get("error") if isinstance(answer.body.get("error"), dict) else None
    code = (error or {}).get("code") or answer.body.get("reason")
    message = (error or {}).get("message") or answer.body.get("message")
    return QueuedOutcome(
        RenewalState.PENDING if answer.status == 202 else RenewalState.FAILED, pending_id, code, message
    )


def settle_poisoned(pending_id: str, pipeline: Pipeline, now: datetime | None = None) -> QueuedOutcome:
    """A queue message the host gave up on (maxDequeueCount): its record ends failed with the last reason when AVX
    was never called, or is handed to the timer (pending) when AVX may have acted. Never silently lost."""
    now = now or datetime.now(UTC)
    record = pipeline.records.get(pending_id)
    if record is None:
        log.error("Poison renewal message %s has no record", pending_id)
        return QueuedOutcome(SKIPPED, pending_id, "NOT_FOUND", "no renewal record has this id")
    leased = record.lease_until is not None and record.lease_until > now
    if record.state is not RenewalState.ACCEPTED or leased:
        # settled, or an invocation holds it now (its lease expiry hands it to the timer if it dies)
        return QueuedOutcome(SKIPPED, pending_id, record.reason, f"record is {record.state}")
    pipeline = pipeline.for_vault(record.key_vault_url)
    message = record.last_error or "the renewal could not be processed"
    if record.is_queued:  # AVX was never called
        problem = NotStored(
            "QUEUE_RETRIES_EXHAUSTED",
            f"Not sent to AppViewX after the queue's last try; nothing was renewed. Last: {message}",
            permanent=True,
            remediation="Fix the cause named here, then send the renewal again (with a new Idempotency-Key).",
        )
        outcome = settle_not_stored(record, problem, pipeline, now=now)
    else:  # AVX may have acted: the timer finds and stores what it renewed, never renewing again
        outcome = settle_not_stored(record, NotStored("QUEUE_RETRIES_EXHAUSTED", message), pipeline, now=now)
    return QueuedOutcome(outcome.state, pending_id, outcome.code, outcome.message)
