"""The AppViewX renewal: validate, check the result can be stored, ask AVX, store in Key Vault, answer.

The steps' decisions live in `shared.webhook` and `shared.certificates`; this module only sequences the I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.avx import AvxClient, AvxRenewResult
from shared.certificates import (
    CertificateParseError,
    Storage,
    common_name_of,
    der_chain,
    derive_certificate_name,
    leaf_of_pfx,
    order_leaf_first,
    parse_certificates,
    pem_bundle_with_pkcs8_key,
)
from shared.errors import ApiError, AvxError, IdentityError, KeyVaultError, StateStoreError
from shared.keyvault import KeyVaultStore, StoredCertificate, b64decode_strict, clean_tags
from shared.pending import PendingRecord, PendingStore
from shared.telemetry import emit_event
from shared.webhook import RenewCommand, avx_error_answer, certificate_tags, renewed_answer, unstorable

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger("certrenew.appviewx")
SOURCE = "appviewx"


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class RenewalRun:
    """One webhook renewal: the validated command and what it runs against."""

    command: RenewCommand
    avx: AvxClient
    store: KeyVaultStore
    pending: Callable[[], PendingStore] | None = None  # opened only when something must be kept for later
    invocation_id: str | None = None
    caller: str | None = None

    def name_hint(self, name: str | None = None) -> str | None:
        command = self.command
        return name or command.target_name() or command.avx.common_name or command.avx.resource_id

    def failed(self, error: ApiError, name: str | None = None) -> WebhookAnswer:
        emit_event(
            "CertificateRenewalFailed",
            {
                "source": SOURCE,
                "certificateName": self.name_hint(name),
                "reason": error.code,
                "message": error.message,
                "httpStatus": error.status,
                "caller": self.caller,
            },
        )
        return WebhookAnswer(error.status, error.body(self.invocation_id))

    def keep_pending(self, error: ApiError, result: AvxRenewResult | None) -> WebhookAnswer:
        """AVX renewed (or may have): record the work for `complete_pending` and answer 202, or, when even the
        record cannot be kept, the error with the AVX ids so the caller still knows what exists."""
        if self.pending is None:
            return self.failed(error)
        command = self.command
        record = PendingRecord.new(
            datetime.now(UTC),
            reason=error.code,
            storage="merge" if command.storage is Storage.MERGE else "import",
            avx_resource_id=result.resource_id if result else None,
            avx_request_id=result.request_id if result else None,
            requested_resource_id=command.avx.resource_id,
            common_name=command.avx.common_name or (result.certificate_name if result else None),
            serial_number=command.avx.serial_number,
            key_vault_name=command.target_name() if command.storage is Storage.MERGE else command.key_vault_name,
            last_error=error.message[:1000],
            caller=self.caller,
        )
        try:
            self.pending().save(record)
        except StateStoreError as exc:
            log.error("Could not record pending renewal (%s): %s", error.code, exc.message)
            return self.failed(error)
        emit_event(
            "CertificateRenewalPending",
            {
                "source": SOURCE,
                "certificateName": self.name_hint(),
                "pendingId": record.pending_id,
                "reason": error.code,
                "message": error.message,
                "scheduledAt": record.created_at,
                "avxResourceId": record.avx_resource_id,
                "caller": self.caller,
            },
        )
        body = {
            "status": "pending",
            "pendingId": record.pending_id,
            "reason": error.code,
            "message": error.message,
            "avx": result.ids() if result else None,
            "invocationId": self.invocation_id,
        }
        return WebhookAnswer(202, body)


def emit_renewed(stored: StoredCertificate, **ids: str | None) -> None:
    """`CertificateRenewed` for a certificate the AppViewX path stored (at once, or later from a pending record)."""
    emit_event(
        "CertificateRenewed",
        {
            "source": SOURCE,
            "certificateName": stored.name,
            "expiryDate": stored.expires_on,
            "keyVaultCertificateId": stored.id,
            "thumbprint": stored.thumbprint,
            **ids,
        },
    )


def renew(run: RenewalRun) -> WebhookAnswer:
    command, avx, store = run.command, run.avx, run.store
    target = command.target_name()
    try:
        store.ensure_token()
    except IdentityError as exc:
        error = ApiError(502, exc.code, exc.message + "; nothing was renewed.", exc.remediation)
        return run.failed(error, target)
    pending_exists: bool | None = None
    if command.storage is Storage.MERGE and target:
        try:
            pending_exists = store.has_pending_csr(target)
        except KeyVaultError as exc:
            error = ApiError(502, "KEY_VAULT_UNAVAILABLE", exc.message + "; nothing was renewed.", exc.remediation)
            return run.failed(error, target)
    rejection = unstorable(command, pending_exists)
    if rejection is not None:
        return run.failed(rejection, target)

    try:
        result = avx.renew(command.avx, command.auto_approval)
    except AvxError as exc:
        if exc.code == "AVX_TIMEOUT":  # the renewal may have happened: track it, never send it again
            return run.keep_pending(avx_error_answer(exc), None)
        return run.failed(avx_error_answer(exc), target)

    avx_ids = {"avx": result.ids()}
    if not result.certificate_content:
        error = ApiError(
            502,
            "AVX_NO_CERTIFICATE",
            "AppViewX accepted the renewal but returned no certificate (for example, manual approval is pending).",
            "Approve the request in AppViewX, then fetch the certificate; the AVX ids identify it.",
            details=avx_ids,
        )
        return run.keep_pending(error, result)

    try:
        stored = store_result(command, result, store)
    except CertificateParseError as exc:
        error = ApiError(502, "AVX_BAD_RESPONSE", f"AppViewX returned unusable content: {exc}", None, avx_ids)
        return run.failed(error, target)
    except KeyVaultError as exc:
        error = ApiError(
            502,
            "KEY_VAULT_STORE_FAILED",
            f"AppViewX renewed the certificate but it could not be stored: {exc.message}",
            exc.remediation,
            avx_ids,
        )
        return run.keep_pending(error, result)

    emit_renewed(stored, avxResourceId=result.resource_id, avxRequestId=result.request_id, caller=run.caller)
    log.info(
        "Stored renewed certificate %s version %s (AVX resource %s)", stored.name, stored.version, result.resource_id
    )
    return WebhookAnswer(200, {**renewed_answer(stored, result), "invocationId": run.invocation_id})


def _name_for(command: RenewCommand, leaf: x509.Certificate, result: AvxRenewResult) -> str:
    for candidate in (
        command.key_vault_name,
        derive_certificate_name(common_name_of(leaf) or ""),
        derive_certificate_name(result.certificate_name or ""),
        derive_certificate_name(command.avx.common_name or ""),
        derive_certificate_name(f"avx-{result.resource_id or command.avx.resource_id}"),
    ):
        if candidate:
            return candidate
    raise CertificateParseError("no Key Vault name could be derived; give keyVaultCertificateName")


def _decode_key(text: str) -> bytes:
    stripped = text.strip()
    return stripped.encode() if stripped.startswith("-----BEGIN") else b64decode_strict(stripped)


def store_result(command: RenewCommand, result: AvxRenewResult, store: KeyVaultStore) -> StoredCertificate:
    """Put what AVX returned into Key Vault: import PKCS#12 or PEM with its key, or merge into a pending CSR."""
    try:
        content = b64decode_strict(result.certificate_content or "")
    except ValueError:
        raise CertificateParseError("certificateContent is not base64") from None

    if command.storage is Storage.IMPORT_PFX:
        leaf = leaf_of_pfx(content, command.avx.password)
        name = _name_for(command, leaf, result)
        return store.import_pfx(name, content, command.avx.password, _tags(result, leaf))

    certificates = order_leaf_first(parse_certificates(content))
    leaf = certificates[0]
    name = _name_for(command, leaf, result)
    if command.storage is Storage.IMPORT_PEM and result.private_key_content:
        try:
            key = _decode_key(result.private_key_content)
        except ValueError:
            raise CertificateParseError("privateKeyContent is neither PEM nor base64") from None
        bundle = pem_bundle_with_pkcs8_key(certificates, key, command.avx.password)
        return store.import_pem(name, bundle, _tags(result, leaf))
    if command.storage is Storage.IMPORT_PEM and not store.has_pending_csr(name):
        raise KeyVaultError(
            f"AppViewX returned the PEM certificate without its private key, and Key Vault holds no pending "
            f"operation under {name!r} to merge it into",
            remediation="Ask for PFX (the default), or have AppViewX return the key with PEM.",
        )
    return store.merge(name, der_chain(certificates), _tags(result, leaf))


def _tags(result: AvxRenewResult, leaf: x509.Certificate) -> dict[str, str]:
    return clean_tags(certificate_tags(result, format(leaf.serial_number, "X")))
