"""Decisions of the Key Vault event path (`keyvault_events`): which events are ours, what an event's data says, and
what to do about the certificate it names. Pure, no I/O.

Key Vault publishes to its Event Grid system topic `Microsoft.KeyVault.CertificateNearExpiry` (30 days before expiry)
and `Microsoft.KeyVault.CertificateExpired`, with data `Id` (the version's URL), `VaultName`, `ObjectType`,
`ObjectName`, `Version`, `NBF` and `EXP` (epoch seconds).
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from shared.azure.keyvault import StoredCertificate
from shared.core.certificates import derive_certificate_name
from shared.core.events import Event, Source
from shared.core.settings import Vault
from shared.core.timestamps import utc

NEAR_EXPIRY_TYPE = "Microsoft.KeyVault.CertificateNearExpiry"
EXPIRED_TYPE = "Microsoft.KeyVault.CertificateExpired"
HANDLED_TYPES = {NEAR_EXPIRY_TYPE: Event.NEAR_EXPIRY, EXPIRED_TYPE: Event.EXPIRED}
_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_VERSION = re.compile(r"^[0-9A-Za-z]{1,64}$")
_MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z


class Malformed(ValueError):
    """The event's data does not follow Key Vault's schema (logged and dropped, never retried)."""


@dataclass(frozen=True)
class CertificateEvent:
    """A Key Vault certificate event, validated."""

    event_id: str
    event_type: str  # one of HANDLED_TYPES
    vault_name: str
    name: str  # ObjectName
    version: str
    object_url: str | None  # Id
    not_before: datetime | None
    expires_on: datetime | None

    @property
    def app_event(self) -> Event:
        """The app's event name for this Key Vault event: CertificateNearExpiry or CertificateExpired."""
        return HANDLED_TYPES[self.event_type]


def _text(data: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 2048:
        raise Malformed(f"data.{key} must be a non-empty string")
    return value.strip()


def _epoch(data: Mapping[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Malformed(f"data.{key} must be a number of epoch seconds")
    if not 0 <= value <= _MAX_EPOCH:
        raise Malformed(f"data.{key} is out of range")
    return datetime.fromtimestamp(value, UTC)


def parse_event(event_id: str, event_type: str, data: object) -> CertificateEvent:
    """Validate a handled event's data (raises Malformed naming the field)."""
    if not isinstance(data, Mapping):
        raise Malformed("data must be a JSON object")
    object_type = data.get("ObjectType")
    if object_type is not None and object_type != "Certificate":
        raise Malformed(f"data.ObjectType is {str(object_type)[:40]!r}, not Certificate")
    name = _text(data, "ObjectName") or ""
    if not _NAME.match(name):
        raise Malformed("data.ObjectName is not a Key Vault certificate name")
    version = _text(data, "Version") or ""
    if not _VERSION.match(version):
        raise Malformed("data.Version is not a Key Vault version")
    object_url = _text(data, "Id", required=False)
    if object_url is not None:
        path = [p for p in urlsplit(object_url).path.split("/") if p]
        if path[-3:] != ["certificates", name, version]:
            raise Malformed("data.Id does not name the certificate version in ObjectName and Version")
    return CertificateEvent(
        event_id=event_id,
        event_type=event_type,
        vault_name=_text(data, "VaultName") or "",
        name=name,
        version=version,
        object_url=object_url,
        not_before=_epoch(data, "NBF"),
        expires_on=_epoch(data, "EXP"),
    )


def vault_of_event(event: CertificateEvent, vaults: Sequence[Vault]) -> tuple[Vault | None, str]:
    """The listed vault the event is about, or None and why not. `Id`'s scheme, host and port pick the vault; its
    `VaultName` must then be that vault's name (where the host is a name: an IP address names no vault). Without
    `Id`, the `VaultName` must name exactly one listed vault."""
    if event.object_url is not None:
        parts = urlsplit(event.object_url)
        found = next(
            (v for v in vaults if v.host == parts.netloc.lower() and urlsplit(v.url).scheme == parts.scheme), None
        )
        if found is None:
            return None, f"its vault {parts.netloc[:120]!r} is not one of KEY_VAULT_URLS"
        if (
            event.vault_name
            and not _is_ip(urlsplit(found.url).hostname or "")
            and event.vault_name.lower() != found.name
        ):
            return (
                None,
                f"its VaultName {event.vault_name[:64]!r} is not the name of the vault in its Id ({found.name})",
            )
        return found, ""
    named = [v for v in vaults if v.name == event.vault_name.lower()]
    if len(named) != 1:
        return None, f"its VaultName {event.vault_name[:64]!r} names no single vault of KEY_VAULT_URLS"
    return named[0], ""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_our_vault(event: CertificateEvent, vault_url: str) -> bool:
    """The event is about KEY_VAULT_URL's vault: `Id`'s host (with its port) is the vault's; without `Id`, the
    `VaultName` is the first label of the vault's host name."""
    vault = urlsplit(vault_url)
    if event.object_url is not None:
        return urlsplit(event.object_url).netloc.lower() == vault.netloc.lower()
    return event.vault_name.lower() == (vault.hostname or "").split(".")[0].lower()


class Action(enum.Enum):
    GONE = "gone"  # the vault no longer has the certificate
    REPLACED = "replaced"  # a newer version with a later expiry is current: nothing to do
    RENEW_AVX = "renew-avx"  # stored from AppViewX: renew through the pipeline
    REPORT_RCL = "report-rcl"  # RCL renews it in its own night: report, never call RCL
    REPORT_UNMANAGED = "report-unmanaged"  # nobody renews it: report and notify


@dataclass(frozen=True)
class Decision:
    action: Action
    version: str | None = None  # the version the action is about (the current one)
    avx_resource_id: str | None = None


def rcl_names(certificate_names: Iterable[str]) -> set[str]:
    """The Key Vault names of the certificates RCL manages, from the names RCL gives them in its renewal records
    (`contoso.com`): RCL stores `contoso.com` in Key Vault as `contoso-com`. Lower-case, for comparison."""
    names: set[str] = set()
    for raw in certificate_names:
        derived = derive_certificate_name(raw or "")
        if derived:
            names.add(derived.lower())
    return names


class Owner(enum.StrEnum):
    """Who renews a certificate (the `owner` property of the events the path reports)."""

    APPVIEWX = "appviewx"  # the app, through AppViewX (its tags say so)
    RCL = "rcl"  # RCL, in its own night (its renewal records name it)
    UNMANAGED = "unmanaged"  # nobody


def owner_of(tags: Mapping[str, str], name: str, rcl_managed: set[str]) -> Owner:
    """Who renews a certificate: the app (from its tags), RCL (its renewal records) or nobody."""
    if (tags.get("source") or "").lower() == Source.APPVIEWX and tags.get("avxResourceId"):
        return Owner.APPVIEWX
    if name.lower() in rcl_managed:
        return Owner.RCL
    return Owner.UNMANAGED


def decide(event: CertificateEvent, current: StoredCertificate | None, rcl_managed: set[str]) -> Decision:
    """What an event asks for, given the certificate's current version in Key Vault."""
    if current is None:
        return Decision(Action.GONE)
    if current.version != event.version:
        # A newer version is current (a renewal landed). Key Vault sends that version its own events when it nears
        # its expiry, so nothing is lost by doing nothing here.
        return Decision(Action.REPLACED, current.version)
    owner = owner_of(current.tags, event.name, rcl_managed)
    if owner is Owner.APPVIEWX:
        return Decision(Action.RENEW_AVX, current.version, current.tags.get("avxResourceId"))
    if owner is Owner.RCL:
        return Decision(Action.REPORT_RCL, current.version)
    return Decision(Action.REPORT_UNMANAGED, current.version)


# Key Vault sends CertificateNearExpiry 30 days before a version expires (fixed; NOTES.md). A day of slack covers
# clocks and delivery delays; a version further from its expiry is not renewed, whatever the event's data says.
NEAR_EXPIRY_WINDOW = timedelta(days=31)


def near_expiry(current: StoredCertificate, now: datetime) -> bool:
    """The current version's own expiry (read from Key Vault) is within the near-expiry window (or past)."""
    return current.expires_on is not None and utc(current.expires_on) - utc(now) <= NEAR_EXPIRY_WINDOW


def whole_days_left(expires: datetime | None, now: datetime) -> int | None:
    """Whole days from `now` until `expires` (negative once expired); None when unknown."""
    if expires is None:
        return None
    return math.floor((utc(expires) - utc(now)).total_seconds() / 86400)
