"""Decisions of the nightly RCL path: what a scheduled renewal became, which certificates are near expiry, and the
run summaries. Pure: no I/O and no clock (`now` is always an argument), so each rule is tested on its own."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from shared.rcl import CertificateResponse
from shared.timestamps import iso_utc, utc

NOT_RENEWED = "RCL_NOT_RENEWED"
CERTIFICATE_GONE = "RCL_CERTIFICATE_GONE"

# RCL's quota is 50 requests a week: a night may spend at most this many calls per endpoint (one try, one retry).
MAX_CALLS_PER_NIGHT = 2

# A renewal moves the expiry by weeks; a smaller move is a date's rounding (RCL keeps 100 ns, Python 1 µs), not one.
EXPIRY_MOVE_TOLERANCE = timedelta(minutes=1)

_ROW_KEY_FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


class Outcome(StrEnum):
    RENEWED = "renewed"
    PENDING = "pending"
    FAILED = "failed"


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


@dataclass(frozen=True)
class Verdict:
    record: ScheduledRenewal
    outcome: Outcome
    installed: bool = False
    new_expiry: datetime | None = None
    reason: str | None = None
    message: str | None = None

    @property
    def closes(self) -> bool:
        """Renewed and failed records are done; pending ones are looked at again by the next check."""
        return self.outcome is not Outcome.PENDING


@dataclass(frozen=True)
class NearExpiry:
    certificate: CertificateResponse
    days_left: int


def night_of(moment: datetime) -> str:
    """The UTC date a run belongs to; per-night call budgets and record keys use it."""
    return utc(moment).strftime("%Y%m%d")


def record_key(scheduled_at: datetime, certificate: CertificateResponse) -> str:
    """One record per certificate per night: a second run the same night updates it instead of adding a twin,
    while a certificate RCL schedules again on a later night gets a new record (the old one still fails in time)."""
    return _ROW_KEY_FORBIDDEN.sub("_", f"{night_of(scheduled_at)}-{certificate.key}")[:512]


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


@dataclass
class CertificateIndex:
    """RCL's list, looked up by id and by name (thousands of entries: no linear search per record)."""

    by_id: dict[int, CertificateResponse] = field(default_factory=dict)
    by_name: dict[str, list[CertificateResponse]] = field(default_factory=dict)

    @classmethod
    def of(cls, certificates: Iterable[CertificateResponse]) -> CertificateIndex:
        index = cls()
        for certificate in certificates:
            if certificate.id is not None:
                index.by_id[certificate.id] = certificate
            index.by_name.setdefault(certificate.name.lower(), []).append(certificate)
        return index

    def find(self, record: ScheduledRenewal) -> CertificateResponse | None:
        if record.certificate_id is not None and record.certificate_id in self.by_id:
            return self.by_id[record.certificate_id]
        same_name = self.by_name.get(record.certificate_name.lower(), [])
        if record.certificate_id is not None:
            # RCL re-created it under a new id: only a name that is unambiguous (and for the same target) counts.
            same_name = [c for c in same_name if c.target == record.target] if record.target else same_name
        return same_name[0] if len(same_name) == 1 else None


def is_renewed(record: ScheduledRenewal, current: CertificateResponse) -> bool:
    """Renewed when the expiry moved past the recorded one; without a recorded expiry, when it was issued after the
    renewal was scheduled."""
    if record.expiry_date is not None and current.expiry_date is not None:
        return utc(current.expiry_date) > utc(record.expiry_date) + EXPIRY_MOVE_TOLERANCE
    if current.issue_date is not None:
        return utc(current.issue_date) > utc(record.scheduled_at) - EXPIRY_MOVE_TOLERANCE
    return False


def is_installed(current: CertificateResponse) -> bool:
    """RCL sets remoteCreateDate when it installed the certificate on its target; one older than the certificate's
    issue date belongs to the previous certificate."""
    if current.remote_create_date is None:
        return False
    if current.issue_date is None:
        return True
    return utc(current.remote_create_date) >= utc(current.issue_date) - EXPIRY_MOVE_TOLERANCE


def classify(record: ScheduledRenewal, current: CertificateResponse | None, now: datetime, grace: timedelta) -> Verdict:
    """What a scheduled renewal became, judged against RCL's list at `now`."""
    name = record.certificate_name
    if current is None:
        return Verdict(
            record,
            Outcome.FAILED,
            reason=CERTIFICATE_GONE,
            message=f"{name} was scheduled for renewal but is no longer in RCL's certificate list",
        )
    if is_renewed(record, current):
        return Verdict(record, Outcome.RENEWED, installed=is_installed(current), new_expiry=current.expiry_date)
    if utc(now) - utc(record.scheduled_at) <= grace:
        return Verdict(record, Outcome.PENDING)
    hours = grace.total_seconds() / 3600
    return Verdict(
        record,
        Outcome.FAILED,
        reason=NOT_RENEWED,
        message=(
            f"RCL scheduled {name} for renewal at {iso_utc(record.scheduled_at)} but it was not renewed within "
            f"{hours:g} h (expiry still {iso_utc(current.expiry_date) or 'unknown'}); RCL emails the reason, and the RCL "
            "portal's Notification page shows it"
        ),
    )


def days_left(expiry: datetime, now: datetime) -> int:
    """Whole days until expiry, rounded down (negative once expired)."""
    return math.floor((utc(expiry) - utc(now)) / timedelta(days=1))


def near_expiry(certificates: Iterable[CertificateResponse], now: datetime, warning_days: int) -> list[NearExpiry]:
    """Every certificate expiring within `warning_days` (expired ones too), soonest first."""
    limit = utc(now) + timedelta(days=warning_days)
    found = [
        NearExpiry(c, days_left(c.expiry_date, now))
        for c in certificates
        if c.expiry_date is not None and utc(c.expiry_date) <= limit
    ]
    return sorted(found, key=lambda n: (utc(n.certificate.expiry_date or now), n.certificate.name))


def describe_names(names: Sequence[str], limit: int = 20) -> str:
    """A readable list for a log line: at most `limit` names, each at most 100 characters."""
    shown = ", ".join(n if len(n) <= 100 else n[:97] + "..." for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass(frozen=True)
class RenewalRunSummary:
    scheduled: tuple[str, ...]
    late: bool = False

    def line(self) -> str:
        late = " (run was late)" if self.late else ""
        if not self.scheduled:
            return f"RCL renewal{late}: nothing was due; RCL scheduled 0 certificates"
        return (
            f"RCL renewal{late}: RCL scheduled {len(self.scheduled)} certificate(s): {describe_names(self.scheduled)}"
        )


@dataclass(frozen=True)
class VerifySummary:
    renewed: tuple[str, ...]
    installed: tuple[str, ...]
    pending: tuple[str, ...]
    failed: tuple[str, ...]
    near_expiry: tuple[str, ...]
    listed: int
    warning_days: int

    @classmethod
    def of(
        cls, verdicts: Sequence[Verdict], near: Sequence[NearExpiry], listed: int, warning_days: int
    ) -> VerifySummary:
        def names(outcome: Outcome, installed: bool | None = None) -> tuple[str, ...]:
            return tuple(
                v.record.certificate_name
                for v in verdicts
                if v.outcome is outcome and (installed is None or v.installed is installed)
            )

        return cls(
            renewed=names(Outcome.RENEWED),
            installed=names(Outcome.RENEWED, installed=True),
            pending=names(Outcome.PENDING),
            failed=names(Outcome.FAILED),
            near_expiry=tuple(n.certificate.name for n in near),
            listed=listed,
            warning_days=warning_days,
        )

    def line(self) -> str:
        parts = [
            f"{len(self.renewed)} renewed ({len(self.installed)} installed)",
            f"{len(self.pending)} pending",
            f"{len(self.failed)} failed",
        ]
        text = f"RCL check of {self.listed} listed certificate(s): " + ", ".join(parts)
        for label, names in (("renewed", self.renewed), ("pending", self.pending), ("failed", self.failed)):
            if names:
                text += f"; {label}: {describe_names(names)}"
        text += f"; {len(self.near_expiry)} expire within {self.warning_days} days"
        if self.near_expiry:
            text += f": {describe_names(self.near_expiry)}"
        return text
