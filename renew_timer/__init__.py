"""Timer triggers of the nightly RCL path: `renew_timer` asks RCL to schedule due renewals, `verify_renewals` checks
later what really renewed. Thin: the runs live in `shared.rcl.runs`, the decisions in `shared.rcl.decisions`."""

from __future__ import annotations

import logging

import azure.functions as func

from shared import context as app_context
from shared.core.errors import CertRenewError
from shared.core.telemetry import invocation
from shared.rcl.runs import run_renewal, run_verification

bp = func.Blueprint()
log = logging.getLogger("certrenew.timer")


def _late(timer: func.TimerRequest, name: str) -> bool:
    if timer.past_due:
        # The schedule was missed (app stopped, scaled in, or a previous run overran); this run catches up.
        log.warning("%s is running late: its scheduled time passed while the app was not running it", name)
    return bool(timer.past_due)


def _failed(name: str, exc: Exception) -> None:
    if isinstance(exc, CertRenewError):
        remedy = f" Remediation: {exc.remediation}" if exc.remediation else ""
        log.error("%s failed [%s]: %s.%s", name, exc.code, exc.message, remedy)
    else:
        log.error("%s failed: unexpected %s", name, type(exc).__name__)


@bp.function_name("renew_timer")
@bp.timer_trigger(arg_name="timer", schedule="%RCL_RENEWAL_SCHEDULE%", run_on_startup=False, use_monitor=True)
def renew_timer(timer: func.TimerRequest, context: func.Context) -> None:
    invocation_id = getattr(context, "invocation_id", None)
    with invocation(invocation_id, context):
        late = _late(timer, "renew_timer")
        try:
            summary = run_renewal(app_context.rcl_dependencies, invocation_id, late=late)
        except Exception as exc:
            _failed("renew_timer", exc)
            raise  # the host records the invocation as failed
        log.info(summary.line())


@bp.function_name("verify_renewals")
@bp.timer_trigger(arg_name="timer", schedule="%RCL_VERIFY_SCHEDULE%", run_on_startup=False, use_monitor=True)
def verify_renewals(timer: func.TimerRequest, context: func.Context) -> None:
    invocation_id = getattr(context, "invocation_id", None)
    with invocation(invocation_id, context):
        late = _late(timer, "verify_renewals")
        try:
            summary = run_verification(app_context.rcl_dependencies, invocation_id, late=late)
        except Exception as exc:
            _failed("verify_renewals", exc)
            raise
        log.info(summary.line() + (" (run was late)" if late else ""))
