"""HTTP triggers of the AppViewX path.

- `POST /api/certificates/renew` renews a certificate in AppViewX and stores it in Key Vault; with
  `Prefer: respond-async` it writes the renewal record, queues the renewal (`renew_queue.renew_queued` runs it) and
  answers 202 at once with `Location` and `Retry-After`.
- `GET /api/certificates/renew/{pendingId}` tells the state of a renewal record: accepted, pending, renewed or failed
  (with its reason).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from shared import context as app_context
from shared.appviewx import queue_message
from shared.appviewx.queue_message import RETRY_AFTER_ACCEPTED_SECONDS, RETRY_AFTER_PENDING_SECONDS
from shared.appviewx.queued import accept_queued
from shared.appviewx.records import OPEN_STATES, RenewalState
from shared.appviewx.storing import Pipeline
from shared.appviewx.validation import RenewCommand, check_body_size, parse_renew_request, unstorable
from shared.appviewx.webhook_renewal import WebhookAnswer, pending_answer, renew_and_store
from shared.core import redaction
from shared.core.errors import ApiError, CertRenewError, Rejected, http_answer
from shared.core.telemetry import invocation
from shared.security import idempotency, signature
from shared.security.callers import caller_of, status_view

bp = func.Blueprint()
log = logging.getLogger("certrenew.http")
PENDING_ID = re.compile(r"^[0-9a-f]{32}$")


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


@dataclass
class _Claimed:
    """The request's Idempotency-Key once claimed (scoped to the caller), or none when the request has no key."""

    claims: idempotency.IdempotencyStore | None = None
    key: str | None = None
    early: func.HttpResponse | None = None  # the answer of a repeat: the first answer, the record's, or a conflict


def _renew(req: func.HttpRequest, invocation_id: str | None, renewals: func.Out[str] | None) -> func.HttpResponse:
    body = req.get_body() or b""
    check_body_size(body)  # before anything reads it
    webhook = app_context.settings().webhook  # a settings problem (blank secret, ...) is a 500 before anything
    query = dict(req.params)
    if webhook.hmac_secret:
        timestamp, signed = req.headers.get("X-Signature-Timestamp"), req.headers.get("X-Signature")
        signature.verify(webhook.hmac_secret, timestamp, signed, body, time.time())
        signature.unsigned_query(list(query))
    parsed = parse_renew_request(body, query)
    # A caller's PFX password is never registered with the redaction guard (callers could fill it, or blank ordinary
    # words from every log line): it lives only in fields without repr and in the AVX and Key Vault request bodies.
    # The app's own one-time password is registered too, as defence in depth (the guard keeps at most 64).
    if parsed.password_generated:
        redaction.register_secret(parsed.avx.password)
    caller = caller_of(req.headers, webhook.app_service_auth)
    claimed = _claim(req, caller.scope, body, query, invocation_id)
    if claimed.early is not None:
        return claimed.early
    if webhook.hmac_secret:  # after the key's claim, so a repeat with the same Idempotency-Key gets the first answer
        _first_use_of_signature(req, claimed)
    return _run(req, parsed, caller.name, invocation_id, claimed, renewals)


def _claim(
    req: func.HttpRequest, scope: str, body: bytes, query: dict[str, str], invocation_id: str | None
) -> _Claimed:
    key = req.headers.get("Idempotency-Key")
    if key is None:
        return _Claimed()
    if not idempotency.valid_key(key):
        raise Rejected(
            ApiError(
                400,
                "INVALID_REQUEST",
                "Idempotency-Key must be 1-128 visible ASCII characters",
                "Send an Idempotency-Key of 1-128 visible ASCII characters without spaces (a change number or a "
                "UUID), or leave the header out; nothing was renewed.",
            )
        )
    key = idempotency.scoped_key(scope, key)  # keys are per caller: another caller's key is simply a different key
    claims = app_context.idempotency_store()
    claim = claims.claim(key, idempotency.fingerprint(body, query))
    return _Claimed(claims, key, _repeat_answer(claim, invocation_id))


def _repeat_answer(claim: idempotency.Claim, invocation_id: str | None) -> func.HttpResponse | None:
    """The answer to a repeated Idempotency-Key, or None when this request claimed it first."""
    if claim.outcome is idempotency.ClaimOutcome.REPLAY:
        if claim.status == 202 and (claim.body or {}).get("status") == "accepted":  # the first async answer
            return _async_response(WebhookAnswer(202, claim.body or {}))
        return json_response(claim.status or 200, claim.body or {})
    if claim.outcome is idempotency.ClaimOutcome.RECORDED:
        # The first invocation died after AVX may have acted: answer from its record, never renew again.
        record = app_context.pending_store().get(claim.pending_id or "")
        if record is not None and record.is_queued:  # an asynchronous renewal: its first 202, from the record
            return _async_response(WebhookAnswer(202, _accepted_body(record.pending_id, invocation_id)))
        if record is not None:
            return json_response(202, pending_answer(record, invocation_id))
        # The key is tied to a renewal that may have happened, but its record cannot be read: never renew without
        # holding the key (the claim stays, so no retry renews either until it expires after 24 h).
        raise Rejected(
            ApiError(
                409,
                "IN_PROGRESS",
                "A request with this Idempotency-Key already reached AppViewX, and its renewal record cannot be "
                "found; it is not renewed again",
                "Check the certificate in AppViewX and Key Vault; to renew again, use a new Idempotency-Key.",
            )
        )
    if claim.outcome is idempotency.ClaimOutcome.IN_PROGRESS:
        raise Rejected(
            ApiError(409, "IN_PROGRESS", "A request with this Idempotency-Key is still running", "Retry later.")
        )
    if claim.outcome is idempotency.ClaimOutcome.MISMATCH:
        raise Rejected(
            ApiError(
                422,
                "IDEMPOTENCY_KEY_REUSED",
                "This Idempotency-Key was used within 24 h for a different request",
                "Use a new Idempotency-Key for a different request.",
            )
        )
    return None


def _first_use_of_signature(req: func.HttpRequest, claimed: _Claimed) -> None:
    """A signed request is accepted once (across instances); a replay is refused and frees the key it claimed."""
    first_use = False
    try:
        first_use = app_context.signature_replays().first_use(
            req.headers.get("X-Signature-Timestamp", ""), req.headers.get("X-Signature", "")
        )
    finally:
        if not first_use and claimed.claims is not None and claimed.key is not None:
            claimed.claims.release(claimed.key)
    if not first_use:
        raise Rejected(signature.replayed())


def _run(
    req: func.HttpRequest,
    command: RenewCommand,
    caller: str | None,
    invocation_id: str | None,
    claimed: _Claimed,
    renewals: func.Out[str] | None,
) -> func.HttpResponse:
    claims, key = claimed.claims, claimed.key
    # RFC 7240: a preference, not a demand; outside the host (no queue binding) the request is served synchronously.
    respond_async = renewals is not None and queue_message.prefers_async(req.headers.get("Prefer"))
    answer: WebhookAnswer | None = None
    try:
        attach = (lambda pending_id: claims.attach(key, pending_id)) if claims is not None and key else None
        if respond_async and renewals is not None:
            answer = _accept_async(command, caller, invocation_id, key, renewals, attach)
            return _async_response(answer) if answer.status == 202 else json_response(answer.status, answer.body)
        scope = idempotency.scope(key) if key else None
        answer = renew_and_store(command, _pipeline(caller, invocation_id), idempotency_scope=scope, on_record=attach)
    finally:
        if claims is not None and key is not None:
            # Answers are replayed for 24 h. Once AVX may have acted the key stays claimed whatever the answer, so a
            # retry never renews again; only a failure that provably came before AVX (or AVX's refusal) frees it.
            if answer is not None and (answer.status < 500 or answer.avx_called):
                claims.complete(key, answer.status, answer.body)
            else:
                claims.release(key)
    return json_response(answer.status, answer.body)


def _pipeline(caller: str | None, invocation_id: str | None) -> Pipeline:
    return Pipeline(
        avx=app_context.avx_client(),
        store=app_context.key_vault_store(),
        records=app_context.pending_store(),
        invocation_id=invocation_id,
        caller=caller,
    )


def _accept_async(
    command: RenewCommand,
    caller: str | None,
    invocation_id: str | None,
    key: str | None,
    renewals: func.Out[str],
    on_record: Callable[[str], None] | None = None,
) -> WebhookAnswer:
    """Write the record, then hand the renewal to the queue (the output binding writes the message when this
    invocation ends successfully, after the record exists). A record whose message never arrives stays `accepted`
    (reason QUEUED) and is ended `failed` (QUEUE_MESSAGE_LOST) by the timer; AVX is never called for it."""
    # A format Key Vault can never hold is refused at once (pure check); a merge's pending CSR is checked by the
    # queue function, which ends the record failed (UNSTORABLE_FORMAT) when there is none.
    rejection = unstorable(command, pending_exists=True)
    if rejection is not None:
        return WebhookAnswer(rejection.status, rejection.body(invocation_id))
    pipeline = _pipeline(caller, invocation_id)
    record = accept_queued(command, pipeline, idempotency_scope=idempotency.scope(key) if key else None)
    # The key is tied to the record (`on_record`, like the synchronous path): if the key's claim is left `running`
    # (this invocation dies after answering, or its completion is lost), a retry after the claim went stale replays
    # this 202 from the record instead of queueing the renewal again. Should the invocation die before its message
    # is written, the record ends failed QUEUE_MESSAGE_LOST (visible on the status route): never renewed twice.
    if on_record is not None:
        on_record(record.pending_id)
    renewals.set(queue_message.queue_message(record.pending_id, command))
    log.info("Renewal %s accepted and queued", record.pending_id)
    body = _accepted_body(record.pending_id, invocation_id)
    # A 202 leaves the key claimed (answers replay for 24 h): a retry never queues the renewal twice.
    return WebhookAnswer(202, body, avx_called=True)


def _accepted_body(pending_id: str, invocation_id: str | None) -> dict[str, Any]:
    return {
        "status": "accepted",
        "pendingId": pending_id,
        "statusUrl": queue_message.status_location(pending_id),
        "invocationId": invocation_id,
    }


def _async_response(answer: WebhookAnswer) -> func.HttpResponse:
    pending_id = str(answer.body["pendingId"])
    return json_response(
        202,
        answer.body,
        {
            "Location": queue_message.status_location(pending_id),
            "Retry-After": str(queue_message.RETRY_AFTER_ACCEPTED_SECONDS),
            "Preference-Applied": "respond-async",
        },
    )


@bp.function_name("renew_status")
@bp.route(route="certificates/renew/{pendingId}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def renew_status(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    invocation_id = getattr(context, "invocation_id", None)
    pending_id = req.route_params.get("pendingId", "")
    return answered(lambda: _status(pending_id, invocation_id), invocation_id, log, "Renewal status failed")


def _status(pending_id: str, invocation_id: str | None) -> func.HttpResponse:
    if not PENDING_ID.match(pending_id):
        raise Rejected(
            ApiError(
                400,
                "INVALID_REQUEST",
                "pendingId must be 32 hex characters",
                "Use the pendingId of a 202 answer of POST /api/certificates/renew.",
            )
        )
    record = app_context.pending_store().get(pending_id)
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
    return json_response(200, {**status_view(record.public()), "invocationId": invocation_id}, headers)
