"""The nightly RCL renewal run: ask RCL to schedule what is due and record each certificate it scheduled; the
morning check (`shared.rcl.verification`) later sees what really renewed.

The decisions live in `shared.rcl.decisions` and the protocol in `shared.rcl.client`; the runs only sequence the I/O,
and spend RCL's quota (50 requests a week) carefully (`shared.rcl.run_calls`): tokens and the table are checked
before RCL is called, and each night allows at most `MAX_CALLS_PER_NIGHT` calls per endpoint, counted in the table
across invocations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from shared.azure.identity import get_access_token, get_token
from shared.core.errors import StateStoreError
from shared.core.events import Event, Source
from shared.core.settings import KEY_VAULT_SCOPE
from shared.core.telemetry import emit_event
from shared.rcl.client import BAD_RESPONSE, CONNECTION_LOST, TIMEOUT, CertificateResponse
from shared.rcl.run_calls import RclDependencies, call_within_budget, describe_failure, warn_date_problems
from shared.rcl.scheduled import night_of, scheduled_from, unknown_request, without_duplicates
from shared.rcl.summaries import RenewalRunSummary, describe_names

log = logging.getLogger("certrenew.rcl")
# RCL uses the Key Vault token later, when its asynchronous renewals run: it must have about an hour left when sent.
KEY_VAULT_TOKEN_MIN_LIFE_SECONDS = 50 * 60


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
    return call_within_budget(
        deps,
        night_of(now),
        "renewal",
        "POST",
        lambda: deps.client.schedule_renewals(bearer, key_vault_token),
        sleep,
    )


# RCL scheduled renewals whose list could not be written (the follow-up check will not look at them).
SCHEDULED_NOT_RECORDED = "SCHEDULED_NOT_RECORDED"


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
        code, message = describe_failure(exc)
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
        _scheduled_not_recorded(names, error)
        raise error from None
    _run_completed("succeeded", started, len(names))
    _clean_up(deps, moment)
    return RenewalRunSummary(scheduled=tuple(names), late=late)


def _scheduled_not_recorded(names: list[str], error: StateStoreError) -> None:
    """RCL renews them, but the morning check will not look at them: a failure someone must hear of (notified)."""
    emit_event(
        Event.RENEWAL_FAILED,
        {
            "source": Source.RCL,
            "certificateName": describe_names(names, limit=5),
            "reason": SCHEDULED_NOT_RECORDED,
            "message": error.message,
        },
    )


def _scheduled_once(answered: list[CertificateResponse], moment: datetime) -> list[CertificateResponse]:
    """What RCL scheduled, each certificate once (by its table key), reported as CertificateRenewalScheduled."""
    scheduled, repeated = without_duplicates(answered, moment)
    if repeated:
        log.warning(
            "RCL's renewal answer had %d duplicate certificate(s) (same id, or same name without id); each is recorded once: %s",
            len(repeated),
            describe_names([c.name for c in repeated]),
        )
    warn_date_problems(scheduled, "renewal answer")
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
