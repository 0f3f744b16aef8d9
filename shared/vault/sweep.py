"""The daily renewal sweep (`plan_renewals`): every certificate of the vault renews on time without Event Grid, and
nothing expires unheard.

For each certificate's current version the plan (`renewal_plan.plan_certificate`) decides: due and stored from
AppViewX → renewed through the webhook's pipeline (`events.renew_version`, which shares the version's claim with the
Key Vault event path, so a sweep and an event for the same version renew once); due and RCL's → left to RCL's night;
nobody's → reported. Whatever is not renewed earns the expiry ladder (`ladder.warn_once`): one warning per version at
30, 14, 7, 3 and 1 days left, then expired. At most `RENEWAL_SWEEP_MAX_RENEWALS` renewals a run, the most urgent
first; the rest wait for the next run (`RenewalSweepDeferred` says so).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.azure.keyvault import LIST_PAGE_MAX, ForeignLink, ListedCertificate
from shared.core.errors import CertRenewError, KeyVaultError
from shared.core.events import Event, Source
from shared.core.telemetry import emit_event
from shared.vault.event_decisions import owner_of, rcl_names
from shared.vault.events import ALREADY_CLAIMED, EventDependencies, RetryLater, VersionRenewal, renew_version
from shared.vault.ladder import warn_once
from shared.vault.renewal_plan import (
    CertificateFacts,
    PlanAction,
    PlannedCertificate,
    RenewalFailures,
    RenewalWindow,
    plan_certificate,
)

log = logging.getLogger("certrenew.sweep")
SWEEP_CALLER = "renewal-sweep"
OPERATOR_CALLER = "operator"
REPLACED = "already renewed: a newer version is current"
MAX_CERTIFICATES = 10_000  # a bound on one run's listing (400 pages of Key Vault's 25)
# Key Vault may answer pages with no certificates and a nextLink: the listing is bounded in pages too.
MAX_LIST_PAGES = 2 * MAX_CERTIFICATES // LIST_PAGE_MAX


@dataclass(frozen=True)
class SweepDependencies:
    events: EventDependencies  # the vault, its claims, the records, AVX, RCL's names, the backoff rows
    window: RenewalWindow
    max_renewals: int
    # No renewal starts after this many seconds of the run: each may wait on AVX for AVX_TIMEOUT_SECONDS, and the
    # function is stopped at host.json's functionTimeout (10 minutes); the rest is deferred to the next sweep.
    time_budget_seconds: float = 300.0


@dataclass(frozen=True)
class VaultPlan:
    certificates: list[PlannedCertificate]
    truncated: bool  # the vault lists more than MAX_CERTIFICATES: the rest is planned by no run


@dataclass
class SweepSummary:
    listed: int = 0
    renewed: int = 0
    pending: int = 0
    failed: int = 0
    already: int = 0  # renewed or being renewed by another path (an event, a pending record)
    in_backoff: int = 0
    deferred: int = 0
    warnings: int = 0
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"Renewal sweep: {self.listed} certificate(s); renewed {self.renewed}, pending {self.pending}, failed "
            f"{self.failed}, already claimed {self.already}, in backoff {self.in_backoff}, deferred {self.deferred}; "
            f"{self.warnings} expiry warning(s)"
        )


def list_certificates(deps: EventDependencies) -> tuple[list[ListedCertificate], bool]:
    """Every certificate of the vault through Key Vault's own paging (KeyVaultError when it cannot be listed)."""
    found: list[ListedCertificate] = []
    links: set[str] = set()
    page = deps.store.list_page(LIST_PAGE_MAX)
    for _ in range(MAX_LIST_PAGES):
        found.extend(page.certificates)
        if len(found) >= MAX_CERTIFICATES:
            return found[:MAX_CERTIFICATES], True
        if not page.next_link:
            return found, False
        if page.next_link in links:  # a page chain that loops: what was listed is planned, the cut reported
            log.warning("Key Vault's certificate list sent the same nextLink again; listing stopped")
            return found, True
        links.add(page.next_link)
        try:
            page = deps.store.list_page(LIST_PAGE_MAX, page.next_link)
        except ForeignLink:  # the app's token never follows it
            raise KeyVaultError(
                "Key Vault's certificate list sent a nextLink outside the vault; the listing stopped",
                code="KEY_VAULT_UNAVAILABLE",
            ) from None
    return found, True


def plan_vault(deps: SweepDependencies, now: datetime, failures: dict[str, RenewalFailures] | None = None) -> VaultPlan:
    """What the next sweep does with each certificate, most urgent first."""
    listed, truncated = list_certificates(deps.events)
    rcl_managed = rcl_names(deps.events.rcl_certificate_names())
    if failures is None:
        failures = deps.events.failures.all() if deps.events.failures is not None else {}
    planned = [plan_certificate(_facts(c, rcl_managed), failures.get(c.name.lower()), deps.window, now) for c in listed]
    planned.sort(key=lambda p: (p.due_at or datetime.max.replace(tzinfo=UTC), p.name.lower()))
    return VaultPlan(planned, truncated)


def _facts(certificate: ListedCertificate, rcl_managed: set[str]) -> CertificateFacts:
    return CertificateFacts(
        name=certificate.name,
        version=certificate.version,
        not_before=certificate.not_before,
        expires_on=certificate.expires_on,
        enabled=certificate.enabled,
        owner=owner_of(certificate.tags, certificate.name, rcl_managed),
    )


def run_sweep(deps: SweepDependencies, invocation_id: str | None = None, now: datetime | None = None) -> SweepSummary:
    """One sweep over the vault (KeyVaultError or StateStoreError when the vault or the tables cannot be read)."""
    now = now or datetime.now(UTC)
    plan = plan_vault(deps, now)
    summary = SweepSummary(listed=len(plan.certificates))
    started = 0
    stop_starting_at = time.monotonic() + deps.time_budget_seconds
    for item in plan.certificates:
        out_of_time = time.monotonic() >= stop_starting_at
        if item.action is PlanAction.RENEW and (started >= deps.max_renewals or out_of_time):
            summary.deferred += 1
            _guarded(item, summary, lambda i=item: _warn(i, deps, now, summary, "RENEWAL_DEFERRED"))
        elif item.action is PlanAction.RENEW:
            started += 1
            _guarded(item, summary, lambda i=item: _sweep_renewal(i, deps, invocation_id, now, summary))
        else:
            _guarded(item, summary, lambda i=item: _report_not_renewed(i, deps, now, summary))
    _emit_summary(summary, plan, deps, started)
    log.info(summary.line())
    return summary


def _report_not_renewed(
    item: PlannedCertificate, deps: SweepDependencies, now: datetime, summary: SweepSummary
) -> None:
    if item.action is PlanAction.BACKOFF:
        summary.in_backoff += 1
        _warn(item, deps, now, summary, (item.failures.last_reason if item.failures else None) or "IN_BACKOFF")
    elif item.action is PlanAction.LEFT_TO_RCL:
        _warn(item, deps, now, summary, "RCL_NOT_RENEWED")
    elif item.action is PlanAction.REPORT:
        _warn(item, deps, now, summary, "NOT_MANAGED")


def _guarded(item: PlannedCertificate, summary: SweepSummary, work: Callable[[], None]) -> None:
    """One certificate's work: a failure of its own (the tables, Key Vault, a bug) is counted and logged, and the
    sweep goes on with the next certificate."""
    try:
        work()
    except CertRenewError as exc:
        summary.failed += 1
        summary.failures.append(f"{item.name}: {exc.message}")
    except Exception as exc:
        log.exception("Renewal sweep: %s failed unexpectedly", item.name)
        summary.failed += 1
        summary.failures.append(f"{item.name}: unexpected {type(exc).__name__}")


def renew_now(
    deps: SweepDependencies,
    item: PlannedCertificate,
    invocation_id: str | None,
    now: datetime,
    *,
    caller: str = SWEEP_CALLER,
) -> str:
    """Renew one planned certificate's current version (its claim is shared with the event path); returns what
    happened: renewed, pending <id>, failed <code>, renewal already claimed, or not renewed: <why>."""
    try:
        current = deps.events.store.current(item.name)
    except CertRenewError as exc:
        return f"not renewed: {exc.message}"
    if current is None:
        return "not renewed: no longer in the vault"
    if _replaced_since_planned(item, current.version, current.expires_on):
        # Renewed by an event, the webhook or another sweep since the vault was listed: the new version is not due.
        return REPLACED
    renewal = VersionRenewal(
        name=item.name,
        version=current.version,
        avx_resource_id=current.tags.get("avxResourceId"),
        caller=caller,
        label=f"Renewal ({caller})",
        retry_refused=True,  # the plan said its backoff is over (or an operator forced it)
    )
    try:
        return renew_version(renewal, deps.events, invocation_id, now)
    except RetryLater as exc:
        return f"not renewed: {exc}"


def _replaced_since_planned(item: PlannedCertificate, version: str, expires_on: datetime | None) -> bool:
    """Key Vault's list names no version: a current version with another expiry is not the one planned."""
    if item.version:
        return item.version.lower() != version.lower()
    return expires_on is not None and item.expires_on is not None and expires_on != item.expires_on


def _sweep_renewal(
    item: PlannedCertificate, deps: SweepDependencies, invocation_id: str | None, now: datetime, summary: SweepSummary
) -> None:
    result = renew_now(deps, item, invocation_id, now)
    if result == "renewed":
        summary.renewed += 1
        return
    if result.startswith("pending"):
        summary.pending += 1
        return
    if result in (ALREADY_CLAIMED, REPLACED):
        summary.already += 1
        if result == ALREADY_CLAIMED:
            # The planned version is still current and its renewal was started before (pending an approval, or
            # failed after AppViewX acted): it is not renewed again, so it must not expire unheard.
            _warn(item, deps, now, summary, "RENEWAL_UNFINISHED")
        return
    summary.failed += 1
    summary.failures.append(f"{item.name}: {result}")
    reason = result.split(" ", 1)[1] if result.startswith("failed ") else "NOT_RENEWED"
    _warn(item, deps, now, summary, reason)


def _warn(item: PlannedCertificate, deps: SweepDependencies, now: datetime, summary: SweepSummary, reason: str) -> None:
    try:
        warned = warn_once(deps.events, item, reason, now)
    except CertRenewError as exc:  # the step cannot be claimed (tables): warned by a later sweep, never twice
        log.warning("Renewal sweep: the expiry warning of %s could not be claimed: %s", item.name, exc.message)
        return
    if warned:
        summary.warnings += 1


def _emit_summary(summary: SweepSummary, plan: VaultPlan, deps: SweepDependencies, started: int) -> None:
    emit_event(
        Event.RENEWAL_SWEEP_COMPLETED,
        {
            "source": Source.SWEEP,
            "certificates": summary.listed,
            "renewed": summary.renewed,
            "pending": summary.pending,
            "failed": summary.failed,
            "alreadyClaimed": summary.already,
            "inBackoff": summary.in_backoff,
            "deferred": summary.deferred,
            "warnings": summary.warnings,
            "truncated": plan.truncated,
        },
    )
    if summary.deferred:
        emit_event(
            Event.RENEWAL_SWEEP_DEFERRED,
            {
                "source": Source.SWEEP,
                "deferred": summary.deferred,
                "maxRenewals": deps.max_renewals,
                "started": started,
                "reason": "RENEWAL_SWEEP_MAX_RENEWALS or the run's time budget reached: the rest renew in the next sweep",
            },
        )
