"""Event Grid trigger `keyvault_events`: Key Vault's certificate near-expiry and expired events (its Event Grid system
topic, subscription in infra/). Thin: the decisions live in `shared.vault.event_decisions`, the run in
`shared.vault.events`."""

from __future__ import annotations

import logging

import azure.functions as func

from renew_timer import log_failure
from shared import context as app_context
from shared.core.errors import CertRenewError
from shared.core.telemetry import invocation

bp = func.Blueprint()
log = logging.getLogger("certrenew.keyvault-events")


@bp.function_name("keyvault_events")
@bp.event_grid_trigger(arg_name="event")
def keyvault_events(event: func.EventGridEvent, context: func.Context) -> None:
    from shared.vault.events import RetryLater, handle_event  # imported when an event comes, not at cold start

    invocation_id = getattr(context, "invocation_id", None)
    with invocation(invocation_id, context):
        try:
            deps = app_context.event_dependencies()
            outcome = handle_event(event.id, event.event_type, event.get_json(), deps, invocation_id)
        except RetryLater as exc:
            log.error("keyvault_events: %s", exc)
            raise
        except CertRenewError as exc:  # settings (named) or the tables: Event Grid redelivers, then dead-letters
            log_failure(log, "keyvault_events", exc)
            raise
        log.info("keyvault_events: event %s (%s): %s", event.id, event.event_type, outcome)
