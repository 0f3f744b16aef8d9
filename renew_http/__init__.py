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
from typing import Any

import azure.functions as func

from shared import context as app_context
from shared import idempotency, redaction, renewal_queue, signature
from shared.avx_pipeline import Pipeline, WebhookAnswer, accept_queued, pending_answer, renew_and_store
from shared.callers import caller_of, status_view
from shared.errors import ApiError, CertRenewError, StateStoreError
from shared.pending import ACCEPTED, OPEN_STATES
from shared.renewal_queue import RETRY_AFTER_ACCEPTED_SECONDS, RETRY_AFTER_PENDING_SECONDS
from shared.telemetry import invocation
from shared.webhook import MAX_BODY_BYTES, RenewCommand, parse_renew_request, unstorable

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
        try:
            return _renew(req, invocation_id, renewals)
        except StateStoreError as exc:
            log.error("Renewal request failed: %s", exc.message)
            return error_response(ApiError(503, exc.code, exc.message, exc.remediation), invocation_id)
        except CertRenewError as exc:
            log.error("Renewal request failed: %s", exc.message)
            return error_response(ApiError(500, exc.code, exc.message, exc.remediation), invocation_id)


def _renew(req: func.HttpRequest, invocation_id: str | None, renewals: func.Out[str] | None) -> func.HttpResponse:
    body = req.get_body() or b""
    if len(body) > MAX_BODY_BYTES:  # before anything reads it
        return error_response(
            ApiError(
                413,
                "PAYLOAD_TOO_LARGE",
                f"The request body exceeds {MAX_BODY_BYTES} bytes",
                f"Send only the renewal's JSON body (at most {MAX_BODY_BYTES // 1024} KiB); nothing was renewed.",
            ),
            invocation_id,
        )
    webhook = app_context.settings().webhook  # a settings problem (blank secret, ...) is a 500 before anything
    secret = webhook.hmac_secret
    query = dict(req.params)
    if secret:
        rejected = signature.verify(
            secret, req.headers.get("X-Signature-Timestamp"), req.headers.get("X-Signature"), body, time.time()
        ) or signature.unsigned_query(list(query))
        if rejected is not None:
            return error_response(rejected, invocation_id)

    parsed = parse_renew_request(body, query)
    if isinstance(parsed, ApiError):
        return error_response(parsed, invocation_id)
    # A caller's PFX password is never registered with the redaction guard (callers could fill it, or blank ordinary
    # words from every log line): it lives only in fields without repr and in the AVX and Key Vault request bodies.
    # The app's own one-time password is registered too, as defence in depth (the guard keeps at most 64).
    if parsed.password_generated:
        redaction.register_secret(parsed.avx.password)

    caller = caller_of(req.headers, webhook.app_service_auth)
    key = req.headers.get("Idempotency-Key")
    if key is not None and not idempotency.valid_key(key):
        return error_response(
            ApiError(
                400,
                "INVALID_REQUEST",
                "Idempotency-Key must be 1-128 visible ASCII characters",
                "Send an Idempotency-Key of 1-128 visible ASCII characters without spaces (a change number or a "
                "UUID), or leave the header out; nothing was renewed.",
            ),
            invocation_id,
        )
    if key is not None:  # keys are per caller: another caller's key is simply a different key
        key = idempotency.scoped_key(caller.scope, key)
    claims = app_context.idempotency_store() if key is not None else None
    if claims is not None and key is not None:
        claim = claims.claim(key, idempotency.fingerprint(body, query))
        if claim.outcome == idempotency.REPLAY:
            if claim.status == 202 and (claim.body or {}).get("status") == "accepted":  # the first async answer
                return _async_response(WebhookAnswer(202, claim.body or {}))
            return json_response(claim.status or 200, claim.body or {})
        if claim.outcome == idempotency.RECORDED:
            # The first invocation died after AVX may have acted: answer from its record, never renew again.
            record = app_context.pending_store().get(claim.pending_id or "")
            if record is not None and record.is_queued:  # an asynchronous renewal: its first 202, from the record
                return _async_response(WebhookAnswer(202, _accepted_body(record.pending_id, invocation_id)))
            if record is not None:
                return json_response(202, pending_answer(record, invocation_id))
            # The key is tied to a renewal that may have happened, but its record cannot be read: never renew
            # without holding the key (the claim stays, so no retry renews either until it expires after 24 h).
            return error_response(
                ApiError(
                    409,
                    "IN_PROGRESS",
                    "A request with this Idempotency-Key already reached AppViewX, and its renewal record cannot be "
                    "found; it is not renewed again",
                    "Check the certificate in AppViewX and Key Vault; to renew again, use a new Idempotency-Key.",
                ),
                invocation_id,
            )
        if claim.outcome == idempotency.IN_PROGRESS:
            return error_response(
                ApiError(409, "IN_PROGRESS", "A request with this Idempotency-Key is still running", "Retry later."),
                invocation_id,
            )
        if claim.outcome == idempotency.MISMATCH:
            return error_response(
                ApiError(
                    422,
                    "IDEMPOTENCY_KEY_REUSED",
                    "This Idempotency-Key was used within 24 h for a different request",
                    "Use a new Idempotency-Key for a different request.",
                ),
                invocation_id,
            )
    if secret:  # after the key's claim, so a repeat with the same Idempotency-Key gets the first answer instead
        first_use = False
        try:
            first_use = app_context.signature_replays().first_use(
                req.headers.get("X-Signature-Timestamp", ""), req.headers.get("X-Signature", "")
            )
        finally:
            if not first_use and claims is not None and key is not None:
                claims.release(key)
        if not first_use:
            return error_response(signature.replayed(), invocation_id)

    # RFC 7240: a preference, not a demand; outside the host (no queue binding) the request is served synchronously.
    respond_async = renewals is not None and renewal_queue.prefers_async(req.headers.get("Prefer"))
    answer: WebhookAnswer | None = None
    try:
        if respond_async and renewals is not None:
            attach_async = (lambda pending_id: claims.attach(key, pending_id)) if claims is not None and key else None
            answer = _accept_async(parsed, caller.name, invocation_id, key, renewals, attach_async)
            return _async_response(answer) if answer.status == 202 else json_response(answer.status, answer.body)
        pipeline = Pipeline(
            avx=app_context.avx_client(),
            store=app_context.key_vault_store(),
            records=app_context.pending_store(),
            invocation_id=invocation_id,
            caller=caller.name,
        )
        attach = (lambda pending_id: claims.attach(key, pending_id)) if claims is not None and key else None
        answer = renew_and_store(
            parsed,
            pipeline,
            idempotency_scope=idempotency.scope(key) if key else None,
            on_record=attach,
        )
    finally:
        if claims is not None and key is not None:
            # Answers are replayed for 24 h. Once AVX may have acted the key stays claimed whatever the answer, so a
            # retry never renews again; only a failure that provably came before AVX (or AVX's refusal) frees it.
            if answer is not None and (answer.status < 500 or answer.avx_called):
                claims.complete(key, answer.status, answer.body)
            else:
                claims.release(key)
    return json_response(answer.status, answer.body)


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
    pipeline = Pipeline(
        avx=app_context.avx_client(),
        store=app_context.key_vault_store(),
        records=app_context.pending_store(),
        invocation_id=invocation_id,
        caller=caller,
    )
    record = accept_queued(command, pipeline, idempotency_scope=idempotency.scope(key) if key else None)
    # The key is tied to the record (`on_record`, like the synchronous path): if the key's claim is left `running`
    # (this invocation dies after answering, or its completion is lost), a retry after the claim went stale replays
    # this 202 from the record instead of queueing the renewal again. Should the invocation die before its message
    # is written, the record ends failed QUEUE_MESSAGE_LOST (visible on the status route): never renewed twice.
    if on_record is not None:
        on_record(record.pending_id)
    renewals.set(renewal_queue.queue_message(record.pending_id, command))
    log.info("Renewal %s accepted and queued", record.pending_id)
    body = _accepted_body(record.pending_id, invocation_id)
    # A 202 leaves the key claimed (answers replay for 24 h): a retry never queues the renewal twice.
    return WebhookAnswer(202, body, avx_called=True)


def _accepted_body(pending_id: str, invocation_id: str | None) -> dict[str, Any]:
    return {
        "status": "accepted",
        "pendingId": pending_id,
        "statusUrl": renewal_queue.status_location(pending_id),
        "invocationId": invocation_id,
    }


def _async_response(answer: WebhookAnswer) -> func.HttpResponse:
    pending_id = str(answer.body["pendingId"])
    return json_response(
        202,
        answer.body,
        {
            "Location": renewal_queue.status_location(pending_id),
            "Retry-After": str(renewal_queue.RETRY_AFTER_ACCEPTED_SECONDS),
            "Preference-Applied": "respond-async",
        },
    )


@bp.function_name("renew_status")
@bp.route(route="certificates/renew/{pendingId}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def renew_status(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    invocation_id = getattr(context, "invocation_id", None)
    pending_id = req.route_params.get("pendingId", "")
    if not PENDING_ID.match(pending_id):
        return error_response(
            ApiError(
                400,
                "INVALID_REQUEST",
                "pendingId must be 32 hex characters",
                "Use the pendingId of a 202 answer of POST /api/certificates/renew.",
            ),
            invocation_id,
        )
    try:
        record = app_context.pending_store().get(pending_id)
    except CertRenewError as exc:
        return error_response(ApiError(503, exc.code, exc.message, exc.remediation), invocation_id)
    if record is None:
        return error_response(
            ApiError(
                404,
                "NOT_FOUND",
                "No pending renewal has this id",
                "Check the pendingId: it is the one a 202 answer of POST /api/certificates/renew gave, from an app "
                "with the same storage account (AzureWebJobsStorage).",
            ),
            invocation_id,
        )
    headers = {}
    if record.state in OPEN_STATES:  # still running: when to ask again
        wait = RETRY_AFTER_ACCEPTED_SECONDS if record.state == ACCEPTED else RETRY_AFTER_PENDING_SECONDS
        headers["Retry-After"] = str(wait)
    return json_response(200, {**status_view(record.public()), "invocationId": invocation_id}, headers)
