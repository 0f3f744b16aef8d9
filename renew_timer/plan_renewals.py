"""Timer trigger `plan_renewals` (`%RENEWAL_SWEEP_SCHEDULE%`, daily): the renewal sweep over the vault, so AppViewX
certificates renew on time without Event Grid and nothing expires unheard. Thin: the rules live in
`shared.vault.renewal_plan`, the run in `shared.vault.sweep`."""

from __future__ import annotations

import logging

import azure.functions as func

from renew_timer import scheduled_run
from shared import context as app_context

bp = func.Blueprint()
log = logging.getLogger("certrenew.sweep")


@bp.function_name("plan_renewals")
@bp.timer_trigger(arg_name="timer", schedule="%RENEWAL_SWEEP_SCHEDULE%", run_on_startup=False, use_monitor=True)
def plan_renewals(timer: func.TimerRequest, context: func.Context) -> None:
    def work(invocation_id: str | None, _late: bool) -> None:
        from shared.vault.sweep import run_sweep  # imported when the timer fires, not at cold start

        summary = run_sweep(app_context.sweep_dependencies(), invocation_id)
        log.info(summary.line())
        for failure in summary.failures:
            log.warning("Renewal sweep: %s", failure)

    scheduled_run("plan_renewals", timer, context, log, work)
