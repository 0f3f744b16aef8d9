"""Timer trigger `complete_pending`: stores what AppViewX renewed but the webhook could not store yet."""

from __future__ import annotations

import logging

import azure.functions as func

from renew_timer import scheduled_run
from shared import context as app_context

bp = func.Blueprint()
log = logging.getLogger("certrenew.pending")


@bp.function_name("complete_pending")
@bp.timer_trigger(schedule="%PENDING_RETRY_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def complete_pending(timer: func.TimerRequest, context: func.Context) -> None:
    scheduled_run("complete_pending", timer, context, log, lambda _invocation_id, _late: _complete())


def _complete() -> None:
    from shared.appviewx.completion import complete_pending as run_completion  # imported when the timer fires

    summary = run_completion(
        app_context.pending_store(),
        app_context.avx_client(),
        app_context.key_vault_store(),
        app_context.settings().webhook.pending_max_days,
        stores=app_context.key_vault_store,
    )
    log.info(
        "Pending AppViewX renewals: %d completed, %d to retry, %d given up, %d held by another run",
        len(summary.completed),
        len(summary.retried),
        len(summary.failed),
        len(summary.skipped),
    )
