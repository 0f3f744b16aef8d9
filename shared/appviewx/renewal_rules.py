"""The pure rules of an AppViewX renewal (no I/O): which certificate AVX lists is the renewal of a record, which one a
renewal replaces, the one name its events carry, and what a failed renew call says about whether AVX acted."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.appviewx.client import AvxCertificateRecord
from shared.appviewx.records import PendingRecord
from shared.core.certificates import derive_certificate_name
from shared.core.errors import AvxError

REVOKED_STATES = ("revoked", "expired", "rejected", "failed", "cancelled", "canceled")
# CAs may backdate a new certificate's notBefore (Let's Encrypt: 1 h); used only when the replaced validity is unknown.
BACKDATE_ALLOWANCE = timedelta(hours=2)
# The longest AVX date text read (ISO 8601 with fractions and zone is ~35); epoch seconds or milliseconds: 1-20 digits.
MAX_AVX_TIME_CHARS = 64
_EPOCH = re.compile(r"[0-9]{1,20}")

# -- pure decisions -------------------------------------------------------------------------------------------------


def normalise_serial(serial: str | None) -> str | None:
    """A serial number compared the same however it is written: case, leading zeros, colons, spaces."""
    if not serial:
        return None
    text = re.sub(r"[\s:\-]", "", serial).upper().lstrip("0")
    return text or "0"


def parse_avx_time(value: str | None) -> datetime | None:
    """AVX dates: ISO 8601 (with or without zone/Z) or epoch milliseconds. None when unreadable."""
    if not value or len(value) > MAX_AVX_TIME_CHARS:  # upstream garbage: never parse a huge text
        return None
    text = value.strip()
    try:
        if _EPOCH.fullmatch(text):  # ASCII digits only: "²".isdigit() is True, int("²") is not
            number = int(text)
            return datetime.fromtimestamp(number / 1000 if number > 10**11 else number, UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):  # beyond year 9999, or the platform's time_t
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _later(candidate: datetime | None, replaced: datetime | None) -> bool:
    return candidate is not None and replaced is not None and candidate > replaced


def known_resources(record: PendingRecord, replaced: AvxCertificateRecord | None) -> frozenset[str]:
    """The AVX resource the renewal is of, as far as known: the id AVX's renew answer named, the requested
    resourceId, the replaced certificate's listing. Empty when none is known (a commonName + serialNumber request
    AVX never answered, whose replaced certificate AVX no longer lists)."""
    ids = (record.avx_resource_id, record.requested_resource_id, replaced.resource_id if replaced else None)
    return frozenset(i for i in ids if i)


def is_renewal_of(
    record: PendingRecord, candidate: AvxCertificateRecord, replaced: AvxCertificateRecord | None
) -> bool:
    """A listed certificate is the renewal only if it is of the record's AVX resource (when known: never a twin, another
    AVX certificate of the same common name), has the record's common name, a serial other than the replaced one's,
    and a validity that starts or ends later than the replaced one's (so older history never qualifies)."""
    if (candidate.status or "").lower() in REVOKED_STATES:
        return False
    resources = known_resources(record, replaced)
    if resources and candidate.resource_id not in resources:
        return False
    serial = normalise_serial(candidate.serial_number)
    if serial is None or serial == normalise_serial(record.serial_number):
        return False
    if record.common_name and (candidate.common_name or "").lower() != record.common_name.lower():
        return False
    starts, ends = parse_avx_time(candidate.valid_from), parse_avx_time(candidate.valid_to)
    replaced_from = parse_avx_time(record.replaced_valid_from or (replaced.valid_from if replaced else None))
    replaced_to = parse_avx_time(record.replaced_valid_to or (replaced.valid_to if replaced else None))
    if replaced_from or replaced_to:
        return _later(starts, replaced_from) or _later(ends, replaced_to)
    # Nothing known of the replaced certificate's validity: only one issued after the request can be its renewal.
    return starts is not None and starts >= record.created_at - BACKDATE_ALLOWANCE


@dataclass(frozen=True)
class RenewalChoice:
    """Which listed certificate is the record's renewal: `found`, or none yet; `ambiguous` names the AVX resources
    that each list a renewal when none of them is known to be the record's (nothing is picked then)."""

    found: AvxCertificateRecord | None
    ambiguous: tuple[str, ...] = ()


def choose_renewal(record: PendingRecord, candidates: list[AvxCertificateRecord]) -> RenewalChoice:
    """The certificate AVX renewed for this record, among the renewals `is_renewal_of` accepts: the one valid
    longest. When the record's AVX resource is unknown and renewals of several resources qualify, none is chosen."""
    replaced_serial = normalise_serial(record.serial_number)
    replaced = next((c for c in candidates if normalise_serial(c.serial_number) == replaced_serial), None)
    if replaced_serial is None and not (record.replaced_valid_from or record.replaced_valid_to):
        return RenewalChoice(None)  # nothing tells the renewal from the certificate it replaces
    renewals = [c for c in candidates if is_renewal_of(record, c, replaced)]
    resources = {c.resource_id or "" for c in renewals}
    if not known_resources(record, replaced) and len(resources) > 1:
        return RenewalChoice(None, tuple(sorted(resources)))
    renewals.sort(key=lambda c: parse_avx_time(c.valid_to) or datetime.min.replace(tzinfo=UTC), reverse=True)
    return RenewalChoice(renewals[0] if renewals else None)


def choose_renewed(record: PendingRecord, candidates: list[AvxCertificateRecord]) -> AvxCertificateRecord | None:
    """The certificate AVX renewed for this record, or None when AVX does not list it (yet) or it is ambiguous."""
    return choose_renewal(record, candidates).found


def current_certificate(listed: list[AvxCertificateRecord], serial: str | None) -> AvxCertificateRecord | None:
    """The certificate a renewal will replace, among AVX's listing of a resource id: the one with the requested
    serial, else the one valid longest (the current one)."""
    wanted = normalise_serial(serial)
    if wanted:
        return next((c for c in listed if normalise_serial(c.serial_number) == wanted), None)
    dated = [c for c in listed if c.serial_number]
    dated.sort(key=lambda c: parse_avx_time(c.valid_to) or datetime.min.replace(tzinfo=UTC), reverse=True)
    return dated[0] if dated else None


def certificate_label(key_vault_name: str | None, common_name: str | None, resource_id: str | None) -> str | None:
    """The one name every AppViewX event of a certificate carries, whatever the outcome: the Key Vault name it is
    (or will be) stored under, derived as `storing._name_for` derives it, so a failure and a later success line up. Only
    when nothing but AVX's resource id is known (a failure before AVX was searched) is that id the name."""
    return key_vault_name or derive_certificate_name(common_name or "") or resource_id


# -- what a failed renew call says --------------------------------------------------------------------------------


# What an AVX renew error says about the renewal (`avx_renew_outcome`).
AVX_BUSY = "busy"  # AVX provably did not act and may another time: never reached, 429, 503
AVX_REFUSED = "refused"  # AVX provably did not act: its own refusal (4xx, or a 5xx with its appStatusCode)
AVX_OUTCOME_UNKNOWN = "unknown"  # AVX may have renewed (or did): kept pending, never renewed again
# AVX answers that provably came before it acted and are worth another try (the queue retries them). 502 and 504 are
# not: a gateway in front of AVX answers them while AVX may go on and renew.
TRANSIENT_AVX_STATUSES = (429, 503)


def _renewed_not_downloaded(error: AvxError) -> bool:
    """AVX's page: 500 FAILED "Certificate Renew action performed successfully but failed to download": AVX renewed."""
    return error.app_status_code == "FAILED" and "performed successfully" in error.message.lower()


def avx_renew_outcome(error: AvxError) -> str:
    """Whether AVX provably did not act on a renew request that failed (busy or refused), or may have (unknown).
    The one rule of the webhook and the queue: only a provable "did not act" may fail the record, free the caller's
    Idempotency-Key or send the renewal again."""
    status = error.http_status
    if status in TRANSIENT_AVX_STATUSES:
        return AVX_BUSY
    if status is not None and 400 <= status < 500:
        return AVX_REFUSED
    if not error.sent:
        return AVX_BUSY
    if status is not None and status >= 500 and error.app_status_code and not _renewed_not_downloaded(error):
        return AVX_REFUSED
    # No answer (timeout, dropped after sending), an unreadable 2xx, a gateway's 502/504, a 5xx without AVX's own
    # code, or AVX's "renewed but failed to download".
    return AVX_OUTCOME_UNKNOWN
