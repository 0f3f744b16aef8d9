"""Timer trigger `complete_pending`: stores what AppViewX renewed but the webhook could not store yet, then does the
bounded housekeeping (retention, expired keys and claims, the last-outcome backfill: `shared.vault.housekeeping`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import azure.functions as func

from renew_timer import scheduled_run
from shared import context as app_context

if TYPE_CHECKING:  # the AppViewX path is imported when the timer fires (cold start)
    from shared.appviewx.completion import CompletionSummary

bp = func.Blueprint()
log = logging.getLogger("certrenew.pending")


@bp.function_name("complete_pending")
@bp.timer_trigger(schedule="%PENDING_RETRY_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def complete_pending(timer: func.TimerRequest, context: func.Context) -> None:
    def work(_invocation_id: str | None, _late: bool) -> None:
        _complete()
        _housekeeping()

    scheduled_run("complete_pending", timer, context, log, work)


def complete_for_operator(context: func.Context, ignore_retry_delay: bool) -> CompletionSummary:
    """The operator's run (`certrenew complete-pending [--now]`): the timer's work in the same invocation scope,
    returning its summary for the operator's terminal."""
    summaries: list[CompletionSummary] = []
    timer = func.timer.TimerRequest(past_due=False)
    scheduled_run(
        "complete_pending", timer, context, log, lambda _id, _late: summaries.append(_complete(ignore_retry_delay))
    )
    return summaries[0]


def _complete(ignore_retry_delay: bool = False) -> CompletionSummary:
    """One completion run; `ignore_retry_delay` is the operator's `complete-pending --now`."""
    from shared.appviewx.completion import complete_pending as run_completion  # imported when the timer fires

    summary = run_completion(
        app_context.pending_store(),
        app_context.avx_client(),
        app_context.key_vault_store(),
        app_context.settings().webhook.pending_max_days,
        stores=app_context.key_vault_store,
        ignore_retry_delay=ignore_retry_delay,
    )
    log.info(
        "Pending AppViewX renewals: %d completed, %d to retry, %d given up, %d held by another run, %d not yet due "
        "(waiting out a retry delay, or on the renewal queue)",
        len(summary.completed),
        len(summary.retried),
        len(summary.failed),
        len(summary.skipped),
        len(summary.not_due),
    )
    return summary


def _housekeeping() -> None:
    from shared.core.errors import CertRenewError
    from shared.vault.housekeeping import HousekeepingStores, tidy  # imported when the timer fires

    try:
        stores = HousekeepingStores(
            records=app_context.pending_store(),
            idempotency=app_context.idempotency_store(),
            signatures=app_context.signature_replays(),
            claims=app_context.event_claims(),
            outcomes=app_context.last_outcomes,
            rcl=app_context.renewal_state(),
        )
    except CertRenewError as exc:  # housekeeping never fails the completion run
        log.warning("Housekeeping skipped: %s", exc.message)
        return
    settings = app_context.settings().webhook
    log.info(tidy(stores, datetime.now(UTC), settings.record_retention_days).line())
