"""When a version whose AppViewX renewal did not land may be tried again, and how its expiry is reported (issue 30).

- A version AVX refused (its claim `done` + `retryable`, nothing renewed; e.g. 417 OPEN_WORK_ORDERS_FOUND, whose own
  remediation is "trigger again once the work order completes") is renewed again by a later Key Vault event once the
  certificate's backoff (`shared.appviewx.backoff`, counted in `shared.vault.renewal_failures`) has passed.
- A version whose claim is tied to a renewal record that ended `failed` (given up, NOT_SENT) counts one failure of the
  certificate and becomes retryable the same way (nothing is renewed twice: the record is settled for good).
- Key Vault's `CertificateExpired` for an AppViewX certificate that is still the current version always emits
  `CertificateExpired` with `owner=appviewx` and the last failure's reason (notified).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from shared.appviewx.records import PendingRecord, RenewalState
from shared.core.errors import CertRenewError
from shared.core.events import Event, Source
from shared.core.telemetry import emit_event
from shared.vault.event_claims import VERSION_PARTITION, Claim, ClaimOutcome, EventClaims
from shared.vault.event_decisions import Owner, whole_days_left
from shared.vault.renewal_failures import RenewalFailureStore
from shared.vault.renewal_plan import RenewalFailures

log = logging.getLogger("certrenew.keyvault-events")
NOT_RENEWED = "NOT_RENEWED"  # the reason reported when no failure of the certificate is known


def failures_of(store: RenewalFailureStore | None, name: str) -> RenewalFailures | None:
    if store is None:
        return None
    try:
        return store.get(name)
    except CertRenewError as exc:  # decided without the count: no retry, the report says NOT_RENEWED
        log.warning("The renewal backoff of %s could not be read: %s", name, exc.message)
        return None


def backoff_passed(failures: RenewalFailures | None, now: datetime) -> bool:
    """A refused version may be tried again: its certificate's backoff has passed (or no failure is counted)."""
    return failures is None or now >= failures.retry_at


def settle_failed_record(
    claim: Claim,
    key: str,
    name: str,
    claims: EventClaims,
    records: Any,  # () -> PendingStore
    failures: RenewalFailureStore | None,
) -> bool:
    """A claim tied to a renewal record that ended failed: the failure is counted and the claim made retryable.
    True when it was (the caller claims again); False when the record is open, renewed or unreadable."""
    if not claim.pending_id or claim.outcome is ClaimOutcome.NEW or claim.retryable:
        return False
    try:
        record: PendingRecord | None = records().get(claim.pending_id)
    except CertRenewError as exc:
        log.warning("Renewal record %s could not be read: %s", claim.pending_id, exc.message)
        return False
    if record is None or record.state is not RenewalState.FAILED:
        return False
    if failures is not None:
        try:
            failures.failed(name, record.reason, record.completed_at)
        except CertRenewError as exc:
            log.warning("The renewal backoff of %s could not be recorded: %s", name, exc.message)
    claims.finish(VERSION_PARTITION, key, f"failed {record.reason}", retryable=True)
    return True


def report_expired(
    name: str,
    version: str,
    expires: datetime | None,
    event_id: str,
    avx_resource_id: str | None,
    failures: RenewalFailures | None,
    now: datetime,
) -> None:
    """An AppViewX certificate expired while still current: its renewal did not land. Reported (and notified)."""
    emit_event(
        Event.EXPIRED,
        {
            "source": Source.KEYVAULT,
            "owner": Owner.APPVIEWX,
            "certificateName": name,
            "keyVaultVersion": version,
            "expiryDate": expires,
            "daysLeft": whole_days_left(expires, now),
            "eventId": event_id,
            "avxResourceId": avx_resource_id,
            "reason": (failures.last_reason if failures else None) or NOT_RENEWED,
            "failures": failures.count if failures else 0,
        },
    )
