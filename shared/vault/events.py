"""The Key Vault event path: a certificate near expiry (or expired) in the app's vault is renewed when the app stored
it from AppViewX, and reported otherwise, so no certificate in the vault expires unnoticed.

`handle_event` runs one Event Grid event (the trigger in renew_timer/keyvault_events.py stays thin):

1. other event types, other vaults, malformed data: logged and dropped (an exception would only make Event Grid
   retry something that can never succeed);
2. once per event id (`kvevent` claim); while another delivery holds the claim unfinished (running, or dead until
   its claim goes stale) the delivery raises RetryLater, so Event Grid redelivers instead of dropping the event;
3. the certificate's current version in Key Vault decides (`event_decisions.decide`): replaced by a newer version
   → nothing; tags `source=appviewx` + `avxResourceId` → renewed through the webhook's pipeline (`renew_and_store`),
   at most once per version (`kvversion` claim tied to the renewal record before AVX is called); a certificate RCL
   manages → `CertificateNearExpiry`/`CertificateExpired` with `owner=rcl` (RCL is not called: its quota and its own
   night handle it); any other → the same event with `owner=unmanaged`, which notifies (shared/notify/).

A failure before anything happened (Key Vault or the tables unreachable, the identity or AVX not reachable before the
renew was sent) releases the claims and raises, so Event Grid redelivers with backoff (then dead-letters).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from shared.appviewx.client import AvxClient, AvxRenewRequest
from shared.appviewx.records import PendingStore
from shared.appviewx.storing import Pipeline
from shared.appviewx.validation import RenewCommand
from shared.appviewx.webhook_renewal import WebhookAnswer, renew_and_store
from shared.azure.keyvault import KeyVaultStore
from shared.core import redaction
from shared.core.certificates import DEFAULT_FORMAT, generate_password
from shared.core.errors import CertRenewError
from shared.core.events import Event, Source
from shared.core.telemetry import emit_event
from shared.vault.event_claims import (
    EVENT_PARTITION,
    VERSION_PARTITION,
    Claim,
    ClaimOutcome,
    EventClaims,
    event_key,
    version_key,
)
from shared.vault.event_decisions import (
    HANDLED_TYPES,
    Action,
    CertificateEvent,
    Decision,
    Malformed,
    Owner,
    decide,
    is_our_vault,
    parse_event,
    rcl_names,
    whole_days_left,
)
from shared.vault.ladder import warn_version
from shared.vault.renewal_failures import RenewalFailureStore
from shared.vault.renewal_plan import EXPIRED_STEP, ladder_step
from shared.vault.version_retry import backoff_passed, failures_of, report_expired, settle_failed_record

log = logging.getLogger("certrenew.keyvault-events")
CALLER = "keyvault-events"  # the renewal record's caller: this path, not a person
ALREADY_CLAIMED = "renewal already claimed"


class RetryLater(Exception):
    """Nothing happened, and it may work later: the trigger fails so Event Grid redelivers the event."""


@dataclass
class EventDependencies:
    """What the event path works with; made lazily by the trigger (AVX only when a renewal is due)."""

    vault_url: str
    store: KeyVaultStore
    claims: EventClaims
    records: Any  # () -> PendingStore
    avx: Any  # () -> AvxClient
    rcl_certificate_names: Any  # () -> Iterable[str]: the names in RCL's renewal records
    failures: RenewalFailureStore | None = None  # the certificates' renewal backoff (the sweep reads it)


def handle_event(
    event_id: str,
    event_type: str,
    data: object,
    deps: EventDependencies,
    invocation_id: str | None = None,
    now: datetime | None = None,
) -> str:
    """Handle one event; returns what happened (for the log line and the tests)."""
    now = now or datetime.now(UTC)
    if event_type not in HANDLED_TYPES:
        log.info(
            "Key Vault event %s of type %s ignored: only near-expiry and expired are handled", event_id, event_type
        )
        return "ignored: event type"
    try:
        event = parse_event(event_id, event_type, data)
    except Malformed as problem:
        log.warning("Key Vault event %s (%s) dropped: %s", event_id, event_type, problem)
        return "ignored: malformed"
    if not is_our_vault(event, deps.vault_url):
        log.info(
            "Key Vault event %s for vault %s ignored: the app's vault is KEY_VAULT_URL %s",
            event_id,
            event.vault_name,
            deps.vault_url,
        )
        return "ignored: other vault"

    claim = deps.claims.claim(EVENT_PARTITION, event_key(event_id), {"certificate": event.name}, now)
    if claim.outcome is ClaimOutcome.DONE:
        log.info("Key Vault event %s for %s already handled (%s)", event_id, event.name, claim.result)
        return "ignored: duplicate event"
    if claim.outcome is not ClaimOutcome.NEW:
        # Another delivery holds it and is not done: still running, or its process died (its claim is taken over
        # once stale). Succeeding here would end Event Grid's retries and lose the event if that delivery died.
        raise RetryLater(f"Key Vault event {event_id} for {event.name} is being handled by another delivery")
    try:
        result = _handle(event, deps, invocation_id, now)
    except BaseException:
        deps.claims.release(EVENT_PARTITION, event_key(event_id))
        raise
    deps.claims.finish(EVENT_PARTITION, event_key(event_id), result)
    return result


def _handle(event: CertificateEvent, deps: EventDependencies, invocation_id: str | None, now: datetime) -> str:
    try:
        current = deps.store.current(event.name)
    except CertRenewError as exc:
        raise RetryLater(f"Key Vault could not be read: {exc.message}") from None
    rcl_managed = rcl_names(deps.rcl_certificate_names()) if current is not None else set()
    decision = decide(event, current, rcl_managed)
    days = whole_days_left((current.expires_on if current else None) or event.expires_on, now)
    base = {
        "source": Source.KEYVAULT,
        "certificateName": event.name,
        "keyVaultVersion": decision.version or event.version,
        "expiryDate": (current.expires_on if current else None) or event.expires_on,
        "daysLeft": days,
        "eventId": event.event_id,
    }
    if decision.action is Action.GONE:
        log.info(
            "Key Vault event %s: certificate %s is no longer in the vault; nothing to do", event.event_id, event.name
        )
        return "gone"
    if decision.action is Action.REPLACED:
        log.info(
            "Key Vault event %s: %s version %s was replaced by version %s (expires %s); nothing to do",
            event.event_id,
            event.name,
            event.version,
            decision.version,
            current.expires_on if current else None,
        )
        return "replaced"
    if decision.action is Action.REPORT_RCL:
        _report(event, {**base, "source": Source.RCL, "owner": Owner.RCL}, deps, now)
        log.info(
            "Key Vault event %s: %s is renewed by RCL's own night; reported, RCL not called", event.event_id, event.name
        )
        return "reported: rcl"
    if decision.action is Action.REPORT_UNMANAGED:
        _report(event, {**base, "owner": Owner.UNMANAGED}, deps, now)
        return "reported: unmanaged"
    return _renew(event, decision, deps, invocation_id, now)


def _report(event: CertificateEvent, attributes: dict[str, Any], deps: EventDependencies, now: datetime) -> None:
    """Report a certificate the app does not renew itself, as a step of the expiry ladder: the daily sweep and this
    event share one warning per version and step."""
    step = EXPIRED_STEP if event.app_event is Event.EXPIRED else ladder_step(attributes.get("expiryDate"), now)
    if step is None:  # more than 30 days left by Key Vault's current expiry: report as Key Vault said
        emit_event(event.app_event, attributes)
    elif not warn_version(deps.claims, deps.vault_url, step, attributes, now):
        log.info("Key Vault event %s: %s was warned at this step already", event.event_id, event.name)


def _renew(
    event: CertificateEvent, decision: Decision, deps: EventDependencies, invocation_id: str | None, now: datetime
) -> str:
    renewal = VersionRenewal(
        name=event.name,
        version=decision.version or event.version,
        avx_resource_id=decision.avx_resource_id,
        caller=f"{CALLER} {event.event_id}",
        label=f"Key Vault event {event.event_id}",
        detail={"eventId": event.event_id},
    )
    if event.app_event is not Event.EXPIRED:
        return renew_version(renewal, deps, invocation_id, now)
    # Still the current version when it expired: its renewal did not land. Reported whatever this delivery does,
    # with the last failure's reason (read before a retry that may reset it, or after one that counted it).
    before = failures_of(deps.failures, event.name)
    try:
        return renew_version(renewal, deps, invocation_id, now)
    finally:
        known = before or failures_of(deps.failures, event.name)
        report_expired(
            event.name, renewal.version, event.expires_on, event.event_id, renewal.avx_resource_id, known, now
        )


@dataclass(frozen=True)
class VersionRenewal:
    """A renewal of one Key Vault certificate version through AppViewX, by whichever path asks for it (a Key Vault
    event, the daily sweep, an operator): all of them share the version's claim, so each version renews once."""

    name: str
    version: str
    avx_resource_id: str | None
    caller: str  # the renewal record's caller: the path (and event), never a person
    label: str  # for log lines: "Key Vault event <id>", "renewal sweep"
    detail: dict[str, str] = field(default_factory=dict)
    retry_refused: bool = False  # a version AppViewX refused to renew (nothing renewed) may be tried again


def renew_version(renewal: VersionRenewal, deps: EventDependencies, invocation_id: str | None, now: datetime) -> str:
    """Renew `renewal`'s version once across paths, deliveries and instances; returns what happened. Raises
    RetryLater when nothing was renewed and another attempt may work (another run holds the version, or AVX, Key
    Vault or the identity could not be reached before the renew was sent)."""
    key = version_key(urlsplit(deps.vault_url).netloc, renewal.name, renewal.version)
    claim = _claim_version(renewal, key, deps, now)
    if claim.outcome is ClaimOutcome.HELD and not claim.pending_id:
        # Held by a run that has not reached AVX yet (or died before): nothing is renewed yet, so Event Grid must
        # redeliver; a claim tied to a renewal record is owned by that record (complete_pending), never renewed again.
        raise RetryLater(f"{renewal.name} version {renewal.version} is being renewed by another delivery")
    if claim.outcome is not ClaimOutcome.NEW:
        log.info(
            "%s: %s version %s is renewed (or being renewed) already%s; not renewed again",
            renewal.label,
            renewal.name,
            renewal.version,
            f" (renewal record {claim.pending_id})" if claim.pending_id else "",
        )
        return ALREADY_CLAIMED
    answer = _renew_claimed(renewal, key, deps, invocation_id)
    body = answer.body
    refused = answer.status >= 400 and not answer.avx_called
    if answer.status >= 500 and not answer.avx_called:
        code = (body.get("error") or {}).get("code")
        _note_failure(deps, renewal.name, str(code), now)
        raise RetryLater(f"{renewal.name} was not renewed ({code}); it will be tried again")
    result = _result(answer)
    deps.claims.finish(VERSION_PARTITION, key, result, retryable=refused)
    _note_outcome(deps, renewal.name, answer, now)
    log.info("%s: %s version %s -> %s", renewal.label, renewal.name, renewal.version, result)
    return result


def _claim_version(renewal: VersionRenewal, key: str, deps: EventDependencies, now: datetime) -> Claim:
    detail = {"certificate": renewal.name, **renewal.detail}
    claim = deps.claims.claim(VERSION_PARTITION, key, detail, now)
    if settle_failed_record(claim, key, renewal.name, deps.claims, deps.records, deps.failures):
        claim = deps.claims.claim(VERSION_PARTITION, key, detail, now)  # its renewal record ended failed
    if claim.outcome is ClaimOutcome.DONE and claim.retryable and _may_retry(renewal, deps, now):
        # AppViewX refused the last renewal of this version (nothing renewed): the caller waited out its backoff,
        # or (a Key Vault event) the certificate's backoff has passed.
        deps.claims.release(VERSION_PARTITION, key)
        claim = deps.claims.claim(VERSION_PARTITION, key, detail, now)
    return claim


def _may_retry(renewal: VersionRenewal, deps: EventDependencies, now: datetime) -> bool:
    if renewal.retry_refused:
        return True
    return deps.failures is not None and backoff_passed(failures_of(deps.failures, renewal.name), now)


def _renew_claimed(
    renewal: VersionRenewal, key: str, deps: EventDependencies, invocation_id: str | None
) -> WebhookAnswer:
    answer: WebhookAnswer | None = None
    try:
        records: PendingStore = deps.records()
        avx: AvxClient = deps.avx()
        pipeline = Pipeline(
            avx=avx, store=deps.store, records=records, invocation_id=invocation_id, caller=renewal.caller
        )
        answer = renew_and_store(
            _renew_command(renewal),
            pipeline,
            on_record=lambda pending_id: deps.claims.attach(VERSION_PARTITION, key, pending_id),
        )
    finally:
        if answer is None or (answer.status >= 500 and not answer.avx_called):
            deps.claims.release(VERSION_PARTITION, key)  # nothing was renewed: a redelivery may try again
    return answer


def _note_failure(deps: EventDependencies, name: str, reason: str, now: datetime) -> None:
    if deps.failures is None:
        return
    try:
        deps.failures.failed(name, reason, now)
    except CertRenewError as exc:  # the renewal's own outcome stands; only its backoff is shorter
        log.warning("The renewal backoff of %s could not be recorded: %s", name, exc.message)


def _note_outcome(deps: EventDependencies, name: str, answer: WebhookAnswer, now: datetime) -> None:
    """The certificate's backoff: a success resets it, a failure extends it (a pending renewal changes nothing)."""
    if deps.failures is None:
        return
    if answer.status == 200:
        deps.failures.succeeded(name)  # never raises: a lost reset only delays the next renewal by its backoff
    elif answer.status >= 400:
        _note_failure(deps, name, str((answer.body.get("error") or {}).get("code")), now)


def _renew_command(renewal: VersionRenewal) -> RenewCommand:
    """Renew the AVX certificate named in the tags as a new version of the same Key Vault certificate (PFX with a
    one-time password that never shows in logs or telemetry)."""
    password = generate_password()
    redaction.register_secret(password)
    return RenewCommand(
        avx=AvxRenewRequest(
            resource_id=renewal.avx_resource_id,
            common_name=None,
            serial_number=None,
            format=DEFAULT_FORMAT,
            password=password,
            workflow_type=None,
        ),
        key_vault_name=renewal.name,
        auto_approval=None,
    )


def _result(answer: WebhookAnswer) -> str:
    if answer.status == 200:
        return "renewed"
    if answer.status == 202:
        return f"pending {answer.body.get('pendingId')}"
    error = answer.body.get("error") or {}
    return f"failed {error.get('code')}"
