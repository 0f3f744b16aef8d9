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
    from shared.consumers.store import with_discovered  # imported when the timer fires
    from shared.endpoints.run import check_endpoints

    listed = app_context.settings().endpoint_checks.endpoints  # a settings problem fails the invocation, named
    # Beside the hand-listed endpoints: the host names discover_consumers found (none while discovery is off).
    endpoints = with_discovered(listed, app_context.known_consumers())
    if not endpoints:
        log.info("Endpoint check: ENDPOINT_CHECKS lists no endpoints and none were discovered; nothing to check")
        return
    summary = check_endpoints(endpoints, app_context.key_vault_store())
    log.info("\n".join(summary.lines()))
