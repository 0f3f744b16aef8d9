"""The certificate inventory (`GET /api/certificates`): the listed vaults' certificates, who renews each, and the last
outcome the app recorded for it.

One page of the answer is one page of one vault's own list (`list_properties_of_certificates`, at most 25 per page),
the vaults in order (`inventory_across`); the continuation handed to the caller is Key Vault's nextLink (or the next
vault's start), base64url-encoded and accepted back only when it is a list link of a listed vault (otherwise a caller
could point the app's bearer token at another host). The shaping is pure (`inventory_entry`); each certificate's last
outcome is its row in `shared.azure.last_outcomes` (one partition query for the page's vault, one row per certificate:
the cost does not grow with the renewal history).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.azure.keyvault import LIST_PAGE_MAX, ForeignLink, KeyVaultStore, ListedCertificate, is_vault_list_link
from shared.azure.last_outcomes import LastOutcome
from shared.core.events import Source
from shared.core.settings import EndpointCheck, Vault
from shared.core.timestamps import iso_utc
from shared.vault.event_decisions import Owner, owner_of, whole_days_left
from shared.vault.renewal_plan import RenewalFailures

DEFAULT_PAGE_SIZE = LIST_PAGE_MAX
MAX_CONTINUATION = 4096  # characters of the encoded token
MAX_EMPTY_PAGES = 5  # Key Vault may answer an empty page with a nextLink; follow a few before answering


def encode_continuation(next_link: str | None) -> str | None:
    return base64.urlsafe_b64encode(next_link.encode()).decode().rstrip("=") if next_link else None


def decode_continuation(token: str) -> str | None:
    """Key Vault's nextLink from the caller's token; None when it is not one of ours."""
    if not token or len(token) > MAX_CONTINUATION:
        return None
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def rcl_managed_of(outcomes: Mapping[str, LastOutcome]) -> set[str]:
    """The certificates RCL renews: those whose last outcome came from RCL's records."""
    return {name for name, outcome in outcomes.items() if outcome.source == Source.RCL}


def inventory_entry(
    certificate: ListedCertificate,
    rcl_managed: set[str],
    outcomes: Mapping[str, LastOutcome],
    endpoints: Sequence[EndpointCheck],
    now: datetime,
    consumers: Mapping[str, Sequence[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    outcome = outcomes.get(certificate.name.lower())
    owner = owner_of(certificate.tags, certificate.name, rcl_managed)
    return {
        "name": certificate.name,
        "expiresOn": iso_utc(certificate.expires_on),
        "daysLeft": whole_days_left(certificate.expires_on, now),
        "thumbprint": certificate.thumbprint or None,
        "enabled": certificate.enabled,
        "source": owner,
        # Who renews it in AppViewX: the record AVX now holds (each renewal is a new record; the tags follow it).
        "avxResourceId": certificate.tags.get("avxResourceId") if owner is Owner.APPVIEWX else None,
        "lastOutcome": outcome.state if outcome else None,
        "lastOutcomeReason": outcome.reason if outcome else None,
        "lastOutcomeAt": iso_utc(outcome.at) if outcome else None,
        # The endpoints ENDPOINT_CHECKS compares with this certificate (the latest result is in telemetry only).
        "endpoints": [
            {"host": e.host, "address": e.address}
            for e in endpoints
            if e.certificate.lower() == certificate.name.lower()
        ],
        # The Azure resources discover_consumers found using it (id, type, follows latest|pinned, version), pinned first.
        "consumers": list((consumers or {}).get(certificate.name.lower(), [])),
    }


@dataclass(frozen=True)
class InventoryPage:
    certificates: list[dict[str, Any]]
    continuation: str | None
    vault_url: str | None = None  # the vault the page's certificates are in (None: the default vault)


# -- across vaults ---------------------------------------------------------------------------------------------------
# A continuation is Key Vault's nextLink (the listed vault it is a list link of says which vault), or, when one vault
# is done and the next is to start, START + that vault's URL. With one vault it is exactly Key Vault's nextLink.
START = "vault:"


@dataclass(frozen=True)
class InventoryContext:
    """What every entry is shaped with, whatever vault it is in."""

    rcl_managed: set[str]
    outcomes: Callable[[str], Mapping[str, LastOutcome]]  # a vault's URL -> its certificates' last outcomes
    endpoints: Sequence[EndpointCheck]
    now: datetime
    consumers: Mapping[str, Sequence[dict[str, Any]]] | None = None


def _position(vaults: Sequence[Vault], continuation: str | None) -> tuple[int, str | None]:
    """(index of the vault, Key Vault nextLink or None for its first page); ForeignLink for anything else."""
    if continuation is None:
        return 0, None
    for index, vault in enumerate(vaults):
        if continuation == START + vault.url:
            return index, None
        if is_vault_list_link(vault.url, continuation):
            return index, continuation
    raise ForeignLink("the continuation is not a certificate list link of a listed vault")


def _following(vaults: Sequence[Vault], index: int, next_link: str | None) -> str | None:
    if next_link:
        return next_link
    return START + vaults[index + 1].url if index + 1 < len(vaults) else None


def inventory_across(
    vaults: Sequence[Vault],
    stores: Callable[[str], KeyVaultStore],
    page_size: int,
    continuation: str | None,
    shaping: InventoryContext,
    default_vault_url: str | None = None,
) -> InventoryPage:
    """One page of the inventory over `vaults` in order (one vault's page at a time; the continuation moves on to the
    next vault when one is done). Raises KeyVaultError, or ForeignLink for a continuation of no listed vault."""
    index, next_link = _position(vaults, continuation)
    for _ in range(MAX_EMPTY_PAGES):
        vault = vaults[index]
        page = stores(vault.url).list_page(page_size, next_link)
        following = _following(vaults, index, page.next_link)
        if page.certificates or following is None:
            break
        index, next_link = _position(vaults, following)
    default = vault.url == default_vault_url or default_vault_url is None
    outcomes = shaping.outcomes(vault.url)  # one partition of one row per certificate, never the history
    rcl_managed = shaping.rcl_managed | rcl_managed_of(outcomes)  # RCL's found in this vault, too
    endpoints = [
        e for e in shaping.endpoints if (e.vault or default_vault_url) == vault.url or (default and not e.vault)
    ]
    entries = [
        {
            **inventory_entry(c, rcl_managed, outcomes, endpoints, shaping.now, shaping.consumers),
            "vault": vault.name,
        }
        for c in page.certificates
    ]
    return InventoryPage(entries, encode_continuation(following), vault.url)


def with_backoff(entries: list[dict[str, Any]], failures: Mapping[str, RenewalFailures]) -> list[dict[str, Any]]:
    """Each entry with its renewal backoff (`renewalBackoff`: failures in a row, when the next try may start, the
    last reason), or None when its last renewal did not fail."""
    for entry in entries:
        found = failures.get(str(entry.get("name") or "").lower())
        entry["renewalBackoff"] = (
            {"failures": found.count, "retryAt": iso_utc(found.retry_at), "lastReason": found.last_reason}
            if found
            else None
        )
    return entries
