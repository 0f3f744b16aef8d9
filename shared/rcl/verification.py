"""The morning check of the nightly RCL renewals: one look at RCL's list decides every open record, finds the
certificates near expiry and reports what an unanswered renewal request led to. The decisions live in
`shared.rcl.decisions`; this module only sequences the I/O."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from shared.azure.identity import get_token
from shared.core.errors import RclError
from shared.core.events import Event, Source
from shared.core.telemetry import emit_event
from shared.rcl.client import CertificateResponse
from shared.rcl.decisions import (
    LIST_SUSPECT,
    NOT_INSTALLED,
    RENEWAL_UNKNOWN,
    CertificateIndex,
    NearExpiry,
    Outcome,
    Verdict,
    deployed_expiries,
    judge_open_renewals,
    near_expiry,
    renewed_since,
)
from shared.rcl.run_calls import RclDependencies, call_within_budget, describe_failure, warn_date_problems
from shared.rcl.scheduled import RecordState, ScheduledRenewal, night_of
from shared.rcl.summaries import VerifySummary, describe_names

log = logging.getLogger("certrenew.rcl")


@dataclass
class _Check:
    """What one morning check found, for its RclVerifyRunCompleted event."""

    open_count: int = 0
    listed: int = 0
    verdicts: list[Verdict] | None = None
    near: list[NearExpiry] | None = None
    unreadable_dates: int = 0

    def counts(self) -> dict[str, int]:
        verdicts = self.verdicts or []

        def count(outcome: Outcome) -> int:
            return sum(1 for v in verdicts if v.outcome is outcome)

        return {
            "openCount": self.open_count,
            "listedCount": self.listed,
            "renewedCount": count(Outcome.RENEWED) + count(Outcome.NOT_INSTALLED),
            "notInstalledCount": count(Outcome.NOT_INSTALLED),
            "pendingCount": count(Outcome.PENDING),
            "failedCount": count(Outcome.FAILED),
            "nearExpiryCount": len(self.near or []),
            "unreadableDateCount": self.unreadable_dates,
        }


def _verify_completed(outcome: str, started: float, check: _Check, reason: str | None = None, **extra: object) -> None:
    emit_event(
        Event.RCL_VERIFY_RUN_COMPLETED,
        {
            "source": Source.RCL,
            "outcome": outcome,
            "reason": reason,
            "durationMs": round((time.monotonic() - started) * 1000),
            **check.counts(),
            **extra,
        },
    )


def run_verification(
    open_dependencies: Callable[[], RclDependencies],
    run_id: str | None,
    *,
    late: bool = False,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> VerifySummary:
    """The follow-up check: one look at RCL's list decides every open record, and finds certificates near expiry.
    Every check ends with one RclVerifyRunCompleted event, succeeded or failed, so a check that stops is heard."""
    started = time.monotonic()
    check = _Check()
    try:
        summary = _verify(open_dependencies, check, now or datetime.now(UTC), sleep)
    except Exception as exc:
        code, message = describe_failure(exc)
        _verify_completed("failed", started, check, code, message=message)
        raise
    _verify_completed("succeeded", started, check)
    return summary


def _verify(
    open_dependencies: Callable[[], RclDependencies],
    check: _Check,
    moment: datetime,
    sleep: Callable[[float], None],
) -> VerifySummary:
    deps = open_dependencies()
    settings = deps.settings
    everything_open = deps.state.open_renewals()  # the table first: a broken table costs no RCL call
    unknown = [r for r in everything_open if r.is_unknown_request]
    open_records = [r for r in everything_open if not r.is_unknown_request]
    check.open_count = len(open_records)
    listed = _list_certificates(deps, check, moment, sleep)

    index = CertificateIndex.of(listed)
    grace = timedelta(hours=settings.verify_grace_hours)
    install_grace = timedelta(hours=settings.install_grace_hours)
    verdicts, suspicion = judge_open_renewals(open_records, index, len(listed), moment, grace, install_grace)
    check.verdicts = verdicts
    near = near_expiry(listed, moment, settings.warning_days, deployed_expiries(verdicts, index))
    check.near = near
    for item in near:
        emit_event(
            Event.NEAR_EXPIRY,
            {
                "source": Source.RCL,
                "certificateName": item.certificate.name,
                "certificateId": item.certificate.id,
                "expiryDate": item.expiry,
                "daysLeft": item.days_left,
                "reason": item.reason,
                "message": (
                    f"RCL's expiryDate of {item.certificate.name} could not be read; check it in the RCL portal"
                    if item.reason
                    else None
                ),
            },
        )
    verdicts = _located(verdicts, deps)
    deps.state.close_verdicts(verdicts, moment)  # before the events: a failed write is retried by the next check
    for verdict in verdicts:
        _emit_verdict(verdict)
    known = {c.key for r in open_records if (c := index.find(r)) is not None}
    for request in unknown:
        _resolve_unknown(deps, request, listed, known, moment, grace)
    if suspicion:
        raise _list_not_believed(suspicion)
    return VerifySummary.of(verdicts, near, len(listed), settings.warning_days)


def _list_certificates(
    deps: RclDependencies, check: _Check, moment: datetime, sleep: Callable[[float], None]
) -> list[CertificateResponse]:
    """RCL's certificate list, within the night's call budget; its size and unusable dates are counted on `check`."""
    bearer = get_token(deps.rcl_credential, deps.settings.token_scope, "the RCL API")
    listed = call_within_budget(
        deps, night_of(moment), "list", "GET", lambda: deps.client.list_certificates(bearer), sleep
    )
    check.listed = len(listed)
    check.unreadable_dates = warn_date_problems(listed, "certificate list")
    return listed


def _list_not_believed(suspicion: str) -> RclError:
    return RclError(
        f"RCL's certificate list is not believed: {suspicion}; those renewals stay open for the next check",
        code=LIST_SUSPECT,
        remediation=(
            "Check in the RCL portal that the certificates still exist and that the app's identity is registered "
            "for the right subscription. If they were really deleted, the records fail after the next checks."
        ),
    )


def _resolve_unknown(
    deps: RclDependencies,
    request: ScheduledRenewal,
    listed: list[CertificateResponse],
    known: set[str],
    now: datetime,
    grace: timedelta,
) -> None:
    """A renewal request whose answer never came: report what RCL renewed since, or fail it after the grace."""
    renewed = renewed_since(request, listed, known)
    if renewed:
        for certificate in renewed:
            emit_event(
                Event.RENEWED,
                {
                    "source": Source.RCL,
                    "certificateName": certificate.name,
                    "certificateId": certificate.id,
                    "expiryDate": certificate.expiry_date,
                    "installed": certificate.remote_create_date is not None,
                },
            )
        message = (
            f"The renewal request of {request.scheduled_at:%Y-%m-%d %H:%M} UTC got no answer; RCL renewed "
            f"{len(renewed)} certificate(s) since: {describe_names([c.name for c in renewed])}"
        )
        deps.state.close_unknown(request, RecordState.RESOLVED, now, message)
        log.info(message)
        return
    if now - request.scheduled_at <= grace:
        log.info("The unanswered renewal request of %s: nothing renewed since yet", request.scheduled_at.isoformat())
        return
    message = (
        f"The renewal request of {request.scheduled_at:%Y-%m-%d %H:%M} UTC got no answer and nothing was renewed "
        "since; the next nightly run asks RCL again"
    )
    deps.state.close_unknown(request, RecordState.FAILED, now, message)
    emit_event(
        Event.RENEWAL_FAILED,
        {"source": Source.RCL, "reason": RENEWAL_UNKNOWN, "message": message, "scheduledAt": request.scheduled_at},
    )


def _located(verdicts: list[Verdict], deps: RclDependencies) -> list[Verdict]:
    """Each renewed verdict with the vault its certificate was found in (several vaults listed only)."""
    if deps.locate is None:
        return verdicts
    renewed = (Outcome.RENEWED, Outcome.NOT_INSTALLED)
    return [
        replace(v, vault=deps.locate(v.record.certificate_name, v.new_expiry) or "") if v.outcome in renewed else v
        for v in verdicts
    ]


def _emit_verdict(verdict: Verdict) -> None:
    record = verdict.record
    common = {"source": Source.RCL, "certificateName": record.certificate_name, "certificateId": record.certificate_id}
    if verdict.vault is not None:  # looked for: the vault's name, or None (not told) rather than the default's
        common["vault"] = verdict.vault or None
    if verdict.outcome is Outcome.RENEWED or (verdict.outcome is Outcome.NOT_INSTALLED and record.renewed_at is None):
        emit_event(Event.RENEWED, {**common, "expiryDate": verdict.new_expiry, "installed": verdict.installed})
    elif verdict.outcome is Outcome.NOT_INSTALLED:
        # Seen renewed before, still not installed: pending installation until RCL_INSTALL_GRACE_HOURS.
        emit_event(
            Event.RENEWAL_PENDING,
            {**common, "scheduledAt": record.scheduled_at, "reason": NOT_INSTALLED, "expiryDate": verdict.new_expiry},
        )
    elif verdict.outcome is Outcome.PENDING:
        emit_event(Event.RENEWAL_PENDING, {**common, "scheduledAt": record.scheduled_at})
    else:
        emit_event(
            Event.RENEWAL_FAILED,
            {**common, "reason": verdict.reason, "message": verdict.message, "scheduledAt": record.scheduled_at},
        )
