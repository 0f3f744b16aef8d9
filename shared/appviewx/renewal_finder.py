"""Where AppViewX keeps a renewal: completion looks under ANY certificate record (issue 22).

AppViewX files every renewal under a NEW record: the renew page's `response.resourceId` is "Identifier of the
certificate record that has been created" (its sample names it `<renewed cert ID>` and repeats it as
`newCertificateId`); the record that was renewed stays, with its old certificate. So, for an open renewal record:

- AVX's answer named a record other than the requested one: that record is the renewal, exactly (the certificate it
  lists once approved). When the named record is the one that was renewed (it lists the replaced serial: an AVX that
  names the requested record, or a record written when the app assumed renewals in place), the general rule applies.
- Otherwise a listed certificate qualifies when it has the replaced certificate's common name, a serial other than
  the replaced one, and was issued after the request: by the listing's `validFrom`, else by the downloaded
  certificate's own notBefore. Another AVX record of the same name issued before the request never qualifies.
  Qualifying certificates under two or more records are ambiguous: nothing is picked, an operator decides.

What completion needs of the replaced certificate (common name, serial) is read from the renewed record, which AVX
keeps: when a webhook record goes pending, or here at completion; never before the renew (one AVX round trip per
call). The decisions are pure functions; `find_renewed` is the I/O around them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from shared.appviewx.client import AvxCertificateRecord, AvxClient
from shared.appviewx.records import PendingRecord
from shared.core.certificates import CertificateParseError, order_leaf_first, parse_certificates
from shared.core.errors import AvxError

log = logging.getLogger("certrenew.appviewx")
REVOKED_STATES = ("revoked", "expired", "rejected", "failed", "cancelled", "canceled")
# CAs backdate a new certificate's notBefore (Let's Encrypt 1 h, AD CS 10 min): "issued after the request" allows it.
BACKDATE_ALLOWANCE = timedelta(hours=2)
# Candidates without validFrom are dated by downloading them; at most this many per completion try.
MAX_DATING_DOWNLOADS = 10
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


def current_certificate(listed: list[AvxCertificateRecord], serial: str | None) -> AvxCertificateRecord | None:
    """The certificate a renewal replaces, in the listing of the renewed record: the one with the requested serial,
    else the one valid longest."""
    wanted = normalise_serial(serial)
    if wanted:
        return next((c for c in listed if normalise_serial(c.serial_number) == wanted), None)
    dated = sorted((c for c in listed if c.serial_number), key=_valid_to, reverse=True)
    return dated[0] if dated else None


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


# -- AVX reads ------------------------------------------------------------------------------------------------------


class RenewalNotFound(Exception):
    """No renewal to store yet (`code` NOT_READY), or an ambiguous one (AVX_RENEWAL_AMBIGUOUS). `record` is the
    renewal record with what was learned meanwhile (the replaced certificate), to be saved with the outcome."""

    def __init__(self, code: str, message: str, record: PendingRecord, remediation: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.record, self.remediation = code, message, record, remediation


def with_replaced(record: PendingRecord, avx: AvxClient) -> PendingRecord:
    """The record, knowing the replaced certificate's common name and serial: read (one search) from the renewed
    record, which AVX keeps with its old certificate, when the request named only its resourceId."""
    if (record.common_name and record.serial_number) or not record.requested_resource_id:
        return record
    listed = avx.search(resource_id=record.requested_resource_id)
    return knowing_replaced(record, current_certificate(listed, record.serial_number))


def learn_replaced(record: PendingRecord, avx: AvxClient) -> PendingRecord:
    """`with_replaced`, best effort (the webhook's pending and refused paths: an AVX problem only leaves it to
    completion)."""
    try:
        return with_replaced(record, avx)
    except AvxError as exc:
        log.info("The certificate renewal %s replaces is read later: %s", record.pending_id, exc.code)
        return record


def _issued_at(listed: AvxCertificateRecord, avx: AvxClient) -> datetime | None:
    """When a listed certificate was issued: its validFrom, else the downloaded certificate's notBefore."""
    starts = parse_avx_time(listed.valid_from)
    if starts is not None:
        return starts
    try:
        leaf = order_leaf_first(parse_certificates(avx.download(listed, "CRT", None)))[0]
    except (AvxError, CertificateParseError) as exc:
        log.warning("AppViewX certificate %s could not be dated: %s", listed.resource_id, exc)
        return None
    return leaf.not_valid_before_utc


def _dated(
    record: PendingRecord, listed: list[AvxCertificateRecord], avx: AvxClient
) -> list[tuple[AvxCertificateRecord, datetime | None]]:
    dated: list[tuple[AvxCertificateRecord, datetime | None]] = []
    downloads = 0
    for candidate in listed:
        if not is_candidate(record, candidate):
            continue
        if parse_avx_time(candidate.valid_from) is None:
            downloads += 1
            if downloads > MAX_DATING_DOWNLOADS:
                log.warning(
                    "More than %d undated AppViewX certificates of %s", MAX_DATING_DOWNLOADS, record.common_name
                )
                break
        dated.append((candidate, _issued_at(candidate, avx)))
    return dated


def _in_named_record(record: PendingRecord, named: str, avx: AvxClient) -> AvxCertificateRecord | None:
    """The renewal in the record AVX named; None when that record is the renewed one (the general rule decides)."""
    listed = avx.search(resource_id=named)
    if holds_replaced(record, listed):
        return None
    found = renewal_in_named(record, listed)
    if found is None:
        raise RenewalNotFound(
            "NOT_READY", f"AppViewX does not list the renewed certificate's record {named} yet", record
        )
    return found


def find_renewed(record: PendingRecord, avx: AvxClient) -> tuple[AvxCertificateRecord, PendingRecord]:
    """The certificate AVX renewed for the record, and the record knowing what it replaces. Raises RenewalNotFound
    (not yet, or ambiguous) and AvxError (AVX unreachable or refusing)."""
    named = named_record(record)
    if named:
        found = _in_named_record(record, named, avx)
        if found is not None:
            return found, record
    record = with_replaced(record, avx)
    if not record.common_name:
        raise RenewalNotFound("NOT_READY", "AppViewX does not list the certificate that was renewed", record)
    choice = choose_renewal(record, _dated(record, avx.search(common_name=record.common_name), avx))
    if choice.ambiguous:  # never guess between twins: an operator tells which
        raise RenewalNotFound(
            "AVX_RENEWAL_AMBIGUOUS",
            f"ambiguous: AppViewX lists renewals of {record.common_name} issued after the request under several "
            f"records ({', '.join(choice.ambiguous)}) and none is known to be this renewal's; nothing is stored",
            record,
            remediation="Check in AppViewX which record holds this renewal; renew by resourceId to avoid this.",
        )
    if choice.found is None:
        raise RenewalNotFound("NOT_READY", f"AppViewX lists no renewal of {record.common_name} yet", record)
    return choice.found, record
