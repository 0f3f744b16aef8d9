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
call). The decisions are the pure functions of `renewal_rules.py`; this module is the AVX reads around them.
"""

from __future__ import annotations

import logging
from datetime import datetime

from shared.appviewx.client import AvxCertificateRecord, AvxClient
from shared.appviewx.records import PendingRecord
from shared.appviewx.renewal_rules import (
    choose_renewal,
    current_certificate,
    holds_replaced,
    is_candidate,
    knowing_replaced,
    named_record,
    parse_avx_time,
    renewal_in_named,
)
from shared.core.certificates import CertificateParseError, order_leaf_first, parse_certificates
from shared.core.errors import AvxError

log = logging.getLogger("certrenew.appviewx")
# Candidates without validFrom are dated by downloading them; at most this many per completion try.
MAX_DATING_DOWNLOADS = 10


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
