"""The nightly RCL runs: schedule due renewals and record them; later, check what really renewed.

The decisions live in `shared.rcl.decisions` and the protocol in `shared.rcl.client`; this module only sequences the I/O,
and spends RCL's quota (50 requests a week) carefully: tokens and the table are checked before RCL is called, and
each night allows at most `MAX_CALLS_PER_NIGHT` calls per endpoint, counted in the table across invocations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from azure.core.credentials import TokenCredential

from shared.azure.identity import get_access_token, get_token
from shared.core.errors import CertRenewError, RclError, StateStoreError
from shared.core.events import Event, Source
from shared.core.settings import KEY_VAULT_SCOPE, RclSettings
from shared.core.telemetry import emit_event
from shared.rcl.client import (
    BAD_RESPONSE,
    CONNECTION_LOST,
    MAX_RETRY_AFTER_SECONDS,
    TIMEOUT,
    CertificateResponse,
    RclClient,
    RclHttpError,
    is_retryable,
)
from shared.rcl.decisions import (
    LIST_SUSPECT,
    MAX_CALLS_PER_NIGHT,
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
from shared.rcl.scheduled import (
    RecordState,
    ScheduledRenewal,
    night_of,
    scheduled_from,
    unknown_request,
    without_duplicates,
)
from shared.rcl.state import RenewalStateStore
from shared.rcl.summaries import RenewalRunSummary, VerifySummary, describe_names

log = logging.getLogger("certrenew.rcl")
BUDGET_EXHAUSTED = "RCL_CALL_BUDGET_EXHAUSTED"
# RCL uses the Key Vault token later, when its asynchronous renewals run: it must have about an hour left when sent.
KEY_VAULT_TOKEN_MIN_LIFE_SECONDS = 50 * 60

_T = TypeVar("_T")


@dataclass(frozen=True)
class RclDependencies:
    """What both runs use; built per invocation from the process's cached clients (`shared.context`)."""

    settings: RclSettings
    client: RclClient
    state: RenewalStateStore
    rcl_credential: TokenCredential  # client credentials when RCL_CLIENT_* are set, else the managed identity
    # The token RCL acts on the vault with: RCL_KEY_VAULT_CLIENT_ID's identity, else the app's own managed identity.
    key_vault_credential: TokenCredential
    # A credential with an empty cache, for a Key Vault token fresher than the cached one.
    fresh_key_vault_credential: Callable[[], TokenCredential] | None = None


def _call_within_budget(
    deps: RclDependencies,
    night: str,
    kind: str,
    method: str,
    call: Callable[[], _T],
    sleep: Callable[[float], None],
) -> _T:
    """Make `call` once, and once more if the failure may pass, never beyond the night's budget for `kind`."""
    last_error: RclError | None = None
    for _ in range(MAX_CALLS_PER_NIGHT):
        if deps.state.reserve_call(night, kind, MAX_CALLS_PER_NIGHT) is None:
            if last_error is not None:
                raise last_error
            raise RclError(
                f"RCL was already called {MAX_CALLS_PER_NIGHT} times for {kind} this night (UTC {night}); "
                "not calling it again, to stay within RCL's quota of 50 requests a week",
                code=BUDGET_EXHAUSTED,
                remediation=(
                    "Nothing to do if this was a re-run: the next night's run calls RCL again. Look at the night's "
                    "earlier invocations for why they failed."
                ),
            )
        try:
            return call()
        except RclError as exc:
            retry_after = exc.retry_after if isinstance(exc, RclHttpError) else None
            if not is_retryable(exc, method) or (retry_after or 0) > MAX_RETRY_AFTER_SECONDS:
                raise
            last_error = exc
            delay = max(deps.settings.retry_delay_seconds, retry_after or 0)
            log.warning("RCL %s failed (%s: %s); trying once more in %.1f s", kind, exc.code, exc.message, delay)
            sleep(delay)
    # The loop returns, raises, or records an error on every pass, so an error is always there to raise.
    raise last_error or RclError("RCL was not called", code=BUDGET_EXHAUSTED)


def _key_vault_token(deps: RclDependencies) -> str:
    """A Key Vault token with at least about an hour of life: the cached one, or else a freshly fetched one."""
    purpose = "the Key Vault access token RCL needs"
    token = get_access_token(deps.key_vault_credential, KEY_VAULT_SCOPE, purpose)
    if token.expires_on - time.time() >= KEY_VAULT_TOKEN_MIN_LIFE_SECONDS or deps.fresh_key_vault_credential is None:
        return token.token
    credential = deps.fresh_key_vault_credential()
    try:
        fresh = get_access_token(credential, KEY_VAULT_SCOPE, purpose)
    finally:
        close = getattr(credential, "close", None)
        if close:
            close()
    if fresh.expires_on > token.expires_on:
        token = fresh
    minutes_left = (token.expires_on - time.time()) / 60
    if minutes_left * 60 < KEY_VAULT_TOKEN_MIN_LIFE_SECONDS:
        log.warning(
            "The Key Vault token sent to RCL has only %.0f minutes left even after asking for a new one; RCL's "
            "renewals that run later may fail to reach the vault",
            minutes_left,
        )
    return token.token


def _schedule(deps: RclDependencies, now: datetime, sleep: Callable[[float], None]) -> list[CertificateResponse]:
    settings = deps.settings
    # Tokens first: an identity failure must not spend an RCL call.
    key_vault_token = (
        _key_vault_token(deps)
        if settings.send_key_vault_token
        else ""  # as the vendor's SDK sends for subscriptions without Key Vault certificates
    )
    bearer = get_token(deps.rcl_credential, settings.token_scope, "the RCL API")
    return _call_within_budget(
        deps,
        night_of(now),
        "renewal",
        "POST",
        lambda: deps.client.schedule_renewals(bearer, key_vault_token),
        sleep,
    )


def _run_completed(outcome: str, started: float, scheduled: int, reason: str | None = None, **extra: object) -> None:
    emit_event(
        Event.RCL_RENEWAL_RUN_COMPLETED,
        {
            "source": Source.RCL,
            "scheduledCount": scheduled,
            "outcome": outcome,
            "durationMs": round((time.monotonic() - started) * 1000),
            "reason": reason,
            **extra,
        },
    )


def _warn_date_problems(certificates: list[CertificateResponse], what: str) -> int:
    """One warning naming every certificate with a date RCL sent that cannot be used; how many there were."""
    troubled = [c for c in certificates if c.date_problems]
    if troubled:
        details = [f"{c.name} ({'; '.join(c.date_problems)})" for c in troubled]
        log.warning(
            "RCL's %s has %d certificate(s) with unusable dates: %s", what, len(troubled), describe_names(details)
        )
    return len(troubled)


def _clean_up(deps: RclDependencies, now: datetime) -> None:
    """Remove records and call counts older than RCL_RETENTION_DAYS (bounded per night); never fails the run."""
    try:
        cutoff = now - timedelta(days=deps.settings.retention_days)
    except (OverflowError, ValueError):  # a retention beyond the calendar keeps everything
        return
    try:
        removed = deps.state.remove_older_than(cutoff)
    except StateStoreError as exc:
        log.warning("Old RCL renewal records were not removed: %s", exc.message)
        return
    if removed.records or removed.budget_rows:
        log.info(
            "Removed %d closed RCL renewal record(s) and %d nightly call count(s) older than %g days",
            removed.records,
            removed.budget_rows,
            deps.settings.retention_days,
        )


def _record_unknown(deps: RclDependencies, moment: datetime, run_id: str | None) -> None:
    """The renewal request was sent but its answer never came or could not be read: RCL may have scheduled
    renewals. Record that, so the morning check reports what renewed since."""
    try:
        deps.state.record_unknown(unknown_request(moment, run_id))
    except StateStoreError as exc:
        log.error("The unanswered RCL renewal request could not be recorded for the follow-up check: %s", exc.message)


def run_renewal(
    open_dependencies: Callable[[], RclDependencies],
    run_id: str | None,
    *,
    late: bool = False,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RenewalRunSummary:
    """The nightly run: ask RCL to schedule what is due, and record each certificate it scheduled."""
    started = time.monotonic()
    moment = now or datetime.now(UTC)
    deps: RclDependencies | None = None
    try:
        deps = open_dependencies()
        answered = _schedule(deps, moment, sleep)
    except Exception as exc:
        code, message = _describe(exc)
        # Sent, and then no answer, a broken one or one that cannot be read (RCL_BAD_RESPONSE comes only from a 2xx
        # answer): RCL got the request and may have scheduled renewals.
        if deps is not None and code in (TIMEOUT, CONNECTION_LOST, BAD_RESPONSE):
            _record_unknown(deps, moment, run_id)
        # Nothing was scheduled tonight: that is a renewal failure an operator must hear about.
        emit_event(Event.RENEWAL_FAILED, {"source": Source.RCL, "reason": code, "message": message})
        _run_completed("failed", started, 0, code, message=message)
        if deps is not None and not isinstance(exc, StateStoreError):
            _clean_up(deps, moment)
        raise

    scheduled = _scheduled_once(answered, moment)
    names = [c.name for c in scheduled]
    try:
        deps.state.record_scheduled([scheduled_from(c, moment, run_id) for c in scheduled])
    except StateStoreError as exc:
        error = StateStoreError(
            f"RCL scheduled {len(names)} certificate(s) ({describe_names(names)}) but they could not be recorded, so "
            f"the follow-up check will not look at them: {exc.message}"
        )
        _run_completed("failed", started, len(names), error.code, message=error.message)
        raise error from None
    _run_completed("succeeded", started, len(names))
    _clean_up(deps, moment)
    return RenewalRunSummary(scheduled=tuple(names), late=late)


def _scheduled_once(answered: list[CertificateResponse], moment: datetime) -> list[CertificateResponse]:
    """What RCL scheduled, each certificate once (by its table key), reported as CertificateRenewalScheduled."""
    scheduled, repeated = without_duplicates(answered, moment)
    if repeated:
        log.warning(
            "RCL's renewal answer had %d duplicate certificate(s) (same id, or same name without id); each is recorded once: %s",
            len(repeated),
            describe_names([c.name for c in repeated]),
        )
    _warn_date_problems(scheduled, "renewal answer")
    for certificate in scheduled:
        emit_event(
            Event.RENEWAL_SCHEDULED,
            {
                "source": Source.RCL,
                "certificateName": certificate.name,
                "certificateId": certificate.id,
                "target": certificate.target,
                "expiryDate": certificate.expiry_date,
            },
        )
    return scheduled


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
        code, message = _describe(exc)
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
    listed = _call_within_budget(
        deps, night_of(moment), "list", "GET", lambda: deps.client.list_certificates(bearer), sleep
    )
    check.listed = len(listed)
    check.unreadable_dates = _warn_date_problems(listed, "certificate list")
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


def _emit_verdict(verdict: Verdict) -> None:
    record = verdict.record
    common = {"source": Source.RCL, "certificateName": record.certificate_name, "certificateId": record.certificate_id}
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


def _describe(exc: BaseException) -> tuple[str, str]:
    """A failure's stable code and a message safe to show (only the app's own errors carry their text)."""
    if isinstance(exc, CertRenewError):
        return exc.code, exc.message
    return "INTERNAL_ERROR", f"Unexpected {type(exc).__name__} in the RCL renewal run"
