"""HTTP trigger `renewal_plan`: `GET /api/certificates/plan` (function key), what the next renewal sweep will do with
each certificate of the vault, by which path and why, and the checks that would stop it. Thin: the plan is
`shared.vault.sweep.plan_vault`, the checks `shared.vault.plan_checks`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

from renew_http.answers import answered, json_response
from shared import context as app_context
from shared.core.telemetry import invocation

bp = func.Blueprint()
log = logging.getLogger("certrenew.plan")


@bp.function_name("renewal_plan")
@bp.route(route="certificates/plan", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def renewal_plan(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    invocation_id = getattr(context, "invocation_id", None)
    with invocation(invocation_id, context):
        return answered(lambda: _plan(invocation_id), invocation_id, log, "Renewal plan failed")


def _plan(invocation_id: str | None) -> func.HttpResponse:
    from shared.vault.plan_checks import plan_with_checks  # imported when the plan is first asked for

    now = datetime.now(UTC)
    body = plan_with_checks(app_context.settings, app_context.sweep_dependencies, now, _consumers)
    return json_response(200, {**body, "invocationId": invocation_id})


def _consumers() -> dict[str, list[dict[str, object]]]:
    return {name: known.consumers for name, known in app_context.known_consumers().items()}
