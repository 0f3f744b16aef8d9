"""Completion of open renewal records (the timer): find what AVX renewed for a record (never renewing again), under
whichever record AVX filed it (`renewal_finder`), download it and store it through `storing.store_avx_result`;
records are claimed with an ETag-conditional lease."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.appviewx.client import AvxCertificateRecord, AvxClient
from shared.appviewx.records import PendingRecord, PendingStore, RenewalState
from shared.appviewx.renewal_finder import RenewalNotFound, find_renewed
from shared.appviewx.storing import (
    AvxMaterial,
    NotStored,
    Outcome,
    Pipeline,
    settle_not_stored,
    store_avx_result,
)
from shared.azure.keyvault import KeyVaultStore
from shared.core import redaction
from shared.core.certificates import (
    Storage,
    generate_password,
)
from shared.core.errors import CertRenewError

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
    if record.is_queued:  # its queue message was never processed within the hold; AVX was never called
        lost = NotStored(
            "QUEUE_MESSAGE_LOST",
            "The renewal's queue message was never processed; AppViewX was not called and nothing was renewed.",
            permanent=True,
            remediation="Send the renewal again (with a new Idempotency-Key).",
        )
        return settle_not_stored(record, lost, pipeline, now=now)
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


@dataclass
class CompletionSummary:
    completed: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # held or changed by another run


def complete_pending(
    records: PendingStore, avx: AvxClient, store: KeyVaultStore, max_days: float, now: datetime | None = None
) -> CompletionSummary:
    """One pass over the open records that are due: each is claimed (ETag-conditional lease) before any work, so
    concurrent runs never download or import the same record twice."""
    now = now or datetime.now(UTC)
    pipeline = Pipeline(avx=avx, store=store, records=records)
    summary = CompletionSummary()
    for candidate in records.due(now):
        record = records.claim(candidate, pipeline.owner, now)
        if record is None:
            summary.skipped.append(candidate.pending_id)
            continue
        try:
            outcome = complete_record(record, pipeline, max_days, now)
        except Exception as exc:  # one bad record (a bug, garbage upstream) never stops the run: back it off
            log.exception("Unexpected failure completing renewal %s; it is tried again later", record.pending_id)
            problem = NotStored("COMPLETION_UNEXPECTED", f"unexpected {type(exc).__name__} while completing")
            try:
                outcome = settle_not_stored(record, problem, pipeline, max_days=max_days, now=now)
            except Exception:  # its lease expiry hands it on
                log.exception("Renewal %s could not be backed off", record.pending_id)
                summary.retried.append(record.pending_id)
                continue
        if outcome.state is RenewalState.RENEWED:
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
    return summary
