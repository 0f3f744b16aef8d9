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
from shared.vault.events import EventDependencies, RetryLater, handle_event

bp = func.Blueprint()
log = logging.getLogger("certrenew.keyvault-events")


def _rcl_certificate_names() -> list[str]:
    return [str(r.get("certificateName") or "") for r in app_context.renewal_state().all_records()]


@bp.function_name("keyvault_events")
@bp.event_grid_trigger(arg_name="event")
def keyvault_events(event: func.EventGridEvent, context: func.Context) -> None:
    invocation_id = getattr(context, "invocation_id", None)
    with invocation(invocation_id, context):
        try:
            deps = EventDependencies(
                vault_url=app_context.settings().key_vault.url,
                store=app_context.key_vault_store(),
                claims=app_context.event_claims(),
                records=app_context.pending_store,
                avx=app_context.avx_client,
                rcl_certificate_names=_rcl_certificate_names,
                vaults=app_context.settings().key_vault.all_vaults,
                stores=app_context.key_vault_store,
            )
            outcome = handle_event(event.id, event.event_type, event.get_json(), deps, invocation_id)
        except RetryLater as exc:
            log.error("keyvault_events: %s", exc)
            raise
        except CertRenewError as exc:  # settings (named) or the tables: Event Grid redelivers, then dead-letters
            log_failure(log, "keyvault_events", exc)
            raise
        log.info("keyvault_events: event %s (%s): %s", event.id, event.event_type, outcome)
