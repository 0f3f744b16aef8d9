"""A renewal RCL scheduled, as the nightly run records it: its state, and the table key it is stored under (one
record per certificate per night). Pure: no I/O and no clock."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.core.timestamps import utc
from shared.rcl.client import CertificateResponse


class RecordState(StrEnum):
    """A renewal record's stored `state`: open ones are looked at by every check until they close."""

    SCHEDULED = "scheduled"
    NOT_INSTALLED = "notinstalled"  # renewed by RCL, not yet installed on its target
    UNKNOWN = "unknown"  # a renewal request whose answer never came: what it scheduled is not known
    RENEWED = "renewed"
    FAILED = "failed"
    RESOLVED = "resolved"  # an unknown request: what RCL renewed since was found and reported


OPEN_STATES = (RecordState.SCHEDULED, RecordState.NOT_INSTALLED, RecordState.UNKNOWN)

_ROW_KEY_FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
_ROW_KEY_MAX = 512


@dataclass(frozen=True)
class ScheduledRenewal:
    """A certificate RCL said it scheduled, as recorded that night."""

    record_key: str
    certificate_id: int | None
    certificate_name: str
    target: str | None
    expiry_date: datetime | None  # the expiry it had when it was scheduled
    scheduled_at: datetime
    run_id: str | None
    state: RecordState = RecordState.SCHEDULED
    renewed_at: datetime | None = None  # when a check first saw it renewed but not installed

    @property
    def is_unknown_request(self) -> bool:
        return self.state is RecordState.UNKNOWN


def night_of(moment: datetime) -> str:
    """The UTC date a run belongs to; per-night call budgets and record keys use it."""
    return utc(moment).strftime("%Y%m%d")


def unknown_request_key(scheduled_at: datetime) -> str:
    """The record of a night's renewal request whose answer never came (one per night)."""
    return f"{night_of(scheduled_at)}-unknown"


def unknown_request(scheduled_at: datetime, run_id: str | None) -> ScheduledRenewal:
    return ScheduledRenewal(
        record_key=unknown_request_key(scheduled_at),
        certificate_id=None,
        certificate_name="",
        target=None,
        expiry_date=None,
        scheduled_at=utc(scheduled_at),
        run_id=run_id,
        state=RecordState.UNKNOWN,
    )


def without_duplicates(
    certificates: Sequence[CertificateResponse], scheduled_at: datetime | None = None
) -> tuple[list[CertificateResponse], list[CertificateResponse]]:
    """RCL's answer with each certificate once (by id, else by exact name, and, given the night, by the record key
    it is stored under), and the dropped repeats: a key twice in one table transaction would fail the whole
    night's batch."""
    seen: set[str] = set()
    stored: set[str] = set()
    unique: list[CertificateResponse] = []
    repeated: list[CertificateResponse] = []
    for certificate in certificates:
        row_key = record_key(scheduled_at, certificate) if scheduled_at is not None else None
        if certificate.key in seen or (row_key is not None and row_key in stored):
            repeated.append(certificate)
        else:
            seen.add(certificate.key)
            if row_key is not None:
                stored.add(row_key)
            unique.append(certificate)
    return unique, repeated


def record_key(scheduled_at: datetime, certificate: CertificateResponse) -> str:
    """One record per certificate per night: a second run the same night updates it instead of adding a twin,
    while a certificate RCL schedules again on a later night gets a new record (the old one still fails in time)."""
    return _row_key(f"{night_of(scheduled_at)}-{certificate.key}")


def _row_key(text: str) -> str:
    """`text` as a table RowKey. An ordinary key is kept as it is (existing records stay found); one that had to be
    changed (characters a RowKey forbids replaced, or cut to the length limit) gets a digest of the original, so two
    names that differ only there still get two records: a key twice in one batch would fail the whole night's."""
    cleaned = _ROW_KEY_FORBIDDEN.sub("_", text)
    if cleaned == text and len(text) <= _ROW_KEY_MAX:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{cleaned[: _ROW_KEY_MAX - len(digest) - 1]}~{digest}"


def scheduled_from(certificate: CertificateResponse, scheduled_at: datetime, run_id: str | None) -> ScheduledRenewal:
    return ScheduledRenewal(
        record_key=record_key(scheduled_at, certificate),
        certificate_id=certificate.id,
        certificate_name=certificate.name,
        target=certificate.target,
        expiry_date=certificate.expiry_date,
        scheduled_at=utc(scheduled_at),
        run_id=run_id,
    )
