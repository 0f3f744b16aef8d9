"""Timer trigger `verify_endpoints`: does each configured endpoint serve the current Key Vault version of its
certificate? Thin: the run lives in `shared.endpoints.run`, the probe in `shared.endpoints.probe`, the decisions in
`shared.endpoints.decisions`."""

from __future__ import annotations

import logging

import azure.functions as func

from shared import context as app_context
from shared.core.errors import CertRenewError
from shared.core.telemetry import invocation
from shared.endpoints.run import check_endpoints

bp = func.Blueprint()
log = logging.getLogger("certrenew.endpoints")


@bp.function_name("verify_endpoints")
@bp.timer_trigger(arg_name="timer", schedule="%ENDPOINT_CHECK_SCHEDULE%", run_on_startup=False, use_monitor=True)
def verify_endpoints(timer: func.TimerRequest, context: func.Context) -> None:
    with invocation(getattr(context, "invocation_id", None), context):
        if timer.past_due:
            log.warning("verify_endpoints is running late (the previous schedule was missed)")
        try:
            endpoints = app_context.settings().endpoint_checks.endpoints
            if not endpoints:
                log.info("Endpoint check: ENDPOINT_CHECKS lists no endpoints; nothing to check")
                return
            summary = check_endpoints(endpoints, app_context.key_vault_store())
        except CertRenewError as exc:  # settings (named) or Key Vault configuration: the invocation fails
            remedy = f" Remediation: {exc.remediation}" if exc.remediation else ""
            log.error("verify_endpoints failed [%s]: %s.%s", exc.code, exc.message, remedy)
            raise
        log.info("\n".join(summary.lines()))
