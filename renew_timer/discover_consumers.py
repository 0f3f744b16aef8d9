"""Timer trigger `discover_consumers`: which Azure resources use the vault's certificates, and which of them are pinned
to an old version or still use the old certificate a day after a renewal. Thin: the run lives in
`shared.consumers.run`, the decisions in `shared.consumers.decisions`, Resource Graph in `shared.azure.resourcegraph`."""

from __future__ import annotations

import logging

import azure.functions as func

from renew_timer import scheduled_run
from shared import context as app_context

bp = func.Blueprint()
log = logging.getLogger("certrenew.consumers")


@bp.function_name("discover_consumers")
@bp.timer_trigger(arg_name="timer", schedule="%CONSUMER_DISCOVERY_SCHEDULE%", run_on_startup=False, use_monitor=True)
def discover_consumers(timer: func.TimerRequest, context: func.Context) -> None:
    scheduled_run("discover_consumers", timer, context, log, lambda _invocation_id, _late: _discover())


def _discover() -> None:
    from shared.consumers.run import discover_consumers as run_discovery  # imported when the timer fires

    summary = run_discovery(app_context.discovery_dependencies())  # a settings problem fails the invocation, named
    log.info("\n".join(summary.lines()))
