"""Completion of open renewal records (the timer): find what AVX renewed for a record (never renewing again), under
whichever record AVX filed it (`renewal_finder`), download it and store it through `storing.store_avx_result`;
records are claimed with an ETag-conditional lease."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from shared.appviewx.client import AvxCertificateRecord, AvxClient
from shared.appviewx.records import NOT_SENT, QUEUED_HOLD, PendingRecord, PendingStore, RenewalState
from shared.appviewx.renewal_finder import RenewalNotFound, find_renewed
from shared.appviewx.storing import (
    AvxMaterial,
    NotStored,
    Outcome,
    Pipeline,
    save_settled,
    settle_not_stored,
    store_avx_result,
)
from shared.azure.keyvault import KeyVaultStore
from shared.core import redaction
from shared.core.certificates import (
    Storage,
    generate_password,
)
from shared.core.errors import CertRenewError, StateStoreError
from shared.core.events import Event, Source
from shared.core.telemetry import emit_event

log = logging.getLogger("certrenew.appviewx")

# -- completion (the timer; later the queue and Event Grid paths) ---------------------------------------------------


def download_renewed(record: PendingRecord, found: AvxCertificateRecord, avx: AvxClient) -> AvxMaterial:
    """Download what AVX already renewed (nothing is renewed again): PFX with a fresh one-time password, or the
    keyless chain for a merge."""
    ids = {"avx_resource_id": found.resource_id or record.avx_resource_id, "avx_request_id": record.avx_request_id}
    if record.storage == "merge":
        return AvxMaterial(avx.download(found, "CRT", None), Storage.MERGE, avx_name=found.common_name, **ids)
    password = generate_password()  # lives only for this download and import
    redaction.register_secret(password)
    content = avx.download(found, "PFX", password)
    return AvxMaterial(content, Storage.IMPORT_PFX, password, avx_name=found.common_name, **ids)


def complete_record(record: PendingRecord, pipeline: Pipeline, max_days: float, now: datetime | None = None) -> Outcome:
    """One try at a claimed open record: find, download, store; the record is settled either way."""
    now = now or datetime.now(UTC)
    if record.is_queued:
        return _settle_queued(record, pipeline, now)
    if record.never_sent:  # AVX was never called for it: nothing to search for, nothing renewed
        why = "it was never marked sent to AppViewX (its run ended before the AppViewX call)"
        updated = save_settled(pipeline, record.failed(NOT_SENT, why, now))
        log.warning("Renewal record %s ends %s: %s", record.pending_id, NOT_SENT, why)
        return Outcome(RenewalState.FAILED, updated, code=NOT_SENT, message=why)
    try:
        # Under whichever record AVX filed the renewal (a new one); `record` learns what it replaces meanwhile.
        found, record = find_renewed(record, pipeline.avx)
        material = download_renewed(record, found, pipeline.avx)
    except RenewalNotFound as missing:
        problem = NotStored(missing.code, missing.message, remediation=missing.remediation)
        return settle_not_stored(missing.record, problem, pipeline, max_days=max_days, now=now)
    except CertRenewError as exc:
        problem = NotStored(exc.code, exc.message)
        return settle_not_stored(record, problem, pipeline, max_days=max_days, now=now)
    return store_avx_result(record, material, pipeline, max_days=max_days, now=now)


def _settle_queued(record: PendingRecord, pipeline: Pipeline, now: datetime) -> Outcome:
    """A queued record the queue function has not taken: lost only once its message can no longer arrive (the
    queue's own expiry); until then it waits for its (late) message, looked at again after the hold."""
    if not record.queue_message_gone(now):
        waiting = replace(record, next_attempt_at=now + QUEUED_HOLD, lease_until=None)
        return Outcome(RenewalState.ACCEPTED, save_settled(pipeline, waiting))
    lost = NotStored(
        "QUEUE_MESSAGE_LOST",
        "The renewal's queue message expired without being processed; AppViewX was not called and nothing was renewed.",
        permanent=True,
        remediation="Send the renewal again (with a new Idempotency-Key).",
    )
    return settle_not_stored(record, lost, pipeline, now=now)


@dataclass
class CompletionSummary:
    completed: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # held or changed by another run, or its claim failed
    unreadable: list[str] = field(default_factory=list)  # rows reported as unreadable in this pass
    not_due: list[str] = field(default_factory=list)  # open, but waiting out a retry delay, on the queue or a lease


def _in_its_vault(pipeline: Pipeline, record: PendingRecord) -> Pipeline | None:
    """The pipeline writing to the record's vault for the record's caller (a certificate adopted for one caller is
    that caller's to write: AVX_ADOPTABLE_CERTIFICATES); None (logged, the record left open) when that vault is no
    longer in KEY_VAULT_URLS: nothing outside the list is ever written to."""
    try:
        return replace(pipeline.for_vault(record.key_vault_url), caller=record.caller)
    except LookupError:
        log.error("Renewal %s is for a vault no longer listed (%s); left open", record.pending_id, record.key_vault_url)
        return None


def complete_pending(
    records: PendingStore,
    avx: AvxClient,
    store: KeyVaultStore,
    max_days: float,
    now: datetime | None = None,
    stores: Callable[[str], KeyVaultStore] | None = None,
    ignore_retry_delay: bool = False,
) -> CompletionSummary:
    """One pass over the open records that are due (`ignore_retry_delay`: also those waiting out a retry delay, for
    an operator who just approved a renewal; the others are counted as not due): each is claimed (ETag-conditional
    lease, stamped at claim time) before any work, so concurrent runs never download or import the same record
    twice. An unreadable row is reported once and skipped; a claim that fails skips its record, never the run. Each
    completes into its own record's vault (`stores`: the pooled store of a listed vault by URL; `store` is the
    default vault's)."""
    started = datetime.now(UTC)
    now = now or started
    clock = _run_clock(now, started)
    default = Pipeline(avx=avx, store=store, records=records, stores=stores)
    rows = records.open_rows(now, ignore_retry_delay)
    summary = CompletionSummary(not_due=[r.pending_id for r in rows.waiting])
    for row_key in rows.unreported:
        _report_unreadable(records, row_key, now, summary)
    for candidate in rows.due:
        pipeline = _in_its_vault(default, candidate)
        record = _claim(records, candidate, pipeline, clock(), ignore_retry_delay) if pipeline else None
        if record is None:
            summary.skipped.append(candidate.pending_id)
            continue
        _tally(summary, record, _complete_one(record, pipeline, max_days, now))  # backoff from the run's time
    return summary


def _claim(
    records: PendingStore, candidate: PendingRecord, pipeline: Pipeline, at: datetime, ignore_retry_delay: bool
) -> PendingRecord | None:
    """The record's lease for this run; None when another run holds or changed it, or the claim failed (tried again
    next run)."""
    try:
        return records.claim(candidate, pipeline.owner, at, ignore_retry_delay)
    except StateStoreError as exc:
        log.warning("Renewal %s could not be claimed (%s); tried again next run", candidate.pending_id, exc)
        return None


def _run_clock(now: datetime, started: datetime) -> Callable[[], datetime]:
    """The time of this run's frame: `now` at its start, moving on with the wall clock (a run told another `now`
    stamps leases at its own claim times, not at its start)."""
    offset = now - started
    return lambda: datetime.now(UTC) + offset


def _report_unreadable(records: PendingStore, row_key: str, now: datetime, summary: CompletionSummary) -> None:
    emit_event(
        Event.RECORD_UNREADABLE,
        {"source": Source.APPVIEWX, "pendingId": row_key, "message": "the renewal record cannot be read; skipped"},
    )
    summary.unreadable.append(row_key)
    try:
        records.mark_reported(row_key, now)
    except StateStoreError as exc:  # reported again next run: better than never
        log.warning("Unreadable renewal record %s could not be marked reported: %s", row_key, exc)


def _complete_one(record: PendingRecord, pipeline: Pipeline, max_days: float, now: datetime) -> Outcome | None:
    try:
        return complete_record(record, pipeline, max_days, now)
    except BaseException as exc:  # one bad record (a bug, garbage upstream, a native panic) never stops the run
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        log.exception("Unexpected failure completing renewal %s; it is tried again later", record.pending_id)
        problem = NotStored("COMPLETION_UNEXPECTED", f"unexpected {type(exc).__name__} while completing")
        try:
            return settle_not_stored(record, problem, pipeline, max_days=max_days, now=now)
        except Exception:  # its lease expiry hands it on
            log.exception("Renewal %s could not be backed off", record.pending_id)
            return None


def _tally(summary: CompletionSummary, record: PendingRecord, outcome: Outcome | None) -> None:
    if outcome is None:
        summary.retried.append(record.pending_id)
    elif outcome.state is RenewalState.RENEWED:
        summary.completed.append(record.pending_id)
    elif outcome.state is RenewalState.FAILED:
        summary.failed.append(record.pending_id)
    elif outcome.state is RenewalState.PENDING:
        summary.retried.append(record.pending_id)
        log.warning(
            "Pending renewal %s not completed (try %d, next %s): %s",
            record.pending_id,
            outcome.record.attempts,
            outcome.record.next_attempt_at.isoformat(),
            outcome.message,
        )
