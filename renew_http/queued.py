"""Queue triggers of the asynchronous AppViewX path.

- `renew_queued` runs a renewal the webhook accepted with `Prefer: respond-async`: the same checks, AVX call and Key
  Vault pipeline as the synchronous webhook, once per record however often the message is delivered.
- `renew_queued_poison` takes the messages the host gave up on (after host.json's maxDequeueCount) from
  `<RENEWAL_QUEUE>-poison` and ends their records with the last reason, so no renewal is silently lost.

Thin: the runs live in `shared.appviewx.queued`, the message format in `shared.appviewx.queue_message`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import azure.functions as func

from shared import context as app_context
from shared.core import redaction
from shared.core.telemetry import invocation

if TYPE_CHECKING:  # the AppViewX path (and the Azure SDK behind it) is imported by the first message, not at cold start
    from shared.appviewx.queued import QueuedOutcome
    from shared.appviewx.storing import Pipeline

bp = func.Blueprint()
log = logging.getLogger("certrenew.queue")


def _pipeline(invocation_id: str | None) -> Pipeline:
    from shared.appviewx.storing import Pipeline

    return Pipeline(
        avx=app_context.avx_client(),
        store=app_context.key_vault_store(),
        records=app_context.pending_store(),
        invocation_id=invocation_id,
    )


def _log_outcome(outcome: QueuedOutcome) -> None:
    detail = f" [{outcome.code}] {outcome.message}" if outcome.code else ""
    log.info("Queued renewal %s: %s%s", outcome.pending_id, outcome.state, detail)


@bp.function_name("renew_queued")
@bp.queue_trigger(arg_name="msg", queue_name="%RENEWAL_QUEUE%", connection="AzureWebJobsStorage")
def renew_queued_message(msg: func.QueueMessage, context: func.Context) -> None:
    from shared.appviewx.queue_message import BadQueueMessage, read_queue_message
    from shared.appviewx.queued import renew_queued

    invocation_id = getattr(context, "invocation_id", None)
    with invocation(invocation_id, context):
        try:
            queued = read_queue_message(msg.get_body())
        except BadQueueMessage as exc:
            # Retrying cannot help; the message is dropped with an error naming it (no record can be found from it).
            log.error("Renewal queue message %s dropped: %s", msg.id, exc)
            return
        redaction.register_secret(queued.command.avx.password)  # the one-time password of this delivery
        # RetryQueued and StateStoreError propagate: the host retries the message with its backoff (host.json).
        expires = getattr(msg, "expiration_time", None)  # the queue's own expiry of this message
        outcome = renew_queued(queued.pending_id, queued.command, _pipeline(invocation_id), message_expires_at=expires)
        _log_outcome(outcome)


@bp.function_name("renew_queued_poison")
@bp.queue_trigger(arg_name="msg", queue_name="%RENEWAL_QUEUE%-poison", connection="AzureWebJobsStorage")
def renew_queued_poison(msg: func.QueueMessage, context: func.Context) -> None:
    from shared.appviewx.queue_message import BadQueueMessage, read_queue_message
    from shared.appviewx.queued import settle_poisoned

    invocation_id = getattr(context, "invocation_id", None)
    with invocation(invocation_id, context):
        try:
            queued = read_queue_message(msg.get_body())
        except BadQueueMessage as exc:
            log.error("Poison renewal message %s dropped: %s", msg.id, exc)
            return
        outcome = settle_poisoned(queued.pending_id, _pipeline(invocation_id))
        log.error("Renewal %s gave up after the queue's last try: %s", outcome.pending_id, outcome.state)
        _log_outcome(outcome)
