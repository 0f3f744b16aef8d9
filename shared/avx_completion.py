"""Completing pending AppViewX renewals: find what AVX already renewed, download it, store it, close the record.

It never asks AVX to renew again. Each failed try backs off (15 min doubling up to 24 h); after PENDING_MAX_DAYS
the record is given up with `CertificateRenewalFailed`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared import redaction
from shared.avx import AvxCertificateRecord, AvxClient
from shared.avx_renewal import emit_renewed
from shared.certificates import (
    CertificateParseError,
    common_name_of,
    der_chain,
    derive_certificate_name,
    generate_password,
    leaf_of_pfx,
    order_leaf_first,
    parse_certificates,
)
from shared.errors import AvxError, CertRenewError
from shared.keyvault import KeyVaultStore, StoredCertificate, clean_tags
from shared.pending import FAILED, PendingRecord, PendingStore
from shared.telemetry import emit_event

log = logging.getLogger("certrenew.pending")
SOURCE = "appviewx"
REVOKED_STATES = ("revoked", "expired", "rejected", "failed", "cancelled", "canceled")


class NotReadyYet(Exception):
    """AVX does not list the renewed certificate yet (approval pending, CA still issuing)."""


def choose_renewed(record: PendingRecord, candidates: list[AvxCertificateRecord]) -> AvxCertificateRecord | None:
    """The certificate AVX renewed for this record: the one with the renewed resource id when AVX told it, else
    the newest usable one whose serial differs from the certificate that was renewed."""
    usable = [c for c in candidates if (c.status or "").lower() not in REVOKED_STATES]
    if record.avx_resource_id:
        for candidate in usable:
            if candidate.resource_id == record.avx_resource_id and candidate.serial_number != record.serial_number:
                return candidate
    newer = [
        c
        for c in usable
        if c.serial_number
        and c.serial_number != record.serial_number
        and (record.common_name is None or c.common_name == record.common_name)
    ]
    newer.sort(key=lambda c: c.valid_to or "", reverse=True)
    if record.serial_number is None and record.avx_resource_id is None:
        return None  # without a serial or renewed id, "newer" cannot be told apart from the old certificate
    return newer[0] if newer else None


@dataclass
class CompletionSummary:
    completed: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _find(avx: AvxClient, record: PendingRecord) -> AvxCertificateRecord:
    common_name = record.common_name
    if not common_name and record.requested_resource_id:
        known = avx.search(resource_id=record.requested_resource_id)
        common_name = known[0].common_name if known else None
    if not common_name:
        raise NotReadyYet("AppViewX does not list the certificate that was renewed")
    chosen = choose_renewed(record, avx.search(common_name=common_name))
    if chosen is None:
        raise NotReadyYet(f"AppViewX lists no renewed certificate for {common_name} yet")
    return chosen


def complete_one(record: PendingRecord, avx: AvxClient, store: KeyVaultStore) -> StoredCertificate:
    found = _find(avx, record)
    tags = clean_tags(
        {
            "source": "appviewx",
            "avxResourceId": found.resource_id or record.avx_resource_id,
            "avxRequestId": record.avx_request_id,
            "serialNumber": found.serial_number,
        }
    )
    if record.storage == "merge":
        content = avx.download(found, "CRT", None)
        certificates = order_leaf_first(parse_certificates(content))
        name = record.key_vault_name or derive_certificate_name(common_name_of(certificates[0]) or "")
        if not name:
            raise CertificateParseError("no Key Vault name for the merged certificate")
        return store.merge(name, der_chain(certificates), tags)
    password = generate_password()  # fresh, one-time; lives only for this download and import
    redaction.register_secret(password)
    content = avx.download(found, "PFX", password)
    leaf = leaf_of_pfx(content, password)
    name = record.key_vault_name or derive_certificate_name(common_name_of(leaf) or found.common_name or "")
    if not name:
        raise CertificateParseError("no Key Vault name could be derived for the renewed certificate")
    return store.import_pfx(name, content, password, tags)


def complete_pending(
    pending: PendingStore, avx: AvxClient, store: KeyVaultStore, max_days: float, now: datetime | None = None
) -> CompletionSummary:
    now = now or datetime.now(UTC)
    summary = CompletionSummary()
    for record in pending.due(now):
        try:
            stored = complete_one(record, avx, store)
        except (NotReadyYet, CertificateParseError, CertRenewError) as exc:
            message = exc.message if isinstance(exc, CertRenewError) else str(exc)
            code = exc.code if isinstance(exc, (AvxError, CertRenewError)) else "NOT_READY"
            updated = pending.save(record.failed_try(f"{code}: {message}"[:1000], now, max_days))
            if updated.state == FAILED:
                summary.failed.append(record.pending_id)
                emit_event(
                    "CertificateRenewalFailed",
                    {
                        "source": SOURCE,
                        "certificateName": record.key_vault_name or record.common_name or record.requested_resource_id,
                        "pendingId": record.pending_id,
                        "reason": "PENDING_GAVE_UP",
                        "message": f"Not stored after {updated.attempts} tries over {max_days:g} days; last: {message}",
                        "avxResourceId": record.avx_resource_id,
                    },
                )
            else:
                summary.retried.append(record.pending_id)
                log.warning(
                    "Pending renewal %s not completed (try %d, next %s): %s",
                    record.pending_id,
                    updated.attempts,
                    updated.next_attempt_at.isoformat(),
                    message,
                )
            continue
        pending.save(record.completed(stored.id, stored.name, now))
        summary.completed.append(record.pending_id)
        emit_renewed(stored, pendingId=record.pending_id, avxResourceId=record.avx_resource_id)
    return summary
