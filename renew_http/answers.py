"""How the HTTP functions answer: JSON bodies that are never cached, and the one error boundary (`answered`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from shared.core.errors import ApiError, CertRenewError, Rejected, http_answer


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body),
        status_code=status,
        mimetype="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def error_response(error: ApiError, invocation_id: str | None) -> func.HttpResponse:
    return json_response(error.status, error.body(invocation_id))


def answered(
    work: Callable[[], func.HttpResponse], invocation_id: str | None, logger: logging.Logger, failure: str
) -> func.HttpResponse:
    """The HTTP functions' one error boundary: a rejection is answered as it is, any other error of the app through
    `http_answer` (logged as `failure`); anything unexpected propagates (the host answers 500)."""
    try:
        return work()
    except Rejected as rejected:
        return error_response(rejected.answer, invocation_id)
    except CertRenewError as exc:
        logger.error("%s: %s", failure, exc.message)
        return error_response(http_answer(exc), invocation_id)
