"""Which listed vault holds a certificate someone else renewed (RCL's nightly renewals: RCL's records name a target
kind, never a vault). Told only where it can be: exactly one listed vault's current version of the name expires when
RCL says the renewed certificate does."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from shared.azure.keyvault import StoredCertificate
from shared.core.certificates import derive_certificate_name
from shared.core.errors import CertRenewError
from shared.core.settings import Vault

# RCL's dates and Key Vault's attributes are both whole seconds; allow for a rounding either side.
SAME_EXPIRY_SECONDS = 1.0


def vault_holding(
    certificate_name: str,
    expiry: datetime | None,
    vaults: Sequence[Vault],
    current: Callable[[str, str], StoredCertificate | None],
) -> str | None:
    """The name of the one vault of `vaults` whose current `certificate_name` (RCL's `contoso.com` is Key Vault's
    `contoso-com`) expires at `expiry`; None when none or several do, or the expiry is unknown. `current(vault_url,
    name)` reads a vault; a vault that cannot be read is passed over (the check reports RCL's outcome regardless)."""
    name = derive_certificate_name(certificate_name or "")
    if expiry is None or not name:
        return None
    found: list[str] = []
    for vault in vaults:
        try:
            stored = current(vault.url, name)
        except CertRenewError:
            continue
        if stored is not None and stored.expires_on is not None:
            if abs((stored.expires_on - expiry).total_seconds()) <= SAME_EXPIRY_SECONDS:
                found.append(vault.name)
    return found[0] if len(found) == 1 else None
