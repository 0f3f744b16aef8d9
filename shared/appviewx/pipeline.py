"""The AppViewX pipeline: from "AVX renewed (or may have)" to "stored in Key Vault", with a record of every step.

- `renew_and_store` (the webhook): checks that the result can be stored, learns what is being replaced, writes the
  renewal record (`accepted`) *before* AVX is called, asks AVX to renew, and stores the result.
- `store_avx_result` (every path that holds AVX material: the webhook, `complete_pending`, and later the queue and
  Event Grid paths): parse → name → import/merge → tags → record → events.
- `complete_record` / `complete_pending` (the timer): find what AVX renewed for an open record (never renewing
  again), download it and store it through `store_avx_result`; records are claimed with an ETag-conditional lease.

Once AVX may have acted, nothing is lost: any problem leaves the record `pending` (answered 202 with its
`pendingId`); a result Key Vault can never hold ends `failed` with its reason and a coded error naming the AVX ids.
The decisions (which listed certificate is the renewal, serial normalisation) are pure functions.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from shared.appviewx.client import AvxCertificateRecord, AvxClient, AvxRenewResult
from shared.appviewx.records import PendingRecord, PendingStore, RecordTaken, RenewalState
from shared.appviewx.validation import RenewCommand, avx_error_answer, certificate_tags, renewed_answer, unstorable
from shared.azure.keyvault import KeyVaultStore, StoredCertificate, b64decode_strict, clean_tags
from shared.core import redaction
from shared.core.certificates import (
    CertificateParseError,
    Storage,
    UnsupportedKeyType,
    common_name_of,
    der_chain,
    derive_certificate_name,
    generate_password,
    leaf_of_pfx,
    order_leaf_first,
    parse_certificates,
    pem_bundle_with_pkcs8_key,
)
from shared.core.errors import ApiError, AvxError, CertRenewError, IdentityError, KeyVaultError, StateStoreError
from shared.core.events import Event, Source
from shared.core.telemetry import emit_event

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger("certrenew.appviewx")
REVOKED_STATES = ("revoked", "expired", "rejected", "failed", "cancelled", "canceled")
# CAs may backdate a new certificate's notBefore (Let's Encrypt: 1 h); used only when the replaced validity is unknown.
BACKDATE_ALLOWANCE = timedelta(hours=2)
# The longest AVX date text read (ISO 8601 with fractions and zone is ~35); epoch seconds or milliseconds: 1-20 digits.
MAX_AVX_TIME_CHARS = 64
_EPOCH = re.compile(r"[0-9]{1,20}")


# -- pure decisions -------------------------------------------------------------------------------------------------


def normalise_serial(serial: str | None) -> str | None:
    """A serial number compared the same however it is written: case, leading zeros, colons, spaces."""
    if not serial:
        return None
    text = re.sub(r"[\s:\-]", "", serial).upper().lstrip("0")
    return text or "0"


def parse_avx_time(value: str | None) -> datetime | None:
    """AVX dates: ISO 8601 (with or without zone/Z) or epoch milliseconds. None when unreadable."""
    if not value or len(value) > MAX_AVX_TIME_CHARS:  # upstream garbage: never parse a huge text
        return None
    text = value.strip()
    try:
        if _EPOCH.fullmatch(text):  # ASCII digits only: "²".isdigit() is True, int("²") is not
            number = int(text)
            return datetime.fromtimestamp(number / 1000 if number > 10**11 else number, UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):  # beyond year 9999, or the platform's time_t
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _later(candidate: datetime | None, replaced: datetime | None) -> bool:
    return candidate is not None and replaced is not None and candidate > replaced


def known_resources(record: PendingRecord, replaced: AvxCertificateRecord | None) -> frozenset[str]:
    """The AVX resource the renewal is of, as far as known: the id AVX's renew answer named, the requested
    resourceId, the replaced certificate's listing. Empty when none is known (a commonName + serialNumber request
    AVX never answered, whose replaced certificate AVX no longer lists)."""
    ids = (record.avx_resource_id, record.requested_resource_id, replaced.resource_id if replaced else None)
    return frozenset(i for i in ids if i)


def is_renewal_of(
    record: PendingRecord, candidate: AvxCertificateRecord, replaced: AvxCertificateRecord | None
) -> bool:
    """A listed certificate is the renewal only if it is of the record's AVX resource (when known: never a twin, another
    AVX certificate of the same common name), has the record's common name, a serial other than the replaced one's,
    and a validity that starts or ends later than the replaced one's (so older history never qualifies)."""
    if (candidate.status or "").lower() in REVOKED_STATES:
        return False
    resources = known_resources(record, replaced)
    if resources and candidate.resource_id not in resources:
        return False
    serial = normalise_serial(candidate.serial_number)
    if serial is None or serial == normalise_serial(record.serial_number):
        return False
    if record.common_name and (candidate.common_name or "").lower() != record.common_name.lower():
        return False
    starts, ends = parse_avx_time(candidate.valid_from), parse_avx_time(candidate.valid_to)
    replaced_from = parse_avx_time(record.replaced_valid_from or (replaced.valid_from if replaced else None))
    replaced_to = parse_avx_time(record.replaced_valid_to or (replaced.valid_to if replaced else None))
    if replaced_from or replaced_to:
        return _later(starts, replaced_from) or _later(ends, replaced_to)
    # Nothing known of the replaced certificate's validity: only one issued after the request can be its renewal.
    return starts is not None and starts >= record.created_at - BACKDATE_ALLOWANCE


@dataclass(frozen=True)
class RenewalChoice:
    """Which listed certificate is the record's renewal: `found`, or none yet; `ambiguous` names the AVX resources
    that each list a renewal when none of them is known to be the record's (nothing is picked then)."""

    found: AvxCertificateRecord | None
    ambiguous: tuple[str, ...] = ()


def choose_renewal(record: PendingRecord, candidates: list[AvxCertificateRecord]) -> RenewalChoice:
    """The certificate AVX renewed for this record, among the renewals `is_renewal_of` accepts: the one valid
    longest. When the record's AVX resource is unknown and renewals of several resources qualify, none is chosen."""
    replaced_serial = normalise_serial(record.serial_number)
    replaced = next((c for c in candidates if normalise_serial(c.serial_number) == replaced_serial), None)
    if replaced_serial is None and not (record.replaced_valid_from or record.replaced_valid_to):
        return RenewalChoice(None)  # nothing tells the renewal from the certificate it replaces
    renewals = [c for c in candidates if is_renewal_of(record, c, replaced)]
    resources = {c.resource_id or "" for c in renewals}
    if not known_resources(record, replaced) and len(resources) > 1:
        return RenewalChoice(None, tuple(sorted(resources)))
    renewals.sort(key=lambda c: parse_avx_time(c.valid_to) or datetime.min.replace(tzinfo=UTC), reverse=True)
    return RenewalChoice(renewals[0] if renewals else None)


def choose_renewed(record: PendingRecord, candidates: list[AvxCertificateRecord]) -> AvxCertificateRecord | None:
    """The certificate AVX renewed for this record, or None when AVX does not list it (yet) or it is ambiguous."""
    return choose_renewal(record, candidates).found


def current_certificate(listed: list[AvxCertificateRecord], serial: str | None) -> AvxCertificateRecord | None:
    """The certificate a renewal will replace, among AVX's listing of a resource id: the one with the requested
    serial, else the one valid longest (the current one)."""
    wanted = normalise_serial(serial)
    if wanted:
        return next((c for c in listed if normalise_serial(c.serial_number) == wanted), None)
    dated = [c for c in listed if c.serial_number]
    dated.sort(key=lambda c: parse_avx_time(c.valid_to) or datetime.min.replace(tzinfo=UTC), reverse=True)
    return dated[0] if dated else None


def certificate_label(key_vault_name: str | None, common_name: str | None, resource_id: str | None) -> str | None:
    """The one name every AppViewX event of a certificate carries, whatever the outcome: the Key Vault name it is
    (or will be) stored under, derived as `_name_for` derives it, so a failure and a later success line up. Only
    when nothing but AVX's resource id is known (a failure before AVX was searched) is that id the name."""
    return key_vault_name or derive_certificate_name(common_name or "") or resource_id


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


@dataclass(frozen=True)
class Outcome:
    """Where one record ended after a store attempt: renewed, pending (tried again later), or failed."""

    state: RenewalState
    record: PendingRecord
    stored: StoredCertificate | None = None
    code: str | None = None
    message: str | None = None
    remediation: str | None = None


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: dict[str, Any]
    avx_called: bool = False  # True once AVX may have acted: the caller's Idempotency-Key must stay claimed


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
        stored = _store(record, material, pipeline.store)
    except NotStored as problem:
        return settle_not_stored(record, problem, pipeline, max_days=max_days, now=now)
    return settle_renewed(record, stored, material, pipeline, now=now)


def _store(record: PendingRecord, material: AvxMaterial, store: KeyVaultStore) -> StoredCertificate:
    try:
        if material.storage is Storage.IMPORT_PFX:
            leaf = leaf_of_pfx(material.content, material.password)
            name = _name_for(record, leaf, material)
            return store.import_pfx(name, material.content, material.password, _tags(record, material, leaf))
        certificates = order_leaf_first(parse_certificates(material.content))
        leaf = certificates[0]
        name = _name_for(record, leaf, material)
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


def _save(pipeline: Pipeline, record: PendingRecord) -> PendingRecord:
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
    saved = _save(pipeline, record.renewed(stored.id, stored.name, now))
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
    saved = _save(pipeline, updated)
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
            },
        )
    return Outcome(updated.state, saved, None, problem.code, problem.message, problem.remediation)


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


# What an AVX renew error says about the renewal (`avx_renew_outcome`).
AVX_BUSY = "busy"  # AVX provably did not act and may another time: never reached, 429, 503
AVX_REFUSED = "refused"  # AVX provably did not act: its own refusal (4xx, or a 5xx with its appStatusCode)
AVX_OUTCOME_UNKNOWN = "unknown"  # AVX may have renewed (or did): kept pending, never renewed again
# AVX answers that provably came before it acted and are worth another try (the queue retries them). 502 and 504 are
# not: a gateway in front of AVX answers them while AVX may go on and renew.
TRANSIENT_AVX_STATUSES = (429, 503)


def _renewed_not_downloaded(error: AvxError) -> bool:
    """AVX's page: 500 FAILED "Certificate Renew action performed successfully but failed to download": AVX renewed."""
    return error.app_status_code == "FAILED" and "performed successfully" in error.message.lower()


def avx_renew_outcome(error: AvxError) -> str:
    """Whether AVX provably did not act on a renew request that failed (busy or refused), or may have (unknown).
    The one rule of the webhook and the queue: only a provable "did not act" may fail the record, free the caller's
    Idempotency-Key or send the renewal again."""
    status = error.http_status
    if status in TRANSIENT_AVX_STATUSES:
        return AVX_BUSY
    if status is not None and 400 <= status < 500:
        return AVX_REFUSED
    if not error.sent:
        return AVX_BUSY
    if status is not None and status >= 500 and error.app_status_code and not _renewed_not_downloaded(error):
        return AVX_REFUSED
    # No answer (timeout, dropped after sending), an unreadable 2xx, a gateway's 502/504, a 5xx without AVX's own
    # code, or AVX's "renewed but failed to download".
    return AVX_OUTCOME_UNKNOWN


@dataclass
class _Webhook:
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
            },
        )
        return WebhookAnswer(error.status, error.body(self.pipeline.invocation_id), avx_called)

    def pending(self, record: PendingRecord, result: AvxRenewResult | None) -> WebhookAnswer:
        emit_event(
            Event.RENEWAL_PENDING,
            {
                "source": Source.APPVIEWX,
                "certificateName": self.name_hint(record),
                "pendingId": record.pending_id,
                "reason": record.reason,
                "message": record.last_error,
                "scheduledAt": record.created_at,
                "avxResourceId": record.avx_resource_id,
                "caller": self.pipeline.caller,
            },
        )
        body = pending_answer(record, self.pipeline.invocation_id)
        body["avx"] = result.ids() if result else None
        return WebhookAnswer(202, body, avx_called=True)

    def keep_pending(
        self, record: PendingRecord, code: str, message: str, result: AvxRenewResult | None
    ) -> WebhookAnswer:
        outcome = settle_not_stored(record, NotStored(code, message), self.pipeline)
        return self.pending(outcome.record, result)


def pending_answer(record: PendingRecord, invocation_id: str | None) -> dict[str, Any]:
    """The 202 body for a renewal that is not (yet) in Key Vault; also the answer to a repeat of a key whose first
    invocation died after AVX may have acted."""
    avx = {"resourceId": record.avx_resource_id, "requestId": record.avx_request_id, "message": None}
    return {
        "status": "pending" if record.state is not RenewalState.FAILED else "failed",
        "pendingId": record.pending_id,
        "reason": record.reason,
        "message": record.last_error,
        "avx": avx if record.avx_resource_id or record.avx_request_id else None,
        "invocationId": invocation_id,
    }


@dataclass(frozen=True)
class Prepared:
    """What is known before AVX is called: the certificate being replaced (resourceId-only requests)."""

    replaced: AvxCertificateRecord | None = None


def prepare(command: RenewCommand, pipeline: Pipeline) -> Prepared | ApiError:
    """Everything checked before AVX is asked to renew: the Key Vault token, that the result can be stored, and (for
    a resourceId-only request) one AVX search for what is replaced. An ApiError means nothing was renewed; a 5xx one
    is worth retrying, a 4xx one is not."""
    avx, store = pipeline.avx, pipeline.store
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
    rejection = unstorable(command, pending_exists)
    if rejection is not None:
        return rejection
    if command.avx.resource_id and not command.avx.serial_number:
        # One search before the renew: what is replaced (common name, serial, validity), so completion can tell it
        # from its renewal whatever happens next.
        try:
            return Prepared(current_certificate(avx.search(resource_id=command.avx.resource_id), None))
        except AvxError as exc:
            return avx_error_answer(exc)
    return Prepared()


def record_fields(command: RenewCommand, replaced: AvxCertificateRecord | None = None) -> dict[str, Any]:
    """What a renewal record knows of its request (and of the certificate it replaces, once searched)."""
    return {
        "storage": "merge" if command.storage is Storage.MERGE else "import",
        "requested_resource_id": command.avx.resource_id,
        "common_name": command.avx.common_name or (replaced.common_name if replaced else None),
        "serial_number": command.avx.serial_number or (replaced.serial_number if replaced else None),
        "replaced_valid_from": replaced.valid_from if replaced else None,
        "replaced_valid_to": replaced.valid_to if replaced else None,
        "key_vault_name": command.target_name() if command.storage is Storage.MERGE else command.key_vault_name,
    }


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
    hook = _Webhook(command, pipeline)
    prepared = prepare(command, pipeline)
    if isinstance(prepared, ApiError):
        return hook.failed(prepared)
    record = PendingRecord.accepted(
        datetime.now(UTC),
        pipeline.invocation_id or pipeline.owner,
        caller=pipeline.caller,
        idempotency_scope=idempotency_scope,
        **record_fields(command, prepared.replaced),
    )
    record = pipeline.records.create(record)  # StateStoreError: 503, nothing renewed
    if on_record is not None:
        on_record(record.pending_id)
    try:
        result = renew_at_avx(hook, record)
    except AvxDidNotRenew as refused:
        _save(pipeline, record.failed(refused.error.code, refused.error.message, datetime.now(UTC)))
        return hook.failed(avx_error_answer(refused.error), record=record)
    return result if isinstance(result, WebhookAnswer) else store_renew_answer(hook, record, result)


def renew_at_avx(hook: _Webhook, record: PendingRecord) -> AvxRenewResult | WebhookAnswer:
    """Ask AVX to renew for a written record. Raises AvxDidNotRenew when AVX provably did not act (the caller
    decides: fail, or retry); once AVX may have acted, a problem keeps the record pending (a 202 answer)."""
    try:
        return hook.pipeline.avx.renew(hook.command.avx, hook.command.auto_approval)
    except AvxError as exc:
        if avx_renew_outcome(exc) != AVX_OUTCOME_UNKNOWN:
            raise AvxDidNotRenew(exc) from None
        return hook.keep_pending(record, exc.code, exc.message, None)  # may have renewed: never sent again
    except Exception as exc:  # AVX may have acted: keep it, never a bare 500
        log.exception("Unexpected failure calling AppViewX for renewal %s", record.pending_id)
        return hook.keep_pending(record, "AVX_UNKNOWN_OUTCOME", f"unexpected {type(exc).__name__}", None)


def store_renew_answer(hook: _Webhook, record: PendingRecord, result: AvxRenewResult) -> WebhookAnswer:
    """Store what AVX's renew answer carries; after AVX acted nothing may be lost."""
    try:
        return _store_answer(hook, record, result)
    except Exception as exc:
        log.exception("Unexpected failure storing renewal %s", record.pending_id)
        return hook.keep_pending(record, "STORE_UNKNOWN_OUTCOME", f"unexpected {type(exc).__name__}", result)


def _store_answer(hook: _Webhook, record: PendingRecord, result: AvxRenewResult) -> WebhookAnswer:
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
            502,
            outcome.code or "AVX_BAD_RESPONSE",
            outcome.message or "AppViewX's result cannot be stored",
            outcome.remediation,
            details={"avx": result.ids(), "pendingId": record.pending_id},
        )
        return WebhookAnswer(error.status, error.body(hook.pipeline.invocation_id), avx_called=True)
    return hook.pending(outcome.record, result)


# -- completion (the timer; later the queue and Event Grid paths) ---------------------------------------------------


def find_renewed(record: PendingRecord, avx: AvxClient) -> AvxCertificateRecord:
    """The certificate AVX renewed for the record (raises NotReadyYet while AVX does not list it)."""
    common_name = record.common_name
    if not common_name and record.requested_resource_id:  # records written before the pre-renew search existed
        known = current_certificate(avx.search(resource_id=record.requested_resource_id), record.serial_number)
        common_name = known.common_name if known else None
    if not common_name:
        raise NotReadyYet("AppViewX does not list the certificate that was renewed")
    choice = choose_renewal(record, avx.search(common_name=common_name))
    if choice.ambiguous:  # never guess between twins: an operator tells which (or renews by resourceId)
        raise NotStored(
            "AVX_RENEWAL_AMBIGUOUS",
            f"ambiguous: AppViewX lists renewals of {common_name} under several resources "
            f"({', '.join(choice.ambiguous)}) and none is known to be this renewal's; nothing is stored",
            remediation="Check in AppViewX which certificate was renewed; renew by resourceId to avoid this.",
        )
    if choice.found is None:
        raise NotReadyYet(f"AppViewX lists no renewal of {common_name} yet")
    return choice.found


def download_renewed(record: PendingRecord, found: AvxCertificateRecord, avx: AvxClient) -> AvxMaterial:
    """Download what AVX already renewed (nothing is renewed again): PFX with a fresh one-time password, or the
    keyless chain for a merge."""
    ids = {"avx_resource_id": found.resource_id or record.avx_resource_id, "avx_request_id": record.avx_request_id}
    if record.storage == "merge":
        return AvxMaterial(avx.download(found, "CRT", None), Storage.MERGE, avx_name=found.common_name, **ids)
    password = generate_password()  # lives only for this download and import
    redaction.register_secret(password)
    content = avx.download(found, "PFX", password)
    return AvxMaterial(content, Storage.IMPORT_PFX, password, avx_name=found.common_name, **ids)


def complete_record(record: PendingRecord, pipeline: Pipeline, max_days: float, now: datetime | None = None) -> Outcome:
    """One try at a claimed open record: find, download, store; the record is settled either way."""
    now = now or datetime.now(UTC)
    if record.is_queued:  # its queue message was never processed within the hold; AVX was never called
        lost = NotStored(
            "QUEUE_MESSAGE_LOST",
            "The renewal's queue message was never processed; AppViewX was not called and nothing was renewed.",
            permanent=True,
            remediation="Send the renewal again (with a new Idempotency-Key).",
        )
        return settle_not_stored(record, lost, pipeline, now=now)
    try:
        material = download_renewed(record, find_renewed(record, pipeline.avx), pipeline.avx)
    except NotStored as problem:
        return settle_not_stored(record, problem, pipeline, max_days=max_days, now=now)
    except CertRenewError as exc:
        problem = NotStored(exc.code, exc.message)
        return settle_not_stored(record, problem, pipeline, max_days=max_days, now=now)
    return store_avx_result(record, material, pipeline, max_days=max_days, now=now)


@dataclass
class CompletionSummary:
    completed: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # held or changed by another run
    not_due: list[str] = field(default_factory=list)  # open, but waiting out a retry delay, on the queue or a lease


def complete_pending(
    records: PendingStore,
    avx: AvxClient,
    store: KeyVaultStore,
    max_days: float,
    now: datetime | None = None,
    ignore_retry_delay: bool = False,
) -> CompletionSummary:
    """One pass over the open records that are due (`ignore_retry_delay`: also those waiting out a retry delay, for
    an operator who just approved a renewal); the others are counted as not due. Each record is claimed
    (ETag-conditional lease) before any work, so concurrent runs never download or import the same record twice."""
    now = now or datetime.now(UTC)
    pipeline = Pipeline(avx=avx, store=store, records=records)
    due, waiting = records.open_records(now, ignore_retry_delay)
    summary = CompletionSummary(not_due=[r.pending_id for r in waiting])
    for candidate in due:
        record = records.claim(candidate, pipeline.owner, now, ignore_retry_delay)
        if record is None:
            summary.skipped.append(candidate.pending_id)
            continue
        try:
            outcome = complete_record(record, pipeline, max_days, now)
        except Exception as exc:  # one bad record (a bug, garbage upstream) never stops the run: back it off
            log.exception("Unexpected failure completing renewal %s; it is tried again later", record.pending_id)
            problem = NotStored("COMPLETION_UNEXPECTED", f"unexpected {type(exc).__name__} while completing")
            try:
                outcome = settle_not_stored(record, problem, pipeline, max_days=max_days, now=now)
            except Exception:  # its lease expiry hands it on
                log.exception("Renewal %s could not be backed off", record.pending_id)
                summary.retried.append(record.pending_id)
                continue
        if outcome.state is RenewalState.RENEWED:
            summary.completed.append(record.pending_id)
        elif outcome.state is RenewalState.FAILED:
            summary.failed.append(record.pending_id)
        elif outcome.state is RenewalState.PENDING:
            summary.retried.append(record.pending_id)
            log.warning(
                "Pending renewal %s not completed (try %d, next %s): %s",
                record.pending_id,
                outcome.record.attempts,
                outcome.record.next_attempt_at.isoformat(),
                outcome.message,
            )
    return summary


# -- the renewal queue (asynchronous webhook requests) -------------------------------------------------------------

SKIPPED: Literal["skipped"] = "skipped"  # a queue delivery that found nothing to do


class RetryQueued(Exception):
    """A failure that provably came before AVX acted: the record is (back) on the queue and the message is retried
    (the host's backoff, host.json); after the last try the poison handler ends the record with this reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass(frozen=True)
class QueuedOutcome:
    """Where one queue delivery left its record: renewed, pending, failed, or skipped (nothing done)."""

    state: RenewalState | Literal["skipped"]
    pending_id: str
    code: str | None = None
    message: str | None = None


def accept_queued(command: RenewCommand, pipeline: Pipeline, *, idempotency_scope: str | None = None) -> PendingRecord:
    """Write the record of an asynchronous renewal (state accepted, reason QUEUED), before its queue message.
    Raises StateStoreError when it cannot be written (nothing queued, nothing renewed)."""
    record = PendingRecord.queued(
        datetime.now(UTC), caller=pipeline.caller, idempotency_scope=idempotency_scope, **record_fields(command)
    )
    return pipeline.records.create(record)


def _fail_queued(record: PendingRecord, error: ApiError, pipeline: Pipeline) -> QueuedOutcome:
    problem = NotStored(error.code, error.message, permanent=True, remediation=error.remediation)
    outcome = settle_not_stored(record, problem, pipeline)
    return QueuedOutcome(outcome.state, record.pending_id, error.code, error.message)


def _requeue(record: PendingRecord, code: str, message: str, pipeline: Pipeline) -> RetryQueued:
    _save(pipeline, record.requeued(f"{code}: {message}", datetime.now(UTC)))
    log.warning("Queued renewal %s not sent to AppViewX yet (%s); the queue retries it", record.pending_id, code)
    return RetryQueued(code, message)


def renew_queued(pending_id: str, command: RenewCommand, pipeline: Pipeline) -> QueuedOutcome:
    """One delivery of a queued renewal: the same checks, AVX call and Key Vault pipeline as the webhook.

    The record is claimed first (ETag-conditional lease), so a message delivered twice, or to two instances at once,
    renews once; a record no longer queued is never renewed again. Raises RetryQueued (the queue retries) for a
    failure that provably came before AVX acted; StateStoreError when the table is unreachable."""
    records = pipeline.records
    record = records.get(pending_id)
    if record is None:
        log.error("Queued renewal %s has no record; nothing renewed", pending_id)
        return QueuedOutcome(SKIPPED, pending_id, "NOT_FOUND", "no renewal record has this id")
    claimed = records.claim_queued(record, pipeline.owner, datetime.now(UTC))
    if claimed is None and record.is_queued:
        # Still queued but held by another delivery: running, or dead before AVX (its lease runs out in 15 min).
        # Returning would delete the message and lose the renewal: fail, so the host delivers it again later
        # (host.json's retries span more than the lease).
        log.warning("Queued renewal %s is held by another delivery; the queue retries it", pending_id)
        raise RetryQueued("RECORD_HELD", "another delivery holds this queued renewal; retried after its lease")
    if claimed is None:
        log.info(
            "Queued renewal %s is %s (%s) or held by another run; not renewed again",
            pending_id,
            record.state,
            record.reason,
        )
        return QueuedOutcome(SKIPPED, pending_id, record.reason, f"record is {record.state}")
    hook = _Webhook(command, pipeline)
    prepared = prepare(command, pipeline)
    if isinstance(prepared, ApiError):
        if prepared.status >= 500:
            raise _requeue(claimed, prepared.code, prepared.message, pipeline)
        return _fail_queued(claimed, prepared, pipeline)
    try:  # from here AVX may act: an ordinary write-ahead record, completed by the timer if this run dies
        record = records.save(claimed.calling_avx(datetime.now(UTC), **record_fields(command, prepared.replaced)))
    except RecordTaken:
        return QueuedOutcome(SKIPPED, pending_id, "TAKEN", "record changed by another run")
    try:
        result = renew_at_avx(hook, record)
    except AvxDidNotRenew as refused:
        if avx_renew_outcome(refused.error) == AVX_BUSY:
            raise _requeue(record, refused.error.code, refused.error.message, pipeline) from None
        return _fail_queued(record, avx_error_answer(refused.error), pipeline)
    answer = result if isinstance(result, WebhookAnswer) else store_renew_answer(hook, record, result)
    return _answer_outcome(answer, pending_id)


def _answer_outcome(answer: WebhookAnswer, pending_id: str) -> QueuedOutcome:
    if answer.status == 200:
        return QueuedOutcome(RenewalState.RENEWED, pending_id)
    error = answer.body.get("error") if isinstance(answer.body.get("error"), dict) else None
    code = (error or {}).get("code") or answer.body.get("reason")
    message = (error or {}).get("message") or answer.body.get("message")
    return QueuedOutcome(
        RenewalState.PENDING if answer.status == 202 else RenewalState.FAILED, pending_id, code, message
    )


def settle_poisoned(pending_id: str, pipeline: Pipeline, now: datetime | None = None) -> QueuedOutcome:
    """A queue message the host gave up on (maxDequeueCount): its record ends failed with the last reason when AVX
    was never called, or is handed to the timer (pending) when AVX may have acted. Never silently lost."""
    now = now or datetime.now(UTC)
    record = pipeline.records.get(pending_id)
    if record is None:
        log.error("Poison renewal message %s has no record", pending_id)
        return QueuedOutcome(SKIPPED, pending_id, "NOT_FOUND", "no renewal record has this id")
    leased = record.lease_until is not None and record.lease_until > now
    if record.state is not RenewalState.ACCEPTED or leased:
        # settled, or an invocation holds it now (its lease expiry hands it to the timer if it dies)
        return QueuedOutcome(SKIPPED, pending_id, record.reason, f"record is {record.state}")
    message = record.last_error or "the renewal could not be processed"
    if record.is_queued:  # AVX was never called
        problem = NotStored(
            "QUEUE_RETRIES_EXHAUSTED",
            f"Not sent to AppViewX after the queue's last try; nothing was renewed. Last: {message}",
            permanent=True,
            remediation="Fix the cause named here, then send the renewal again (with a new Idempotency-Key).",
        )
        outcome = settle_not_stored(record, problem, pipeline, now=now)
    else:  # AVX may have acted: the timer finds and stores what it renewed, never renewing again
        outcome = settle_not_stored(record, NotStored("QUEUE_RETRIES_EXHAUSTED", message), pipeline, now=now)
    return QueuedOutcome(outcome.state, pending_id, outcome.code, outcome.message)
