"""HTTP trigger: `POST /api/certificates/renew` renews a certificate in AppViewX and stores it in Key Vault."""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from shared import context as app_context
from shared.avx_renewal import renew
from shared.errors import ApiError, CertRenewError
from shared.telemetry import invocation
from shared.webhook import MAX_BODY_BYTES, parse_renew_request

bp = func.Blueprint()
log = logging.getLogger("certrenew.http")


def json_response(status: int, body: dict[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body), status_code=status, mimetype="application/json", headers={"Cache-Control": "no-store"}
    )


@bp.function_name("renew_http")
@bp.route(route="certificates/renew", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def renew_http(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    invocation_id = getattr(context, "invocation_id", None)
    with invocation(invocation_id):
        body = req.get_body() or b""
        if len(body) > MAX_BODY_BYTES:  # before parsing anything
            error = ApiError(413, "PAYLOAD_TOO_LARGE", f"The request body exceeds {MAX_BODY_BYTES} bytes")
            return json_response(error.status, error.body(invocation_id))
        parsed = parse_renew_request(body, dict(req.params))
        if isinstance(parsed, ApiError):
            return json_response(parsed.status, parsed.body(invocation_id))
        try:
            answer = renew(parsed, app_context.avx_client(), app_context.key_vault_store(), invocation_id)
        except CertRenewError as exc:
            log.error("Renewal failed: %s", exc.message)
            error = ApiError(500, exc.code, exc.message, exc.remediation)
            return json_response(error.status, error.body(invocation_id))
        return json_response(answer.status, answer.body)
