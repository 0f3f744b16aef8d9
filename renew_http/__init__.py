"""HTTP triggers of the AppViewX path.

- `POST /api/certificates/renew` renews a certificate in AppViewX and stores it in Key Vault; with
  `Prefer: respond-async` it writes the renewal record, queues the renewal (`renew_queue.renew_queued` runs it) and
  answers 202 at once with `Location` and `Retry-After`.
- `GET /api/certificates/renew/{pendingId}` tells the state of a renewal record: accepted, pending, renewed or failed
  (with its reason).

Thin: admission and its run live in `shared.appviewx.admission`, the status answer in `shared.appviewx.renewal_status`.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

import azure.functions as func

from renew_http.answers import answered, json_response
from shared import context as app_context
from shared.core.telemetry import invocation

if TYPE_CHECKING:  # the AppViewX path (and the Azure SDK behind it) is imported by the first call, not at cold start
    from shared.appviewx.admission import AdmissionServices
    from shared.appviewx.storing import Pipeline

bp = func.Blueprint()
log = logging.getLogger("certrenew.http")


def _pipeline(caller: str | None, invocation_id: str | None) -> Pipeline:
    from shared.appviewx.storing import Pipeline

    return Pipeline(
        avx=app_context.avx_client(),
        store=app_context.key_vault_store(),
        records=app_context.pending_store(),
        invocation_id=invocation_id,
        caller=caller,
    )


@functools.cache
def services() -> AdmissionServices:
    """Where admission reaches the app's stores, looked up at each use: tests and the host reset the app's context."""
    from shared.appviewx.admission import AdmissionServices

    return AdmissionServices(
        webhook=lambda: app_context.settings().webhook,
        claims=lambda: app_context.idempotency_store(),
        records=lambda: app_context.pending_store(),
        replays=lambda: app_context.signature_replays(),
        pipeline=_pipeline,
    )


@bp.function_name("renew_http")
@bp.queue_output(arg_name="renewals", queue_name="%RENEWAL_QUEUE%", connection="AzureWebJobsStorage")
@bp.route(route="certificates/renew", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def renew_http(
    req: func.HttpRequest,
    context: func.Context,
    renewals: func.Out[str] = None,  # type: ignore[assignment]  # the host always binds it; None outside the host
) -> func.HttpResponse:
    invocation_id = getattr(context, "invocation_id", None)
    with invocation(invocation_id, context):
        return answered(lambda: _renew(req, invocation_id, renewals), invocation_id, log, "Renewal request failed")


def _renew(req: func.HttpRequest, invocation_id: str | None, renewals: func.Out[str] | None) -> func.HttpResponse:
    from shared.appviewx import admission

    request = admission.WebhookRequest(
        req.get_body() or b"", req.headers, dict(req.params), invocation_id, renewals is not None
    )
    admitted = admission.admit(request, services())
    if isinstance(admitted, admission.Reply):  # refused, or a repeat answered from its first answer or record
        return json_response(admitted.status, admitted.body, admitted.headers)
    reply = admission.run_admitted(admitted, services(), renewals.set if renewals is not None else None)
    return json_response(reply.status, reply.body, reply.headers)


@bp.function_name("renew_status")
@bp.route(route="certificates/renew/{pendingId}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def renew_status(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    invocation_id = getattr(context, "invocation_id", None)
    pending_id = req.route_params.get("pendingId", "")
    return answered(lambda: _status(pending_id, invocation_id), invocation_id, log, "Renewal status failed")


def _status(pending_id: str, invocation_id: str | None) -> func.HttpResponse:
    from shared.appviewx.renewal_status import renewal_status

    body, headers = renewal_status(pending_id, services().records, invocation_id)
    return json_response(200, body, headers)
