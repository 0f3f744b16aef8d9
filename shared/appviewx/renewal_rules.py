"""The pure rules of an AppViewX renewal (no I/O): which certificate AVX lists is the renewal of a record, which one a
renewal replaces, the one name its events carry, and what a failed renew call says about whether AVX acted.

AppViewX files every renewal under a NEW certificate record (issue 22; the renew page: response.resourceId is
"Identifier of the certificate record that has been created"), so the renewal is looked for under any record:
`named_record`/`renewal_in_named` when AVX's answer named it, else `choose_renewal` (same common name, another serial,
issued after the request, under exactly one record). `renewal_finder.py` does the AVX reads around them."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from shared.appviewx.client import AvxCertificateRecord
from shared.appviewx.records import PendingRecord
from shared.core.certificates import derive_certificate_name
from shared.core.errors import AvxError

REVOKED_STATES = ("revoked", "expired", "rejected", "failed", "cancelled", "canceled")
# CAs backdate a new certificate's notBefore (Let's Encrypt 1 h, AD CS 10 min): "issued after the request" allows it.
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


def named_record(record: PendingRecord) -> str | None:
    """The record AVX's renew answer named, when it is not the requested one: the new record AVX created."""
    named = record.avx_resource_id
    return named if named and named != record.requested_resource_id else None


def is_candidate(record: PendingRecord, listed: AvxCertificateRecord) -> bool:
    """Not revoked, a serial other than the replaced one, and (when known) the replaced certificate's common name."""
    if (listed.status or "").lower() in REVOKED_STATES:
        return False
    serial = normalise_serial(listed.serial_number)
    if serial is None or serial == normalise_serial(record.serial_number):
        return False
    return not record.common_name or (listed.common_name or "").lower() == record.common_name.lower()


def holds_replaced(record: PendingRecord, listed: list[AvxCertificateRecord]) -> bool:
    """The listing is the renewed record's: it lists the replaced serial."""
    replaced = normalise_serial(record.serial_number)
    return replaced is not None and any(normalise_serial(c.serial_number) == replaced for c in listed)


def _valid_to(listed: AvxCertificateRecord) -> datetime:
    return parse_avx_time(listed.valid_to) or datetime.min.replace(tzinfo=UTC)


def renewal_in_named(record: PendingRecord, listed: list[AvxCertificateRecord]) -> AvxCertificateRecord | None:
    """The renewal in the named record's listing (the one valid longest), or None while it lists none."""
    renewals = sorted((c for c in listed if is_candidate(record, c)), key=_valid_to, reverse=True)
    return renewals[0] if renewals else None


def issued_after_request(record: PendingRecord, starts: datetime | None) -> bool:
    return starts is not None and starts >= record.created_at - BACKDATE_ALLOWANCE


@dataclass(frozen=True)
class RenewalChoice:
    """The renewal among the listed certificates: `found`, or none yet; `ambiguous` names the records that each
    hold a qualifying certificate (nothing is picked then)."""

    found: AvxCertificateRecord | None
    ambiguous: tuple[str, ...] = ()


def choose_renewal(record: PendingRecord, dated: list[tuple[AvxCertificateRecord, datetime | None]]) -> RenewalChoice:
    """Among (listing, issued-at) pairs, the certificate that renews the record's: a candidate issued after the
    request, under exactly one record (the one valid longest there)."""
    renewals = [c for c, starts in dated if is_candidate(record, c) and issued_after_request(record, starts)]
    resources = sorted({c.resource_id or "" for c in renewals})
    if len(resources) > 1:
        return RenewalChoice(None, tuple(resources))
    renewals.sort(key=_valid_to, reverse=True)
    return RenewalChoice(renewals[0] if renewals else None)


def knowing_replaced(record: PendingRecord, replaced: AvxCertificateRecord | None) -> PendingRecord:
    """The record, with what it did not know of the replaced certificate filled in from its listing."""
    if replaced is None:
        return record
    return replace(
        record,
        common_name=record.common_name or replaced.common_name,
        serial_number=record.serial_number or replaced.serial_number,
        replaced_valid_from=record.replaced_valid_from or replaced.valid_from,
        replaced_valid_to=record.replaced_valid_to or replaced.valid_to,
    )


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
