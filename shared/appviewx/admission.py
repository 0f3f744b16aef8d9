"""Admission of a webhook renewal request, reusable by any entry point: `admit` takes the request's body, headers and
query and returns the command to run (`Admitted`) or the answer to give at once (`Reply`: a rejection, or the answer
to a repeated Idempotency-Key); `run_admitted` runs an admitted command, synchronously (`renew_and_store`) or through
the renewal queue (`Prefer: respond-async`), and settles the caller's Idempotency-Key.

In order: body size, settings, signature (and unsigned query), parsing, caller, Idempotency-Key claim (a repeat gets
its first answer), signature accepted once (after the claim, so a repeat with the same key gets the first answer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.appviewx import queue_message
from shared.appviewx.queued import accept_queued
from shared.appviewx.records import PendingStore
from shared.appviewx.storing import Pipeline
from shared.appviewx.validation import RenewCommand, check_body_size, parse_renew_request, unstorable
from shared.appviewx.webhook_renewal import WebhookAnswer, pending_answer, renew_and_store, tie_to_caller
from shared.core import redaction
from shared.core.errors import ApiError, Rejected
from shared.core.settings import WebhookSettings
from shared.security import idempotency, signature
from shared.security.callers import caller_of
from shared.security.replay import SignatureReplayStore

log = logging.getLogger("certrenew.http")


@dataclass(frozen=True)
class WebhookRequest:
    """What admission reads of one request (headers: the host's case-insensitive mapping)."""

    body: bytes = field(repr=False)
    headers: Mapping[str, str]
    query: dict[str, str]
    invocation_id: str | None = None
    can_queue: bool = False  # a queue is there to take the renewal (the host always binds it)


@dataclass(frozen=True)
class AdmissionServices:
    """Where admission and its runs reach the app's settings and stores, each opened only when first needed."""

    webhook: Callable[[], WebhookSettings]
    claims: Callable[[], idempotency.IdempotencyStore]
    records: Callable[[], PendingStore]
    replays: Callable[[], SignatureReplayStore]
    pipeline: Callable[[str | None, str | None], Pipeline]  # (caller, invocation id)


@dataclass(frozen=True)
class Reply:
    """An answer to give: status, JSON body and headers beyond the usual ones."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Admitted:
    """A renewal admitted to run, with the caller's Idempotency-Key claimed (scoped to the caller), if it sent one."""

    command: RenewCommand
    caller: str | None
    invocation_id: str | None
    respond_async: bool
    claims: idempotency.IdempotencyStore | None = None
    key: str | None = None


def admit(request: WebhookRequest, services: AdmissionServices) -> Admitted | Reply:
    """The command to run, or the answer to give now. App errors other than a rejection (storage, settings) raise."""
    try:
        return _admit(request, services)
    except Rejected as rejected:
        return Reply(rejected.answer.status, rejected.answer.body(request.invocation_id))


def _admit(request: WebhookRequest, services: AdmissionServices) -> Admitted | Reply:
    body, headers, query = request.body, request.headers, request.query
    check_body_size(body)  # before anything reads it
    webhook = services.webhook()  # a settings problem (blank secret, ...) is a 500 before anything
    if webhook.hmac_secret:
        timestamp, signed = headers.get("X-Signature-Timestamp"), headers.get("X-Signature")
        signature.verify(webhook.hmac_secret, timestamp, signed, body, time.time())
        signature.unsigned_query(list(query))
    parsed = parse_renew_request(body, query)
    # A caller's PFX password is never registered with the redaction guard (callers could fill it, or blank ordinary
    # words from every log line): it lives only in fields without repr and in the AVX and Key Vault request bodies.
    # The app's own one-time password is registered too, as defence in depth (the guard keeps at most 64).
    if parsed.password_generated:
        redaction.register_secret(parsed.avx.password)
    caller = caller_of(headers, webhook.app_service_auth)
    claims, key, early = _claim(request, caller.scope, services)
    if early is not None:
        return early
    if webhook.hmac_secret:  # after the key's claim, so a repeat with the same Idempotency-Key gets the first answer
        _first_use_of_signature(headers, services, claims, key)
    # RFC 7240: a preference, not a demand; outside the host (no queue binding) the request is served synchronously.
    respond_async = request.can_queue and queue_message.prefers_async(headers.get("Prefer"))
    return Admitted(parsed, caller.name, request.invocation_id, respond_async, claims, key)


def _claim(
    request: WebhookRequest, scope: str, services: AdmissionServices
) -> tuple[idempotency.IdempotencyStore | None, str | None, Reply | None]:
    """The claimed key and its store (none without a key), and the answer of a repeat: the first answer, the
    record's, or a conflict."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None, None, None
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
    claims = services.claims()
    claim = claims.claim(key, idempotency.fingerprint(request.body, request.query))
    return claims, key, _repeat_answer(claim, request.invocation_id, services)


def _repeat_answer(claim: idempotency.Claim, invocation_id: str | None, services: AdmissionServices) -> Reply | None:
    """The answer to a repeated Idempotency-Key, or None when this request claimed it first."""
    if claim.outcome is idempotency.ClaimOutcome.REPLAY:
        if claim.status == 202 and (claim.body or {}).get("status") == "accepted":  # the first async answer
            return accepted_reply(claim.body or {})
        return Reply(claim.status or 200, claim.body or {})
    if claim.outcome is idempotency.ClaimOutcome.RECORDED:
        # The first invocation died after AVX may have acted: answer from its record, never renew again.
        record = services.records().get(claim.pending_id or "")
        if record is not None and record.is_queued:  # an asynchronous renewal: its first 202, from the record
            return accepted_reply(accepted_body(record.pending_id, invocation_id))
        if record is not None:
            return Reply(202, pending_answer(record, invocation_id))
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


def _first_use_of_signature(
    headers: Mapping[str, str],
    services: AdmissionServices,
    claims: idempotency.IdempotencyStore | None,
    key: str | None,
) -> None:
    """A signed request is accepted once (across instances); a replay is refused and frees the key it claimed."""
    first_use = False
    try:
        first_use = services.replays().first_use(
            headers.get("X-Signature-Timestamp", ""), headers.get("X-Signature", "")
        )
    finally:
        if not first_use and claims is not None and key is not None:
            claims.release(key)
    if not first_use:
        raise Rejected(signature.replayed())


def run_admitted(
    admitted: Admitted, services: AdmissionServices, enqueue: Callable[[str], None] | None = None
) -> Reply:
    """Run an admitted renewal (queued through `enqueue` when it asked for it and a queue is there) and settle its
    Idempotency-Key."""
    claims, key, command = admitted.claims, admitted.key, admitted.command
    answer: WebhookAnswer | None = None
    try:
        attach = (lambda pending_id: claims.attach(key, pending_id)) if claims is not None and key else None
        if admitted.respond_async and enqueue is not None:
            answer = _accept_async(admitted, services, enqueue, attach)
            return accepted_reply(answer.body) if answer.status == 202 else Reply(answer.status, answer.body)
        scope = idempotency.scope(key) if key else None
        pipeline = services.pipeline(admitted.caller, admitted.invocation_id)
        answer = renew_and_store(command, pipeline, idempotency_scope=scope, on_record=attach)
    finally:
        if claims is not None and key is not None:
            # Answers are replayed for 24 h. Once AVX may have acted the key stays claimed whatever the answer, so a
            # retry never renews again; only a failure that provably came before AVX (or AVX's refusal) frees it.
            if answer is not None and (answer.status < 500 or answer.avx_called):
                claims.complete(key, answer.status, answer.body)
            else:
                claims.release(key)
    return Reply(answer.status, answer.body)


def _accept_async(
    admitted: Admitted,
    services: AdmissionServices,
    enqueue: Callable[[str], None],
    on_record: Callable[[str], None] | None = None,
) -> WebhookAnswer:
    """Write the record, then hand the renewal to the queue (the output binding writes the message when this
    invocation ends successfully, after the record exists). A record whose message never arrives stays `accepted`
    (reason QUEUED) and is ended `failed` (QUEUE_MESSAGE_LOST) by the timer; AVX is never called for it."""
    command, invocation_id, key = admitted.command, admitted.invocation_id, admitted.key
    # A format Key Vault can never hold is refused at once (pure check); a merge's pending CSR is checked by the
    # queue function, which ends the record failed (UNSTORABLE_FORMAT) when there is none.
    rejection = unstorable(command, pending_exists=True)
    if rejection is not None:
        return WebhookAnswer(rejection.status, rejection.body(invocation_id))
    pipeline = services.pipeline(admitted.caller, invocation_id)
    record = accept_queued(command, pipeline, idempotency_scope=idempotency.scope(key) if key else None)
    # The key is tied to the record (`on_record`, like the synchronous path): if the key's claim is left `running`
    # (this invocation dies after answering, or its completion is lost), a retry after the claim went stale replays
    # this 202 from the record instead of queueing the renewal again. Should the invocation die before its message
    # is written, the record ends failed QUEUE_MESSAGE_LOST (visible on the status route): never renewed twice.
    tie_to_caller(record, pipeline, on_record)  # failing: the record ends NOT_SENT, nothing is queued
    enqueue(queue_message.queue_message(record.pending_id, command))
    log.info("Renewal %s accepted and queued", record.pending_id)
    body = accepted_body(record.pending_id, invocation_id)
    # A 202 leaves the key claimed (answers replay for 24 h): a retry never queues the renewal twice.
    return WebhookAnswer(202, body, avx_called=True)


def accepted_body(pending_id: str, invocation_id: str | None) -> dict[str, Any]:
    return {
        "status": "accepted",
        "pendingId": pending_id,
        "statusUrl": queue_message.status_location(pending_id),
        "invocationId": invocation_id,
    }


def accepted_reply(body: dict[str, Any]) -> Reply:
    """The 202 of a renewal accepted for the queue: where to ask, and when."""
    pending_id = str(body["pendingId"])
    headers = {
        "Location": queue_message.status_location(pending_id),
        "Retry-After": str(queue_message.RETRY_AFTER_ACCEPTED_SECONDS),
        "Preference-Applied": "respond-async",
    }
    return Reply(202, body, headers)
