"""The daily sweep's rules, pure and without I/O: when a certificate is due for renewal (by its own lifetime, the way
cert-manager renews at a fraction of it), which expiry warning it has earned, and what the sweep will do about it.

- Due: when the remaining part of its lifetime falls below `RENEW_AT_REMAINING_FRACTION` (default 1/3; at least 1/2
  for lifetimes under 10 days, which public CAs now issue), or below `RENEW_BEFORE_DAYS` when that is set (and
  shorter than the lifetime), whichever comes first. Each certificate is made due a little earlier by a jitter drawn from its name (at most 5% of its
  lifetime and 24 h), so certificates issued together do not all renew in the same sweep; never later.
- The expiry ladder: a certificate nobody renews in time earns one warning at 30, 14, 7, 3 and 1 days left, then
  expired; the step is the smallest one not below the days left (6 days left → the 7-day step).
"""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.appviewx.backoff import next_attempt_at
from shared.core.timestamps import iso_utc, utc
from shared.vault.event_decisions import Owner

DEFAULT_REMAINING_FRACTION = 1 / 3
SHORT_LIFETIME = timedelta(days=10)
SHORT_LIFETIME_FRACTION = 0.5
# Without a known lifetime (no notBefore) the rule falls back to Key Vault's own near-expiry point.
UNKNOWN_LIFETIME_BEFORE = timedelta(days=30)
MAX_JITTER = timedelta(hours=24)
JITTER_SHARE = 0.05
LADDER_DAYS = (1, 3, 7, 14, 30)
EXPIRED_STEP = 0


@dataclass(frozen=True)
class RenewalWindow:
    """When certificates become due (`RENEW_AT_REMAINING_FRACTION`, `RENEW_BEFORE_DAYS`)."""

    remaining_fraction: float = DEFAULT_REMAINING_FRACTION
    before_days: float | None = None


def jitter(name: str, lifetime: timedelta | None) -> timedelta:
    """A stable share of a day (at most 5% of the lifetime) drawn from the certificate's name."""
    if lifetime is None or lifetime <= timedelta(0):
        return timedelta(0)
    draw = int.from_bytes(hashlib.sha256(name.lower().encode()).digest()[:8], "big") / 2**64
    return min(MAX_JITTER, lifetime * JITTER_SHARE) * draw


def due_at(
    name: str, not_before: datetime | None, expires_on: datetime | None, window: RenewalWindow
) -> datetime | None:
    """When the certificate becomes due for renewal; None when its expiry is unknown."""
    if expires_on is None:
        return None
    expires = utc(expires_on)
    lifetime = expires - utc(not_before) if not_before is not None and utc(not_before) < expires else None
    candidates: list[datetime] = []
    if lifetime is not None:
        fraction = window.remaining_fraction
        if lifetime < SHORT_LIFETIME:
            fraction = max(fraction, SHORT_LIFETIME_FRACTION)
        candidates.append(expires - lifetime * fraction)
    before = timedelta(days=window.before_days) if window.before_days is not None else None
    # Not shorter than the lifetime, it would make each new version due the day it is issued (renewed every sweep):
    # then, like cert-manager's renewBefore, it does not count.
    if before is not None and (lifetime is None or before < lifetime):
        candidates.append(expires - before)
    if not candidates:
        candidates.append(expires - UNKNOWN_LIFETIME_BEFORE)
    return min(candidates) - jitter(name, lifetime)


def ladder_step(expires_on: datetime | None, now: datetime) -> int | None:
    """The expiry warning a certificate has earned: 30, 14, 7, 3 or 1 (days), EXPIRED_STEP once expired, None while
    more than 30 days are left or the expiry is unknown."""
    if expires_on is None:
        return None
    days_left = (utc(expires_on) - utc(now)).total_seconds() / 86400
    if days_left <= 0:
        return EXPIRED_STEP
    return next((step for step in LADDER_DAYS if days_left <= step), None)


class PlanAction(enum.StrEnum):
    """What the next sweep does with a certificate."""

    RENEW = "renew"  # due, stored from AppViewX: renewed through the webhook's pipeline
    WAIT = "wait"  # not due yet
    BACKOFF = "backoff"  # due, but its last renewal failed: waits out the backoff
    LEFT_TO_RCL = "left-to-rcl"  # due, RCL renews it in its own night: reported while it is not renewed
    REPORT = "report"  # nobody renews it: reported by the expiry ladder
    SKIP = "skip"  # disabled, or no expiry to plan by


@dataclass(frozen=True)
class RenewalFailures:
    """A certificate's failed renewals in a row (the sweep's backoff), as stored."""

    count: int
    last_failure_at: datetime
    last_reason: str | None

    @property
    def retry_at(self) -> datetime:
        return next_attempt_at(utc(self.last_failure_at), self.count)


def failures_since(failures: RenewalFailures | None, renewed_at: datetime | None) -> RenewalFailures | None:
    """The failures that still count: none once a renewal landed after the last of them (`renewed_at`: the current
    version's notBefore, or the last outcome `renewed`). A webhook or a completed pending renewal ends the backoff as
    the sweep's own success does (cert-manager resets its backoff on issuance), whichever path wrote the row."""
    if failures is None or renewed_at is None:
        return failures
    return None if utc(renewed_at) > utc(failures.last_failure_at) else failures


@dataclass(frozen=True)
class PlannedCertificate:
    """One certificate as the plan shows it."""

    name: str
    version: str
    owner: Owner
    action: PlanAction
    reason: str
    due_at: datetime | None
    expires_on: datetime | None
    failures: RenewalFailures | None = None

    def to_json(self, now: datetime) -> dict[str, object]:
        days_left = None
        if self.expires_on is not None:
            days_left = math.floor((utc(self.expires_on) - utc(now)).total_seconds() / 86400)
        return {
            "name": self.name,
            "version": self.version or None,
            "owner": self.owner,
            "action": self.action,
            "reason": self.reason,
            "dueAt": iso_utc(self.due_at),
            "expiresOn": iso_utc(self.expires_on),
            "daysLeft": days_left,
            "failures": self.failures.count if self.failures else 0,
            "retryAt": iso_utc(self.failures.retry_at) if self.failures else None,
            "lastFailureReason": self.failures.last_reason if self.failures else None,
        }


@dataclass(frozen=True)
class CertificateFacts:
    """What the plan needs of a certificate's current version (from Key Vault's list)."""

    name: str
    version: str
    not_before: datetime | None
    expires_on: datetime | None
    enabled: bool | None
    owner: Owner


def plan_certificate(
    facts: CertificateFacts,
    failures: RenewalFailures | None,
    window: RenewalWindow,
    now: datetime,
    *,
    force: bool = False,
) -> PlannedCertificate:
    """What the sweep does with one certificate, and why (`force`: an operator's renewal, which skips the backoff)."""
    due = due_at(facts.name, facts.not_before, facts.expires_on, window)
    failures = failures_since(failures, facts.not_before)

    def planned(action: PlanAction, reason: str) -> PlannedCertificate:
        return PlannedCertificate(
            facts.name, facts.version, facts.owner, action, reason, due, facts.expires_on, failures
        )

    if facts.enabled is False:
        return planned(PlanAction.SKIP, "disabled in Key Vault: neither renewed nor reported")
    if due is None:
        return planned(PlanAction.SKIP, "Key Vault shows no expiry to plan by")
    if facts.owner is Owner.UNMANAGED:
        return planned(
            PlanAction.REPORT, "nobody renews it (not stored from AppViewX, not RCL's): warned at 30, 14, 7, 3, 1 days"
        )
    if now < due:
        return planned(PlanAction.WAIT, f"not due until {iso_utc(due)} (by its lifetime)")
    if facts.owner is Owner.RCL:
        return planned(PlanAction.LEFT_TO_RCL, "due by its lifetime; RCL renews it in its own night")
    if failures is not None and failures.count > 0 and now < failures.retry_at and not force:
        last = f" (last: {failures.last_reason})" if failures.last_reason else ""
        return planned(
            PlanAction.BACKOFF,
            f"due, but in backoff until {iso_utc(failures.retry_at)} after {failures.count} failed renewal(s){last}",
        )
    return planned(PlanAction.RENEW, "due by its lifetime; renewed through AppViewX")
