"""The expiry ladder: a certificate version that is not renewed in time earns one warning at 30, 14, 7, 3 and 1 days
left (`CertificateNearExpiry`) and one once expired (`CertificateExpired`), with who renews it and why it was not
renewed; each step once per version however often the sweep runs and whichever path (the sweep, a Key Vault event)
gets there first: the step is claimed in the idempotency table (partition `kvladder`) before the event is emitted. A
run that dies between the claim and the event leaves a claim that goes stale after 15 minutes and is taken over.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from shared.core.errors import CertRenewError
from shared.core.events import Event, Source
from shared.core.telemetry import emit_event
from shared.vault.event_claims import ClaimOutcome, EventClaims, version_key
from shared.vault.event_decisions import Owner, whole_days_left
from shared.vault.renewal_plan import EXPIRED_STEP, PlannedCertificate, ladder_step

LADDER_PARTITION = "kvladder"


def warn_version(
    claims: EventClaims,
    vault_url: str,
    step: int,
    attributes: dict[str, Any],
    now: datetime,
) -> bool:
    """Emit the ladder's `step` warning for the version `attributes` names, unless it was emitted before."""
    name, version = str(attributes["certificateName"]), str(attributes["keyVaultVersion"])
    key = version_key(urlsplit(vault_url).netloc, name, f"{version}|step{step}")
    claim = claims.claim(LADDER_PARTITION, key, {"certificate": name}, now)
    if claim.outcome is not ClaimOutcome.NEW:
        return False
    emit_event(Event.EXPIRED if step == EXPIRED_STEP else Event.NEAR_EXPIRY, {**attributes, "ladderStep": step})
    claims.finish(LADDER_PARTITION, key, f"warned at step {step}")
    return True


def warn_once(deps: Any, item: PlannedCertificate, reason: str, now: datetime) -> bool:
    """The sweep's warning for a planned certificate that is not renewed (`deps`: the event path's dependencies)."""
    step = ladder_step(item.expires_on, now)
    if step is None:
        return False
    version = item.version
    if not version:  # Key Vault's list leaves the version out of the ids it lists: read the current one
        try:
            current = deps.store.current(item.name)
        except CertRenewError:
            return False
        if current is None:
            return False
        version = current.version
    attributes = {
        "source": Source.SWEEP,
        "certificateName": item.name,
        "keyVaultVersion": version,
        "expiryDate": item.expires_on,
        "daysLeft": whole_days_left(item.expires_on, now),
        "owner": Owner(item.owner),
        "reason": reason,
    }
    return warn_version(deps.claims, deps.vault_url, step, attributes, now)
