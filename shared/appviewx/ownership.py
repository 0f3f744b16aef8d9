"""Which Key Vault certificates an AppViewX renewal may write a new version to. Pure, no I/O.

A renewal writes only where it may: a name the vault does not hold yet; a certificate whose current version this app
stored from AppViewX (tag `source=appviewx`) for the same common name; a pending certificate operation an operator
created for that name (the merged certificate's common name must be the CSR's); or a name an operator allowed in
`AVX_ADOPTABLE_CERTIFICATES` (for everyone, or for one caller). Anything else — RCL's certificate, another team's, an
unmanaged one — is refused with 409 `TARGET_NOT_OWNED` naming its owner tag, before AVX is called where the name is
known by then, and again before Key Vault is written (every path: webhook, queue, Key Vault events, completion, CLI).
"""

from __future__ import annotations

from shared.azure.keyvault import StoredCertificate
from shared.core.errors import ApiError
from shared.core.events import Source
from shared.core.settings import Adoption
from shared.core.text import clean_text

TARGET_NOT_OWNED = "TARGET_NOT_OWNED"
REMEDIATION = (
    "Name a certificate this app stores from AppViewX for the same common name, or a new name; to let AppViewX "
    "renewals take over this certificate, an operator lists it in AVX_ADOPTABLE_CERTIFICATES."
)


def same_common_name(first: str | None, second: str | None) -> bool:
    return bool(first) and bool(second) and (first or "").strip().lower() == (second or "").strip().lower()


def owner_tag(current: StoredCertificate) -> str:
    """How the refusal names the certificate's owner: its `source` tag, or that it has none."""
    source = clean_text(current.tags.get("source"), 64)
    return f"source={source}" if source else "no source tag"


def adopted(name: str, caller: str | None, adoptions: tuple[Adoption, ...]) -> bool:
    """An operator allowed renewals to write `name` (for any caller, or for this one)."""
    return any(a.name.lower() == name.lower() and (a.caller is None or a.caller == caller) for a in adoptions)


def may_write(
    current: StoredCertificate | None,
    common_name: str | None,
    resource_id: str | None = None,
) -> bool | None:
    """True when a new version may be written over `current` (None: the name is new) for a certificate of
    `common_name`; False when it may not; None when only the renewed certificate's common name can tell (this app's
    certificate, but the request named neither its common name nor its AVX id)."""
    if current is None:
        return True
    if current.tags.get("source") != Source.APPVIEWX:
        return False
    if common_name:
        return same_common_name(current.common_name, common_name)
    if resource_id and current.tags.get("avxResourceId") == resource_id:
        return True
    return None


def not_owned(name: str, current: StoredCertificate, common_name: str | None, *, before_avx: bool) -> ApiError:
    owner = owner_tag(current)
    mismatch = (
        f" for common name {clean_text(current.common_name, 128)!r}, not {clean_text(common_name, 128)!r}"
        if owner == f"source={Source.APPVIEWX}" and common_name
        else ""
    )
    outcome = "nothing was renewed" if before_avx else "the renewed certificate was not stored there"
    return ApiError(
        409,
        TARGET_NOT_OWNED,
        f"Key Vault certificate {name!r} is not this app's to write: its current version has {owner}{mismatch}; "
        f"{outcome}.",
        REMEDIATION,
    )


def csr_mismatch(name: str, csr_common_name: str | None, common_name: str | None) -> ApiError | None:
    """A pending operation is merged into only with a certificate of its CSR's common name."""
    if same_common_name(csr_common_name, common_name):
        return None
    return ApiError(
        409,
        TARGET_NOT_OWNED,
        f"The pending operation of Key Vault certificate {name!r} asks for common name "
        f"{clean_text(csr_common_name, 128)!r}, but AppViewX returned {clean_text(common_name, 128)!r}; it was not "
        "merged.",
        "Create the pending certificate in Key Vault with the subject of the AppViewX certificate, or name another.",
    )
