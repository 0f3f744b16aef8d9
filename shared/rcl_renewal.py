"""The nightly RCL runs: schedule due renewals and record them; later, check what really renewed.

The decisions live in `shared.rcl_decisions` and the protocol in `shared.rcl`; this module only sequences the I/O,
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

from shared.errors import CertRenewError, RclError, StateStoreError
from shared.identity import get_token
from shared.rcl import MAX_RETRY_AFTER_SECONDS, CertificateResponse, RclClient, RclHttpError, is_retryable
from shared.rcl_decisions import (
    MAX_CALLS_PER_NIGHT,
    CertificateIndex,
    Outcome,
    RenewalRunSummary,
    Verdict,
    VerifySummary,
    classify,
    describe_names,
    near_expiry,
    night_of,
    scheduled_from,
)
from shared.renewal_state import RenewalStateStore
from shared.settings import KEY_VAULT_SCOPE, RclSettings
from shared.telemetry import emit_event

log = logging.getLogger("certrenew.rcl")
SOURCE = "rcl"
BUDGET_EXHAUSTED = "RCL_CALL_BUDGET_EXHAUSTED"

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


def _schedule(deps: RclDependencies, now: datetime, sleep: Callable[[float], None]) -> list[CertificateResponse]:
    settings = deps.settings
    # Tokens first: an identity failure must not spend an RCL call.
    key_vault_token = (
        get_token(deps.key_vault_credential, KEY_VAULT_SCOPE, "the Key Vault access token RCL needs")
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
        "RclRenewalRunCompleted",
        {
            "source": SOURCE,
            "scheduledCount": scheduled,
            "outcome": outcome,
            "durationMs": round((time.monotonic() - started) * 1000),
            "reason": reason,
            **extra,
        },
    )


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
    try:
        deps = open_dependencies()
        scheduled = _schedule(deps, moment, sleep)
    except Exception as exc:
        code, message = _describe(exc)
        # Nothing was scheduled tonight: that is a renewal failure an operator must hear about.
        emit_event("CertificateRenewalFailed", {"source": SOURCE, "reason": code, "message": message})
        _run_completed("failed", started, 0, code, message=message)
        raise

    names = [c.name for c in scheduled]
    for certificate in scheduled:
        emit_event(
            "CertificateRenewalScheduled",
            {
                "source": SOURCE,
                "certificateName": certificate.name,
                "certificateId": certificate.id,
                "target": certificate.target,
                "expiryDate": certificate.expiry_date,
            },
        )
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
    return RenewalRunSummary(scheduled=tuple(names), late=late)


def run_verification(
    open_dependencies: Callable[[], RclDependencies],
    run_id: str | None,
    *,
    late: bool = False,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> VerifySummary:
    """The follow-up check: one look at RCL's list decides every open record, and finds certificates near expiry."""
    moment = now or datetime.now(UTC)
    deps = open_dependencies()
    settings = deps.settings
    open_records = deps.state.open_renewals()  # the table first: a broken table costs no RCL call
    bearer = get_token(deps.rcl_credential, settings.token_scope, "the RCL API")
    listed = _call_within_budget(
        deps, night_of(moment), "list", "GET", lambda: deps.client.list_certificates(bearer), sleep
    )

    index = CertificateIndex.of(listed)
    grace = timedelta(hours=settings.verify_grace_hours)
    verdicts = [classify(record, index.find(record), moment, grace) for record in open_records]
    near = near_expiry(listed, moment, settings.warning_days)
    for item in near:
        emit_event(
            "CertificateNearExpiry",
            {
                "source": SOURCE,
                "certificateName": item.certificate.name,
                "certificateId": item.certificate.id,
                "expiryDate": item.certificate.expiry_date,
                "daysLeft": item.days_left,
            },
        )
    deps.state.close_verdicts(verdicts, moment)  # before the events: a failed write is retried by the next check
    for verdict in verdicts:
        _emit_verdict(verdict)
    return VerifySummary.of(verdicts, near, len(listed), settings.warning_days)


def _emit_verdict(verdict: Verdict) -> None:
    record = verdict.record
    common = {"source": SOURCE, "certificateName": record.certificate_name, "certificateId": record.certificate_id}
    if verdict.outcome is Outcome.RENEWED:
        emit_event("CertificateRenewed", {**common, "expiryDate": verdict.new_expiry, "installed": verdict.installed})
    elif verdict.outcome is Outcome.PENDING:
        emit_event("CertificateRenewalPending", {**common, "scheduledAt": record.scheduled_at})
    else:
        emit_event(
            "CertificateRenewalFailed",
            {**common, "reason": verdict.reason, "message": verdict.message, "scheduledAt": record.scheduled_at},
        )


def _describe(exc: BaseException) -> tuple[str, str]:
    """A failure's stable code and a message safe to show (only the app's own errors carry their text)."""
    if isinstance(exc, CertRenewError):
        return exc.code, exc.message
    return "INTERNAL_ERROR", f"Unexpected {type(exc).__name__} in the RCL renewal run"
