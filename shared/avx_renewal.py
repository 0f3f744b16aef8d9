"""The AppViewX renewal: validate, check the result can be stored, ask AVX, store in Key Vault, answer.

The steps' decisions live in `shared.webhook` and `shared.certificates`; this module only sequences the I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cryptography import x509

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
from shared.errors import ApiError, AvxError, IdentityError, KeyVaultError
from shared.keyvault import KeyVaultStore, StoredCertificate, b64decode_strict, clean_tags
from shared.telemetry import emit_event
from shared.webhook import RenewCommand, avx_error_answer, certificate_tags, renewed_answer, unstorable

log = logging.getLogger("certrenew.appviewx")
SOURCE = "appviewx"


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: dict[str, Any]


def _failed(error: ApiError, command: RenewCommand, name: str | None, invocation_id: str | None) -> WebhookAnswer:
    emit_event(
        "CertificateRenewalFailed",
        {
            "source": SOURCE,
            "certificateName": name or command.target_name() or command.avx.common_name or command.avx.resource_id,
            "reason": error.code,
            "message": error.message,
            "httpStatus": error.status,
        },
    )
    return WebhookAnswer(error.status, error.body(invocation_id))


def renew(
    command: RenewCommand, avx: AvxClient, store: KeyVaultStore, invocation_id: str | None = None
) -> WebhookAnswer:
    target = command.target_name()
    try:
        store.ensure_token()
    except IdentityError as exc:
        error = ApiError(502, exc.code, exc.message + "; nothing was renewed.", exc.remediation)
        return _failed(error, command, target, invocation_id)
    pending_exists: bool | None = None
    if command.storage is Storage.MERGE and target:
        try:
            pending_exists = store.has_pending_csr(target)
        except KeyVaultError as exc:
            error = ApiError(502, "KEY_VAULT_UNAVAILABLE", exc.message + "; nothing was renewed.", exc.remediation)
            return _failed(error, command, target, invocation_id)
    rejection = unstorable(command, pending_exists)
    if rejection is not None:
        return _failed(rejection, command, target, invocation_id)

    try:
        result = avx.renew(command.avx, command.auto_approval)
    except AvxError as exc:
        return _failed(avx_error_answer(exc), command, target, invocation_id)

    avx_ids = {"avx": result.ids()}
    if not result.certificate_content:
        error = ApiError(
            502,
            "AVX_NO_CERTIFICATE",
            "AppViewX accepted the renewal but returned no certificate (for example, manual approval is pending).",
            "Approve the request in AppViewX, then fetch the certificate; the AVX ids identify it.",
            details=avx_ids,
        )
        return _failed(error, command, target, invocation_id)

    try:
        stored = store_result(command, result, store)
    except CertificateParseError as exc:
        error = ApiError(502, "AVX_BAD_RESPONSE", f"AppViewX returned unusable content: {exc}", None, avx_ids)
        return _failed(error, command, target, invocation_id)
    except KeyVaultError as exc:
        error = ApiError(
            502,
            "KEY_VAULT_STORE_FAILED",
            f"AppViewX renewed the certificate but it could not be stored: {exc.message}",
            exc.remediation,
            avx_ids,
        )
        return _failed(error, command, target, invocation_id)

    emit_event(
        "CertificateRenewed",
        {
            "source": SOURCE,
            "certificateName": stored.name,
            "expiryDate": stored.expires_on,
            "keyVaultCertificateId": stored.id,
            "thumbprint": stored.thumbprint,
            "avxResourceId": result.resource_id,
            "avxRequestId": result.request_id,
        },
    )
    log.info("Stored renewed certificate %s version %s (AVX resource %s)", stored.name, stored.version, result.resource_id)
    return WebhookAnswer(200, {**renewed_answer(stored, result), "invocationId": invocation_id})


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
