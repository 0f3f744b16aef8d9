"""Timer trigger `verify_endpoints`: does each configured endpoint serve the current Key Vault version of its
certificate? Thin: the run lives in `shared.endpoints.run`, the probe in `shared.endpoints.probe`, the decisions in
`shared.endpoints.decisions`."""

from __future__ import annotations

import logging

import azure.functions as func

from renew_timer import scheduled_run
from shared import context as app_context

bp = func.Blueprint()
log = logging.getLogger("certrenew.endpoints")


@bp.function_name("verify_endpoints")
@bp.timer_trigger(arg_name="timer", schedule="%ENDPOINT_CHECK_SCHEDULE%", run_on_startup=False, use_monitor=True)
def verify_endpoints(timer: func.TimerRequest, context: func.Context) -> None:
    scheduled_run("verify_endpoints", timer, context, log, lambda _invocation_id, _late: _check())


def _check() -> None:
    endpoints = app_context.settings().endpoint_checks.endpoints  # a settings problem fails the invocation, named
    if not endpoints:
        log.info("Endpoint check: ENDPOINT_CHECKS lists no endpoints; nothing to check")
        return
    from shared.endpoints.run import check_endpoints  # imported when the timer fires

    summary = check_endpoints(endpoints, app_context.key_vault_store())
    log.info("\n".join(summary.lines()))
