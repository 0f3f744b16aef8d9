"""The webhook's renew-and-store (`renew_and_store`; the queue worker runs the same steps): checks that the result can be
stored, writes the renewal record (`accepted`) *before* AVX is called, asks AVX to renew (the one AVX round trip of a
call, for both request shapes), and stores the result through `storing.store_avx_result`. AVX files the renewal under a
new record (its answer's resourceId); what completion needs of the replaced certificate is read from the renewed
record, which AVX keeps, only when a renewal goes pending or is refused (`renewal_finder.learn_replaced`).

Once AVX may have acted, nothing is lost: any problem leaves the record `pending` (answered 202 with its
`pendingId`); a result Key Vault can never hold ends `failed` with its reason and a coded error naming the AVX ids."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from shared.appviewx.client import AvxRenewResult
from shared.appviewx.ownership import TARGET_NOT_OWNED, adopted, may_write, not_owned
from shared.appviewx.records import NOT_SENT, PendingRecord, RecordTaken, RenewalState
from shared.appviewx.renewal_finder import learn_replaced
from shared.appviewx.renewal_rules import (
    AVX_OUTCOME_UNKNOWN,
    avx_renew_outcome,
    certificate_label,
)
from shared.appviewx.storing import AvxMaterial, NotStored, Pipeline, save_settled, settle_not_stored, store_avx_result
from shared.appviewx.validation import RenewCommand, avx_error_answer, renewed_answer, unstorable
from shared.azure.keyvault import b64decode_strict
from shared.core.certificates import Storage
from shared.core.errors import ApiError, AvxError, IdentityError, KeyVaultError, StateStoreError
from shared.core.events import Event, Source
from shared.core.telemetry import emit_event

log = logging.getLogger("certrenew.appviewx")

# What is let through once AVX may have acted: the process is being stopped. Anything else (a native library's
# panic, which derives from BaseException) keeps the record pending and the caller's Idempotency-Key claimed.
STOPPING = (KeyboardInterrupt, SystemExit)


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: dict[str, Any]
    avx_called: bool = False  # True once AVX may have acted: the caller's Idempotency-Key must stay claimed


# -- the webhook -----------------------------------------------------------------------------------------------------


def material_from_renew_answer(result: AvxRenewResult, command: RenewCommand) -> AvxMaterial:
    """The material in AVX's renew answer (raises NotStored when its encoding is unusable)."""
    try:
        content = b64decode_strict(result.certificate_content or "")
    except ValueError:
        raise NotStored(
            "AVX_BAD_RESPONSE", "AppViewX returned unusable content: certificateContent is not base64"
        ) from None
    key: bytes | None = None
    if command.storage is Storage.IMPORT_PEM and result.private_key_content:
        text = result.private_key_content.strip()
        try:
            key = text.encode() if text.startswith("-----BEGIN") else b64decode_strict(text)
        except ValueError:
            raise NotStored(
                "AVX_BAD_RESPONSE", "AppViewX returned unusable content: privateKeyContent is neither PEM nor base64"
            ) from None
    return AvxMaterial(
        content=content,
        storage=command.storage,
        password=command.avx.password,
        private_key=key,
        avx_name=result.certificate_name,
        avx_resource_id=result.resource_id,
        avx_request_id=result.request_id,
    )


@dataclass
class Webhook:
    command: RenewCommand
    pipeline: Pipeline

    def name_hint(self, record: PendingRecord | None = None) -> str | None:
        """Once the record exists it knows more (the common name a resourceId-only request searched for)."""
        command = self.command
        if record is not None:
            return certificate_label(
                record.key_vault_name or command.target_name(), record.common_name, record.requested_resource_id
            )
        return certificate_label(command.target_name(), command.avx.common_name, command.avx.resource_id)

    def failed(
        self, error: ApiError, *, avx_called: bool = False, record: PendingRecord | None = None
    ) -> WebhookAnswer:
        emit_event(
            Event.RENEWAL_FAILED,
            {
                "source": Source.APPVIEWX,
                "certificateName": self.name_hint(record),
                "reason": error.code,
                "message": error.message,
                "httpStatus": error.status,
                "caller": self.pipeline.caller,
                "vault": self.pipeline.vault_name,
                "pendingId": record.pending_id if record is not None else None,  # the record it failed, when written
            },
        )
        return WebhookAnswer(error.status, error.body(self.pipeline.invocation_id), avx_called)

    def pending(self, record: PendingRecord, result: AvxRenewResult | None) -> WebhookAnswer:
        named = record if result is None else learn_replaced(record, self.pipeline.avx)  # no-op once known
        emit_event(
            Event.RENEWAL_PENDING,
            {
                "source": Source.APPVIEWX,
                "certificateName": self.name_hint(named),
                "pendingId": record.pending_id,
                "reason": record.reason,
                "message": record.last_error,
                "scheduledAt": record.created_at,
                "avxResourceId": record.avx_resource_id,
                "caller": self.pipeline.caller,
                "vault": self.pipeline.vault_name,
            },
        )
        body = pending_answer(record, self.pipeline.invocation_id)
        body["avx"] = result.ids() if result else None
        return WebhookAnswer(202, body, avx_called=True)

    def keep_pending(
        self, record: PendingRecord, code: str, message: str, result: AvxRenewResult | None
    ) -> WebhookAnswer:
        if result is not None:  # AVX answered: read what is replaced now, kept with the record for completion
            record = learn_replaced(record, self.pipeline.avx)
        outcome = settle_not_stored(record, NotStored(code, message), self.pipeline)
        return self.pending(outcome.record, result)


def pending_answer(record: PendingRecord, invocation_id: str | None) -> dict[str, Any]:
    """The 202 body for a renewal that is not (yet) in Key Vault; also the answer to a repeat of a key whose first
    invocation died after AVX may have acted."""
    avx = {"resourceId": record.avx_resource_id, "requestId": record.avx_request_id, "message": None}
    status = {RenewalState.FAILED: "failed", RenewalState.RENEWED: "renewed"}.get(record.state, "pending")
    stored = {"id": record.key_vault_certificate_id, "name": record.key_vault_name}
    return {
        "status": status,
        **({"keyVault": stored} if record.state is RenewalState.RENEWED else {}),
        "pendingId": record.pending_id,
        "reason": record.reason,
        "message": record.last_error,
        "avx": avx if record.avx_resource_id or record.avx_request_id else None,
        "invocationId": invocation_id,
    }


def prepare(command: RenewCommand, pipeline: Pipeline) -> ApiError | None:
    """Everything checked before AVX is asked to renew: the Key Vault token and that the result can be stored (no AVX
    call: the renew is the call's one AVX round trip). An ApiError means nothing was renewed; a 5xx one is worth
    retrying, a 4xx one is not."""
    store = pipeline.store
    target = command.target_name()
    try:
        store.ensure_token()
    except IdentityError as exc:
        return ApiError(502, exc.code, exc.message + "; nothing was renewed.", exc.remediation)
    pending_exists: bool | None = None
    if command.storage is Storage.MERGE and target:
        try:
            pending_exists = store.has_pending_csr(target)
        except KeyVaultError as exc:
            return ApiError(502, "KEY_VAULT_UNAVAILABLE", exc.message + "; nothing was renewed.", exc.remediation)
    return unstorable(command, pending_exists) or target_problem(command, pipeline)


def target_problem(command: RenewCommand, pipeline: Pipeline) -> ApiError | None:
    """409 TARGET_NOT_OWNED when the Key Vault name the renewal would write (known before AVX is called) holds a
    certificate this app may not write (`shared.appviewx.ownership`): one Key Vault read, reused by the store. A
    merge goes into a pending CSR (checked before merging); a name known only from AVX's answer, or this app's
    certificate asked for by resourceId alone, is checked against the renewed certificate before storing."""
    if command.storage is Storage.MERGE:
        return None
    common_name = command.avx.common_name
    name = command.target_name()
    if not name or adopted(name, pipeline.caller, pipeline.store.adoptable):
        return None
    try:
        current = pipeline.store.current(name)
    except KeyVaultError as exc:
        return ApiError(502, "KEY_VAULT_UNAVAILABLE", exc.message + "; nothing was renewed.", exc.remediation)
    pipeline.targets[(pipeline.store.vault_url, name)] = current
    if current is not None and may_write(current, common_name, command.avx.resource_id) is False:
        return not_owned(name, current, common_name, before_avx=True)
    return None


def record_fields(command: RenewCommand) -> dict[str, Any]:
    """What a renewal record knows of its request (the replaced certificate's common name and serial, when the
    request named them; a resourceId-only request learns them if it goes pending)."""
    return {
        "storage": "merge" if command.storage is Storage.MERGE else "import",
        "requested_resource_id": command.avx.resource_id,
        "common_name": command.avx.common_name,
        "serial_number": command.avx.serial_number,
        "key_vault_name": command.target_name() if command.storage is Storage.MERGE else command.key_vault_name,
        "key_vault_url": command.key_vault,
    }


def answered_refusal(error: AvxError) -> bool:
    """AVX answered and refused this request itself (not the app's account, not overload): worth one search to name
    the certificate in the failure event."""
    status = error.http_status
    return status is not None and status not in (401, 403, 429, 503)


class AvxDidNotRenew(Exception):
    """AVX provably did not renew (`avx_renew_outcome`: busy or refused)."""

    def __init__(self, error: AvxError) -> None:
        super().__init__(error.message)
        self.error = error


def renew_and_store(
    command: RenewCommand,
    pipeline: Pipeline,
    *,
    idempotency_scope: str | None = None,
    on_record: Callable[[str], None] | None = None,
) -> WebhookAnswer:
    """The webhook renewal. Everything that can be checked is checked before AVX; the record is written before AVX
    is called (`on_record(pending_id)` ties the caller's Idempotency-Key to it); after AVX may have acted the answer
    is 200 (stored), 202 (pending) or a coded error carrying the AVX ids and the pendingId — never a bare 500."""
    pipeline = pipeline.for_vault(command.key_vault)
    hook = Webhook(command, pipeline)
    rejection = prepare(command, pipeline)
    if rejection is not None:
        return hook.failed(rejection)
    record = PendingRecord.accepted(
        datetime.now(UTC),
        pipeline.invocation_id or pipeline.owner,
        caller=pipeline.caller,
        idempotency_scope=idempotency_scope,
        **record_fields(command),
    )
    record = pipeline.records.create(record)  # StateStoreError: 503, nothing renewed
    record = mark_sent(tie_to_caller(record, pipeline, on_record), pipeline)
    try:
        result = renew_at_avx(hook, record)
    except AvxDidNotRenew as refused:
        if answered_refusal(refused.error):
            record = learn_replaced(record, pipeline.avx)  # names the certificate in the failure event
        save_settled(pipeline, record.failed(refused.error.code, refused.error.message, datetime.now(UTC)))
        return hook.failed(avx_error_answer(refused.error), record=record)
    return result if isinstance(result, WebhookAnswer) else store_renew_answer(hook, record, result)


def end_not_sent(record: PendingRecord, pipeline: Pipeline, why: str) -> None:
    """AVX was never called for the record: it ends failed NOT_SENT (never searched for in AVX, nobody alerted: the
    caller was answered an error and retries). Written unconditionally: this invocation holds its lease."""
    now = datetime.now(UTC)
    save_settled(pipeline, replace(record.failed(NOT_SENT, why, now), etag=None))
    log.warning("Renewal record %s ends %s: %s; AppViewX was not called", record.pending_id, NOT_SENT, why)


def tie_to_caller(record: PendingRecord, pipeline: Pipeline, on_record: Callable[[str], None] | None) -> PendingRecord:
    """`on_record(pending_id)`: the caller's claim (Idempotency-Key, Key Vault version) tied to the record before
    AVX is called. When it fails the record is marked NOT_SENT before the failure goes on up (AVX is never called)."""
    if on_record is None:
        return record
    try:
        on_record(record.pending_id)
    except Exception as exc:
        end_not_sent(record, pipeline, f"its caller's claim could not be tied to it ({type(exc).__name__})")
        raise
    return record


def mark_sent(record: PendingRecord, pipeline: Pipeline) -> PendingRecord:
    """The save that precedes the AVX call marks the record sent; if it fails AVX is not called (StateStoreError),
    and the record ends NOT_SENT (here, or by completion once its lease ran out, should this write fail too)."""
    try:
        return pipeline.records.save(record.sending())
    except (StateStoreError, RecordTaken) as exc:
        end_not_sent(record, pipeline, "the save before the AppViewX call failed")
        if isinstance(exc, StateStoreError):
            raise
        raise StateStoreError(f"The renewal record {record.pending_id} changed before AppViewX was called") from None


def renew_at_avx(hook: Webhook, record: PendingRecord) -> AvxRenewResult | WebhookAnswer:
    """Ask AVX to renew for a written record. Raises AvxDidNotRenew when AVX provably did not act (the caller
    decides: fail, or retry); once AVX may have acted, a problem keeps the record pending (a 202 answer)."""
    try:
        return hook.pipeline.avx.renew(hook.command.avx, hook.command.auto_approval)
    except AvxError as exc:
        if avx_renew_outcome(exc) != AVX_OUTCOME_UNKNOWN:
            raise AvxDidNotRenew(exc) from None
        return hook.keep_pending(record, exc.code, exc.message, None)  # may have renewed: never sent again
    except BaseException as exc:  # AVX may have acted: keep it, never a bare 500
        if isinstance(exc, STOPPING):
            raise
        log.exception("Unexpected failure calling AppViewX for renewal %s", record.pending_id)
        return hook.keep_pending(record, "AVX_UNKNOWN_OUTCOME", f"unexpected {type(exc).__name__}", None)


def store_renew_answer(hook: Webhook, record: PendingRecord, result: AvxRenewResult) -> WebhookAnswer:
    """Store what AVX's renew answer carries; after AVX acted nothing may be lost."""
    try:
        return _store_answer(hook, record, result)
    except BaseException as exc:  # a native panic (pyo3's PanicException is a BaseException) included
        if isinstance(exc, STOPPING):
            raise
        log.exception("Unexpected failure storing renewal %s", record.pending_id)
        return hook.keep_pending(record, "STORE_UNKNOWN_OUTCOME", f"unexpected {type(exc).__name__}", result)


def _store_answer(hook: Webhook, record: PendingRecord, result: AvxRenewResult) -> WebhookAnswer:
    record = replace(record, avx_resource_id=result.resource_id, avx_request_id=result.request_id)
    if not result.certificate_content:
        return hook.keep_pending(
            record,
            "AVX_NO_CERTIFICATE",
            "AppViewX accepted the renewal but returned no certificate (for example, manual approval is pending).",
            result,
        )
    try:
        material = material_from_renew_answer(result, hook.command)
    except NotStored as problem:
        return hook.keep_pending(record, problem.code, problem.message, result)
    outcome = store_avx_result(record, material, hook.pipeline)
    if outcome.state is RenewalState.RENEWED and outcome.stored is not None:
        body = {**renewed_answer(outcome.stored, result), "invocationId": hook.pipeline.invocation_id}
        return WebhookAnswer(200, body, avx_called=True)
    if outcome.state is RenewalState.FAILED:
        error = ApiError(
            409 if outcome.code == TARGET_NOT_OWNED else 502,
            outcome.code or "AVX_BAD_RESPONSE",
            outcome.message or "AppViewX's result cannot be stored",
            outcome.remediation,
            details={"avx": result.ids(), "pendingId": record.pending_id},
        )
        return WebhookAnswer(error.status, error.body(hook.pipeline.invocation_id), avx_called=True)
    return hook.pending(outcome.record, result)
