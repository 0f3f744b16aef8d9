"""Decisions of the nightly RCL path: what a scheduled renewal became (the rule chain behind `classify`), whether
RCL's list is believed, and which certificates are near expiry. Pure: no I/O and no clock (`now` is always an
argument), so each rule is tested on its own. What a scheduled renewal is lives in `shared.rcl.scheduled`, the run
summaries in `shared.rcl.summaries`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from shared.core.timestamps import iso_utc, utc
from shared.rcl.client import CertificateResponse
from shared.rcl.scheduled import ScheduledRenewal

NOT_RENEWED = "RCL_NOT_RENEWED"
CERTIFICATE_GONE = "RCL_CERTIFICATE_GONE"
NOT_INSTALLED = "RCL_NOT_INSTALLED"
EXPIRY_EARLIER = "RCL_EXPIRY_EARLIER"
EXPIRY_UNREADABLE = "RCL_EXPIRY_UNREADABLE"
RENEWAL_UNKNOWN = "RCL_RENEWAL_UNKNOWN"
LIST_SUSPECT = "RCL_LIST_SUSPECT"

# A list that lost this many open records at once (and most of them) is more likely a glitch than real deletions.
SUSPECT_GONE_MINIMUM = 3

# RCL's quota is 50 requests a week: a night may spend at most this many calls per endpoint (one try, one retry).
MAX_CALLS_PER_NIGHT = 2

# A renewal moves the expiry by weeks; a smaller move is a date's rounding (RCL keeps 100 ns, Python 1 µs), not one.
EXPIRY_MOVE_TOLERANCE = timedelta(minutes=1)


class Outcome(StrEnum):
    RENEWED = "renewed"
    NOT_INSTALLED = "notinstalled"  # renewed, not installed yet: stays open until installed or the grace is over
    PENDING = "pending"
    FAILED = "failed"


@dataclass(frozen=True)
class Verdict:
    record: ScheduledRenewal
    outcome: Outcome
    installed: bool = False
    new_expiry: datetime | None = None
    reason: str | None = None
    message: str | None = None
    # The name of the listed vault the renewed certificate was found in; "" looked for but not told; None not looked.
    vault: str | None = None

    @property
    def closes(self) -> bool:
        """Renewed and failed records are done; pending and not-installed ones are looked at again next check."""
        return self.outcome in (Outcome.RENEWED, Outcome.FAILED)

    @property
    def changes_record(self) -> bool:
        """Whether the record is written: closed, or first seen renewed but not installed."""
        return self.closes or (self.outcome is Outcome.NOT_INSTALLED and self.record.renewed_at is None)


@dataclass(frozen=True)
class NearExpiry:
    certificate: CertificateResponse
    days_left: int | None  # None: the expiry RCL sent could not be read
    expiry: datetime | None = None  # the deployed certificate's expiry (RCL's own, unless not installed yet)
    reason: str | None = None


@dataclass
class CertificateIndex:
    """RCL's list, looked up by id and by name (thousands of entries: no linear search per record)."""

    by_id: dict[int, CertificateResponse] = field(default_factory=dict)
    by_exact_name: dict[str, list[CertificateResponse]] = field(default_factory=dict)
    by_name: dict[str, list[CertificateResponse]] = field(default_factory=dict)

    @classmethod
    def of(cls, certificates: Iterable[CertificateResponse]) -> CertificateIndex:
        index = cls()
        for certificate in certificates:
            if certificate.id is not None:
                index.by_id[certificate.id] = certificate
            index.by_exact_name.setdefault(certificate.name, []).append(certificate)
            index.by_name.setdefault(certificate.name.lower(), []).append(certificate)
        return index

    def find(self, record: ScheduledRenewal) -> CertificateResponse | None:
        if record.certificate_id is not None and record.certificate_id in self.by_id:
            return self.by_id[record.certificate_id]
        # RCL keeps names as given (two names differing only in case are two certificates): the exact name first,
        # then a name differing only in case, each only when unambiguous.
        for candidates in (
            self.by_exact_name.get(record.certificate_name, []),
            self.by_name.get(record.certificate_name.lower(), []),
        ):
            if record.certificate_id is not None and record.target:
                # RCL re-created it under a new id: only a name for the same target counts.
                candidates = [c for c in candidates if c.target == record.target]
            if len(candidates) == 1:
                return candidates[0]
        return None


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


@dataclass(frozen=True)
class Judgement:
    """What every classification rule looks at: a scheduled renewal, RCL's entry for it now, and the grace times."""

    record: ScheduledRenewal
    current: CertificateResponse
    now: datetime
    grace: timedelta  # how long RCL may take to renew
    install_grace: timedelta  # how long RCL may take to install a renewed certificate on its target


def _expiry_moved_earlier(facts: Judgement) -> Verdict | None:
    record, current = facts.record, facts.current
    if (
        record.expiry_date is None
        or current.expiry_date is None
        or utc(current.expiry_date) >= utc(record.expiry_date) - EXPIRY_MOVE_TOLERANCE
    ):
        return None
    return Verdict(
        record,
        Outcome.FAILED,
        reason=EXPIRY_EARLIER,
        message=(
            f"RCL now lists {record.certificate_name} with an expiry earlier than when it was scheduled ("
            f"{iso_utc(current.expiry_date)}, was {iso_utc(record.expiry_date)}): the certificate was replaced or "
            "revoked outside this app, or RCL's data changed; check it in the RCL portal"
        ),
    )


def _renewed_and_installed(facts: Judgement) -> Verdict | None:
    if not is_renewed(facts.record, facts.current) or not is_installed(facts.current):
        return None
    return Verdict(facts.record, Outcome.RENEWED, installed=True, new_expiry=facts.current.expiry_date)


def _renewed_but_not_installed_in_time(facts: Judgement) -> Verdict | None:
    record, current = facts.record, facts.current
    if not is_renewed(record, current) or is_installed(current):
        return None
    seen = record.renewed_at or utc(facts.now)
    if utc(facts.now) - seen <= facts.install_grace:
        return None
    hours = facts.install_grace.total_seconds() / 3600
    return Verdict(
        record,
        Outcome.FAILED,
        new_expiry=current.expiry_date,
        reason=NOT_INSTALLED,
        message=(
            f"RCL renewed {record.certificate_name} (new expiry {iso_utc(current.expiry_date) or 'unknown'}) but has "
            f"not installed it on its target ({current.target or 'unknown target'}) within {hours:g} h: the deployed "
            "certificate is still the old one; RCL's Notification page shows why"
        ),
    )


def _renewed_not_installed_yet(facts: Judgement) -> Verdict | None:
    if not is_renewed(facts.record, facts.current) or is_installed(facts.current):
        return None
    return Verdict(facts.record, Outcome.NOT_INSTALLED, installed=False, new_expiry=facts.current.expiry_date)


def _within_grace(facts: Judgement) -> Verdict | None:
    if utc(facts.now) - utc(facts.record.scheduled_at) > facts.grace:
        return None
    return Verdict(facts.record, Outcome.PENDING)


def _not_renewed(facts: Judgement) -> Verdict:
    record = facts.record
    hours = facts.grace.total_seconds() / 3600
    return Verdict(
        record,
        Outcome.FAILED,
        reason=NOT_RENEWED,
        message=(
            f"RCL scheduled {record.certificate_name} for renewal at {iso_utc(record.scheduled_at)} but it was not "
            f"renewed within {hours:g} h (expiry still {iso_utc(facts.current.expiry_date) or 'unknown'}); RCL emails "
            "the reason, and the RCL portal's Notification page shows it"
        ),
    )


def _gone(record: ScheduledRenewal) -> Verdict:
    return Verdict(
        record,
        Outcome.FAILED,
        reason=CERTIFICATE_GONE,
        message=f"{record.certificate_name} was scheduled for renewal but is no longer in RCL's certificate list",
    )


# The rules of `classify`, in order: the first that decides gives the verdict (a record no rule decides was not
# renewed in time). Each is a pure function of one Judgement and can be tested on its own.
CLASSIFY_RULES: tuple[Callable[[Judgement], Verdict | None], ...] = (
    _expiry_moved_earlier,
    _renewed_and_installed,
    _renewed_but_not_installed_in_time,
    _renewed_not_installed_yet,
    _within_grace,
)


def classify(
    record: ScheduledRenewal,
    current: CertificateResponse | None,
    now: datetime,
    grace: timedelta,
    install_grace: timedelta = timedelta(hours=24),
) -> Verdict:
    """What a scheduled renewal became, judged against RCL's list at `now`."""
    if current is None:
        return _gone(record)
    facts = Judgement(record, current, now, grace, install_grace)
    for rule in CLASSIFY_RULES:
        verdict = rule(facts)
        if verdict is not None:
            return verdict
    return _not_renewed(facts)


def suspect_list(open_count: int, gone_count: int, listed_count: int) -> str | None:
    """Why RCL's list is not believed (records then stay open), or None. An empty list while renewals are open, or
    most open records vanishing at once, is far likelier a glitch or the wrong subscription than real deletions."""
    if open_count and not listed_count:
        return f"RCL listed no certificates while {open_count} renewal(s) are open"
    if gone_count >= SUSPECT_GONE_MINIMUM and gone_count * 2 > open_count:
        return f"{gone_count} of {open_count} open renewals vanished from RCL's list at once"
    return None


def judge_open_renewals(
    open_records: Sequence[ScheduledRenewal],
    index: CertificateIndex,
    listed_count: int,
    now: datetime,
    grace: timedelta,
    install_grace: timedelta,
) -> tuple[list[Verdict], str | None]:
    """Each open record's verdict against RCL's list, and why the list is not believed (None: it is)."""
    verdicts = [classify(record, index.find(record), now, grace, install_grace) for record in open_records]
    gone = [v for v in verdicts if v.reason == CERTIFICATE_GONE]
    suspicion = suspect_list(len(open_records), len(gone), listed_count)
    if suspicion:
        # Not believed: the vanished records stay open for the next check instead of being failed.
        verdicts = [v for v in verdicts if v.reason != CERTIFICATE_GONE]
    return verdicts, suspicion


def deployed_expiries(verdicts: Iterable[Verdict], index: CertificateIndex) -> dict[str, datetime]:
    """Where RCL renewed but did not install yet, the deployed certificate is still the old one: its expiry (the
    recorded one) by certificate key, for the near-expiry warning."""
    return {
        current.key: v.record.expiry_date
        for v in verdicts
        if v.outcome is Outcome.NOT_INSTALLED
        and v.record.expiry_date is not None
        and (current := index.find(v.record)) is not None
    }


def renewed_since(
    request: ScheduledRenewal, listed: Iterable[CertificateResponse], known: set[str]
) -> list[CertificateResponse]:
    """Certificates issued after a renewal request whose answer never came (and not followed by a record)."""
    since = utc(request.scheduled_at) - EXPIRY_MOVE_TOLERANCE
    return [c for c in listed if c.issue_date is not None and utc(c.issue_date) >= since and c.key not in known]


def days_left(expiry: datetime, now: datetime) -> int:
    """Whole days until expiry, rounded down (negative once expired)."""
    return math.floor((utc(expiry) - utc(now)) / timedelta(days=1))


def near_expiry(
    certificates: Iterable[CertificateResponse],
    now: datetime,
    warning_days: int,
    deployed_expiry: dict[str, datetime] | None = None,
) -> list[NearExpiry]:
    """Every certificate expiring within `warning_days` (expired ones too), soonest first; then every certificate
    whose expiry could not be read (it may be expiring: it is reported, not dropped). `deployed_expiry` overrides
    RCL's expiry by certificate key where the deployed certificate is still the previous one (not installed yet)."""
    limit = utc(now) + timedelta(days=warning_days)
    overrides = deployed_expiry or {}
    found: list[NearExpiry] = []
    unreadable: list[NearExpiry] = []
    for certificate in certificates:
        expiry = overrides.get(certificate.key, certificate.expiry_date)
        if expiry is not None:
            if utc(expiry) <= limit:
                found.append(NearExpiry(certificate, days_left(expiry, now), expiry))
        elif certificate.expiry_unreadable:
            unreadable.append(NearExpiry(certificate, None, None, EXPIRY_UNREADABLE))
    found.sort(key=lambda n: (utc(n.expiry or now), n.certificate.name))
    return found + sorted(unreadable, key=lambda n: n.certificate.name)
