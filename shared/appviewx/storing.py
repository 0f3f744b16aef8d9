"""Storing AppViewX material in Key Vault (every path that holds it: the webhook, completion, the queue, Key Vault
events): parse -> name -> import/merge -> tags -> record -> events. What the stages run against (`Pipeline`), and how
a record is settled (`settle_renewed`, `settle_not_stored`): pending (tried again later) or failed for good."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shared.appviewx.client import AvxClient, AvxRenewResult
from shared.appviewx.ownership import adopted, csr_mismatch, may_write, not_owned
from shared.appviewx.records import PendingRecord, PendingStore, RecordTaken, RenewalState
from shared.appviewx.renewal_rules import certificate_label
from shared.appviewx.validation import certificate_tags
from shared.azure.keyvault import KeyVaultStore, StoredCertificate, clean_tags
from shared.core.certificates import (
    CertificateParseError,
    Storage,
    UnsupportedKeyType,
    common_name_of,
    der_chain,
    derive_certificate_name,
    order_leaf_first,
    parse_certificates,
    pem_bundle_with_pkcs8_key,
)
from shared.core.errors import KeyVaultError, StateStoreError
from shared.core.events import Event, Source
from shared.core.pfx import leaf_of_pfx
from shared.core.telemetry import emit_event

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger("certrenew.appviewx")

# -- what the pipeline works with -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AvxMaterial:
    """Certificate material as AVX delivered it (a renew answer's content, or a download), ready to be stored."""

    content: bytes = field(repr=False)  # PKCS#12, PEM, DER or PKCS#7 bytes
    storage: Storage  # IMPORT_PFX, IMPORT_PEM (key in `private_key`) or MERGE
    password: str | None = field(default=None, repr=False)  # of the PKCS#12 (or of the PEM key)
    private_key: bytes | None = field(default=None, repr=False)  # PEM/DER key AVX returned beside a PEM certificate
    avx_name: str | None = None  # AVX's certificateName
    avx_resource_id: str | None = None  # of the certificate this material is (renewed id, or the listed one)
    avx_request_id: str | None = None


@dataclass(frozen=True)
class Pipeline:
    """What the pipeline runs against, and who it runs for."""

    avx: AvxClient
    store: KeyVaultStore
    records: PendingStore
    invocation_id: str | None = None
    caller: str | None = None
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)  # lease owner of this run
    # Current versions read before AVX was called (the ownership check), by (vault URL, name): the store reuses the
    # read once instead of asking Key Vault again.
    targets: dict[tuple[str, str], StoredCertificate | None] = field(default_factory=dict, compare=False, repr=False)
    # The pooled store of another listed vault, by URL (None: only `store`, the default vault, is known here).
    stores: Callable[[str], KeyVaultStore] | None = None

    @property
    def vault_name(self) -> str | None:
        """The name of the vault this pipeline writes to (every event it emits carries it)."""
        vault = getattr(self.store, "vault", None)
        return getattr(vault, "name", None)

    def for_vault(self, vault_url: str | None) -> Pipeline:
        """This pipeline writing to `vault_url` (a listed vault's URL; None: the vault of `store`)."""
        if vault_url is None or self.stores is None or vault_url == self.store.vault_url:
            return self
        return replace(self, store=self.stores(vault_url))


@dataclass(frozen=True)
class Outcome:
    """Where one record ended after a store attempt: renewed, pending (tried again later), or failed."""

    state: RenewalState
    record: PendingRecord
    stored: StoredCertificate | None = None
    code: str | None = None
    message: str | None = None
    remediation: str | None = None


class NotStored(Exception):
    """Why material could not be stored now (`permanent`: never, e.g. a key type Key Vault refuses)."""

    def __init__(self, code: str, message: str, *, permanent: bool = False, remediation: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.permanent, self.remediation = code, message, permanent, remediation


class NotReadyYet(NotStored):
    """AVX does not list the renewed certificate yet (approval pending, CA still issuing)."""

    def __init__(self, message: str) -> None:
        super().__init__("NOT_READY", message)


# -- store: parse -> name -> import/merge -> tags -> record -> events ------------------------------------------------


def store_avx_result(
    record: PendingRecord,
    material: AvxMaterial,
    pipeline: Pipeline,
    *,
    max_days: float | None = None,
    now: datetime | None = None,
) -> Outcome:
    """Store AVX material for `record` in Key Vault and settle the record. Never raises for content or Key Vault
    problems: those leave the record pending (first try when `max_days` is None, else a backed-off retry that gives
    up after `max_days`) or, when storing is impossible for good, failed."""
    try:
        # A retry (completion) first looks whether an earlier run already stored this very certificate and died, or
        # could not save the record, before settling it: then the record is settled without a second import.
        stored = _store(record, material, pipeline, check_current=max_days is not None)
    except NotStored as problem:
        return settle_not_stored(record, problem, pipeline, max_days=max_days, now=now)
    return settle_renewed(record, stored, material, pipeline, now=now)


def _store(
    record: PendingRecord, material: AvxMaterial, pipeline: Pipeline, *, check_current: bool = False
) -> StoredCertificate:
    store = pipeline.store
    try:
        if material.storage is Storage.IMPORT_PFX:
            leaf = leaf_of_pfx(material.content, material.password)
            name = _name_for(record, leaf, material)
            if check_current and (already := already_current(store, name, leaf)):
                return already
            _check_target(name, leaf, pipeline, merge=False)
            return store.import_pfx(name, material.content, material.password, _tags(record, material, leaf))
        certificates = order_leaf_first(parse_certificates(material.content))
        leaf = certificates[0]
        name = _name_for(record, leaf, material)
        if check_current and (already := already_current(store, name, leaf)):
            return already
        _check_target(name, leaf, pipeline, merge=not (material.storage is Storage.IMPORT_PEM and material.private_key))
        if material.storage is Storage.IMPORT_PEM and material.private_key:
            bundle = pem_bundle_with_pkcs8_key(certificates, material.private_key, material.password)
            return store.import_pem(name, bundle, _tags(record, material, leaf))
        if material.storage is Storage.IMPORT_PEM and not store.has_pending_csr(name):
            raise NotStored(
                "KEY_VAULT_STORE_FAILED",
                f"AppViewX returned the PEM certificate without its private key, and Key Vault holds no pending "
                f"operation under {name!r} to merge it into",
                remediation="Ask for PFX (the default), or have AppViewX return the key with PEM.",
            )
        return store.merge(name, der_chain(certificates), _tags(record, material, leaf))
    except UnsupportedKeyType as exc:
        raise NotStored(
            "UNSUPPORTED_KEY_TYPE",
            f"AppViewX renewed the certificate, but {exc}",
            permanent=True,
            remediation="Renew with an RSA (2048+) or EC P-256/P-384/P-521 key in AppViewX; the AVX ids name the "
            "renewed certificate.",
        ) from None
    except CertificateParseError as exc:
        raise NotStored("AVX_BAD_RESPONSE", f"AppViewX returned unusable content: {exc}") from None
    except KeyVaultError as exc:
        raise NotStored(
            "KEY_VAULT_STORE_FAILED",
            f"AppViewX renewed the certificate but it could not be stored: {exc.message}",
            remediation=exc.remediation,
        ) from None


def _check_target(name: str, leaf: x509.Certificate, pipeline: Pipeline, *, merge: bool) -> None:
    """Raise NotStored (TARGET_NOT_OWNED, for good) unless a new version of `leaf` may be written to `name`
    (`shared.appviewx.ownership`); a merge goes only into a pending CSR of the leaf's common name."""
    common_name = common_name_of(leaf)
    if merge:
        csr_common_name = pipeline.store.pending_csr_common_name(name)
        problem = csr_mismatch(name, csr_common_name, common_name) if csr_common_name is not None else None
    elif adopted(name, pipeline.caller, pipeline.store.adoptable):
        return
    else:
        key = (pipeline.store.vault_url, name)
        current = pipeline.targets.pop(key) if key in pipeline.targets else pipeline.store.current(name)
        allowed = may_write(current, common_name)
        problem = None if allowed or current is None else not_owned(name, current, common_name, before_avx=False)
    if problem is not None:
        raise NotStored(problem.code, problem.message, permanent=True, remediation=problem.remediation)


def already_current(store: KeyVaultStore, name: str, leaf: x509.Certificate) -> StoredCertificate | None:
    """Key Vault's current version of `name` when it already is `leaf` (same SHA-1 thumbprint; the serialNumber tag
    when Key Vault gives no thumbprint), else None. Raises KeyVaultError when Key Vault cannot be read."""
    current = store.current(name)
    if current is None:
        return None
    if current.thumbprint:
        return current if current.thumbprint == leaf_thumbprint(leaf) else None
    return current if current.tags.get("serialNumber") == format(leaf.serial_number, "X") else None


def leaf_thumbprint(leaf: x509.Certificate) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return hashlib.sha1(leaf.public_bytes(Encoding.DER), usedforsecurity=False).hexdigest().upper()


def _name_for(record: PendingRecord, leaf: x509.Certificate, material: AvxMaterial) -> str:
    for candidate in (
        record.key_vault_name,
        derive_certificate_name(common_name_of(leaf) or ""),
        derive_certificate_name(material.avx_name or ""),
        derive_certificate_name(record.common_name or ""),
        derive_certificate_name(f"avx-{material.avx_resource_id or record.requested_resource_id or ''}"),
    ):
        if candidate:
            return candidate
    raise CertificateParseError("no Key Vault name could be derived; give keyVaultCertificateName")


def _tags(record: PendingRecord, material: AvxMaterial, leaf: x509.Certificate) -> dict[str, str]:
    result = AvxRenewResult(
        resource_id=material.avx_resource_id or record.avx_resource_id,
        request_id=material.avx_request_id or record.avx_request_id,
        message=None,
        certificate_name=None,
        certificate_content=None,
        private_key_content=None,
    )
    return clean_tags(certificate_tags(result, format(leaf.serial_number, "X")))


def save_settled(pipeline: Pipeline, record: PendingRecord) -> PendingRecord:
    """Save the settled record; a lost race or an unreachable table is logged, never raised (the outcome stands)."""
    try:
        return pipeline.records.save(record)
    except RecordTaken:
        log.warning("Renewal record %s was changed by another run meanwhile; not overwritten", record.pending_id)
    except StateStoreError as exc:
        log.error("Renewal record %s could not be saved (%s); its lease expiry hands it on", record.pending_id, exc)
    return record


def settle_renewed(
    record: PendingRecord,
    stored: StoredCertificate,
    material: AvxMaterial,
    pipeline: Pipeline,
    *,
    now: datetime | None = None,
) -> Outcome:
    now = now or datetime.now(UTC)
    # The record names the AVX record that now holds the certificate (each AVX renewal is a new record).
    holder = replace(record, avx_resource_id=material.avx_resource_id or record.avx_resource_id)
    saved = save_settled(pipeline, holder.renewed(stored.id, stored.name, now))
    emit_event(
        Event.RENEWED,
        {
            "source": Source.APPVIEWX,
            "certificateName": stored.name,
            "expiryDate": stored.expires_on,
            "keyVaultCertificateId": stored.id,
            "thumbprint": stored.thumbprint,
            "avxResourceId": material.avx_resource_id or record.avx_resource_id,
            "avxRequestId": material.avx_request_id or record.avx_request_id,
            "pendingId": record.pending_id,
            "caller": pipeline.caller,
            "vault": pipeline.vault_name,
        },
    )
    log.info("Stored renewed certificate %s version %s (renewal %s)", stored.name, stored.version, record.pending_id)
    return Outcome(RenewalState.RENEWED, saved, stored)


def settle_not_stored(
    record: PendingRecord,
    problem: NotStored,
    pipeline: Pipeline,
    *,
    max_days: float | None = None,
    now: datetime | None = None,
) -> Outcome:
    """Pending (or, for a retry past `max_days`, given up), or failed for good when `problem.permanent`."""
    now = now or datetime.now(UTC)
    if problem.permanent:
        updated = record.failed(problem.code, problem.message, now)
    elif max_days is None:
        updated = record.pending(problem.code, problem.message, now)
    else:
        updated = record.failed_try(f"{problem.code}: {problem.message}", now, max_days)
    saved = save_settled(pipeline, updated)
    if updated.state is RenewalState.FAILED:
        gave_up = not problem.permanent
        message = (
            f"Not stored after {updated.attempts} tries over {max_days:g} days; last: {problem.message}"
            if gave_up and max_days is not None
            else problem.message
        )
        emit_event(
            Event.RENEWAL_FAILED,
            {
                "source": Source.APPVIEWX,
                "certificateName": certificate_label(
                    record.key_vault_name, record.common_name, record.requested_resource_id or record.avx_resource_id
                ),
                "pendingId": record.pending_id,
                "reason": updated.reason,
                "message": message,
                "avxResourceId": record.avx_resource_id,
                "caller": pipeline.caller,
                "vault": pipeline.vault_name,
            },
        )
    return Outcome(updated.state, saved, None, problem.code, problem.message, problem.remediation)
