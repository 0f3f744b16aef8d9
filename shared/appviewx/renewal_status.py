"""The answer of the status route (`GET /api/certificates/renew/{pendingId}`): a renewal record's state (accepted,
pending, renewed or failed, with its reason) as callers may see it, and when to ask again while it is open."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.appviewx.queue_message import PENDING_ID, RETRY_AFTER_ACCEPTED_SECONDS, RETRY_AFTER_PENDING_SECONDS
from shared.appviewx.records import OPEN_STATES, PendingStore, RenewalState
from shared.core.errors import ApiError, Rejected
from shared.security.callers import status_view


def renewal_status(
    pending_id: str, records: Callable[[], PendingStore], invocation_id: str | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The status body and its headers (`Retry-After` while the renewal runs). Raises Rejected for a malformed or
    unknown pendingId."""
    if not PENDING_ID.match(pending_id):
        raise Rejected(
            ApiError(
                400,
                "INVALID_REQUEST",
                "pendingId must be 32 hex characters",
                "Use the pendingId of a 202 answer of POST /api/certificates/renew.",
            )
        )
    record = records().get(pending_id)  # opened only for a well-formed id
    if record is None:
        raise Rejected(
            ApiError(
                404,
                "NOT_FOUND",
                "No pending renewal has this id",
                "Check the pendingId: it is the one a 202 answer of POST /api/certificates/renew gave, from an app "
                "with the same storage account (AzureWebJobsStorage).",
            )
        )
    headers = {}
    if record.state in OPEN_STATES:  # still running: when to ask again
        wait = RETRY_AFTER_ACCEPTED_SECONDS if record.state is RenewalState.ACCEPTED else RETRY_AFTER_PENDING_SECONDS
        headers["Retry-After"] = str(wait)
    return {**status_view(record.public()), "invocationId": invocation_id}, headers
