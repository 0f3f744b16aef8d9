"""The renewal plan as the operator reads it (`GET /api/certificates/plan`, `certrenew plan`): what the next sweep does
with each certificate, and the checks that would stop it — AppViewX's settings (the sweep renews through them),
the tables (claims and backoff rows) and Key Vault (listing needs the identity's role on the vault). A failed check
is reported, not raised: the plan is where an operator looks when something is wrong."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.core.errors import CertRenewError
from shared.core.settings import Settings
from shared.vault.renewal_plan import RenewalFailures
from shared.vault.sweep import SweepDependencies, VaultPlan, plan_vault


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def _avx_check(settings: Settings) -> Check:
    try:
        avx = settings.avx
    except CertRenewError as exc:
        return Check("appviewx-settings", False, exc.message)
    return Check("appviewx-settings", True, f"AppViewX at {avx.api_url} ({avx.auth_mode} authentication)")


def _failures(deps: SweepDependencies) -> tuple[dict[str, RenewalFailures], Check]:
    if deps.events.failures is None:
        return {}, Check("tables", True, "no backoff rows kept")
    try:
        found = deps.events.failures.all()
    except CertRenewError as exc:
        return {}, Check("tables", False, exc.message)
    return found, Check("tables", True, f"{len(found)} certificate(s) in renewal backoff")


def _vault_plan(
    deps: SweepDependencies, now: datetime, failures: dict[str, RenewalFailures]
) -> tuple[VaultPlan, Check]:
    try:
        plan = plan_vault(deps, now, failures)
    except CertRenewError as exc:
        return VaultPlan([], False), Check("key-vault", False, exc.message)
    return plan, Check("key-vault", True, f"{len(plan.certificates)} certificate(s) listed in {deps.events.vault_url}")


def with_pinned(entry: dict[str, Any], consumers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The plan's entry with the consumers the last discovery found pinned to a version (a renewal never reaches
    them: they keep the version they name)."""
    pinned = [
        {"id": c.get("id"), "type": c.get("type"), "version": c.get("version")}
        for c in consumers
        if c.get("follows") == "pinned"
    ]
    entry["pinnedConsumers"] = pinned
    if pinned:
        entry["reason"] = f"{entry['reason']}; {len(pinned)} consumer(s) pinned to a version will not follow a renewal"
    return entry


def plan_with_checks(
    settings: Callable[[], Settings],
    dependencies: Callable[[], SweepDependencies],
    now: datetime,
    consumers: Callable[[], Mapping[str, Sequence[dict[str, Any]]]] = dict,
) -> dict[str, Any]:
    """The plan's answer (a settings problem of the sweep or the vault raises, named, like every other route);
    `consumers`: what discovery found, per lower-case certificate name ({} while it is off)."""
    deps = dependencies()
    avx = _avx_check(settings())
    failures, tables = _failures(deps)
    plan, vault = _vault_plan(deps, now, failures)
    checks = [avx, tables, vault]
    found = consumers()
    return {
        "certificates": [with_pinned(i.to_json(now), found.get(i.name.lower(), ())) for i in plan.certificates],
        "truncated": plan.truncated,
        "checks": [c.to_json() for c in checks],
        "ready": all(c.ok for c in checks),
        "window": {"remainingFraction": deps.window.remaining_fraction, "beforeDays": deps.window.before_days},
        "maxRenewalsPerSweep": deps.max_renewals,
    }
