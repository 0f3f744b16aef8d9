"""Timer triggers of the nightly RCL path: `renew_timer` asks RCL to schedule due renewals, `verify_renewals` checks
later what really renewed. Thin: the runs live in `shared.rcl.runs` and `shared.rcl.verification`, the decisions in
`shared.rcl.decisions`."""

from __future__ import annotations

import logging
from collections.abc import Callable

import azure.functions as func

from shared import context as app_context
from shared.core.errors import CertRenewError
from shared.core.telemetry import invocation

bp = func.Blueprint()
log = logging.getLogger("certrenew.timer")


def scheduled_run(
    name: str,
    timer: func.TimerRequest,
    context: func.Context,
    logger: logging.Logger,
    work: Callable[[str | None, bool], None],
) -> None:
    """The one wrapper of every timer function: the invocation scope (telemetry), a warning when the run is late,
    and a failure logged with its code and remediation, then re-raised (the host records the invocation failed).
    `work` gets the invocation id and whether the run is late."""
    invocation_id = getattr(context, "invocation_id", None)
    with invocation(invocation_id, context):
        late = bool(timer.past_due)
        if late:
            # The schedule was missed (app stopped, scaled in, or a previous run overran); this run catches up.
            logger.warning("%s is running late: its scheduled time passed while the app was not running it", name)
        try:
            work(invocation_id, late)
        except Exception as exc:
            log_failure(logger, name, exc)
            raise
        finally:
            from shared.notify.install import flush_notification_digest  # not at cold start

            flush_notification_digest()  # a finished notification-budget window's digest, when one is due


def log_failure(logger: logging.Logger, name: str, exc: Exception) -> None:
    if isinstance(exc, CertRenewError):
        remedy = f" Remediation: {exc.remediation}" if exc.remediation else ""
        logger.error("%s failed [%s]: %s.%s", name, exc.code, exc.message, remedy)
    else:
        logger.error("%s failed: unexpected %s", name, type(exc).__name__)


@bp.function_name("renew_timer")
@bp.timer_trigger(arg_name="timer", schedule="%RCL_RENEWAL_SCHEDULE%", run_on_startup=False, use_monitor=True)
def renew_timer(timer: func.TimerRequest, context: func.Context) -> None:
    def work(invocation_id: str | None, late: bool) -> None:
        from shared.rcl.runs import run_renewal  # imported when the timer fires: a cold start does not pay for it

        log.info(run_renewal(app_context.rcl_dependencies, invocation_id, late=late).line())

    scheduled_run("renew_timer", timer, context, log, work)


@bp.function_name("verify_renewals")
@bp.timer_trigger(arg_name="timer", schedule="%RCL_VERIFY_SCHEDULE%", run_on_startup=False, use_monitor=True)
def verify_renewals(timer: func.TimerRequest, context: func.Context) -> None:
    def work(invocation_id: str | None, late: bool) -> None:
        from shared.rcl.verification import run_verification

        summary = run_verification(app_context.rcl_dependencies, invocation_id, late=late)
        log.info(summary.line() + (" (run was late)" if late else ""))

    scheduled_run("verify_renewals", timer, context, log, work)
