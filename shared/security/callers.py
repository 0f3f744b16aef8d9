"""Who is calling the webhook, and what a caller may be shown. Pure, no I/O.

The App Service authentication principal (`X-MS-CLIENT-PRINCIPAL-ID` / `-NAME`) is only the caller's identity when
App Service authentication (Easy Auth) fronts the app (`WEBSITE_AUTH_ENABLED=True`): the platform then strips any
such header a client sends and sets its own. Without it anyone holding a function key could write any name, so the
headers are ignored and every caller is "anonymous" (function keys do not identify their holder to the app).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.core.text import clean_text

ANONYMOUS = "anonymous"
MAX_PRINCIPAL_LENGTH = 256

# What the status route shows of a pending record: its state, reason, Key Vault id and times (and the AVX ids the
# caller already had) — never who asked, nor what the caller sent.
STATUS_FIELDS = (
    "pendingId",
    "state",
    "reason",
    "storage",
    "attempts",
    "createdAt",
    "nextAttemptAt",
    "completedAt",
    "lastError",
    "keyVaultCertificateId",
    "keyVaultName",
    "keyVaultUrl",
    "avxResourceId",
    "avxRequestId",
    "requestedResourceId",  # which certificate was asked for: what the caller itself sent, nothing of who sent it
    "commonName",
)


@dataclass(frozen=True)
class Caller:
    """The caller as far as the app can prove it: `scope` keeps callers' idempotency keys apart; `name` goes into
    events (None when unproven)."""

    scope: str
    name: str | None = None


def caller_of(headers: Mapping[str, str], app_service_auth: bool) -> Caller:
    if not app_service_auth:
        return Caller(ANONYMOUS)
    principal_id = (headers.get("X-MS-CLIENT-PRINCIPAL-ID") or "").strip()[:MAX_PRINCIPAL_LENGTH]
    name = (headers.get("X-MS-CLIENT-PRINCIPAL-NAME") or "").strip()[:MAX_PRINCIPAL_LENGTH]
    return Caller(scope=f"principal:{principal_id}" if principal_id else ANONYMOUS, name=clean_text(name) or None)


def status_view(public_record: Mapping[str, Any]) -> dict[str, Any]:
    """The status route's answer for a pending record (`PendingRecord.public()`)."""
    shown = {key: public_record.get(key) for key in STATUS_FIELDS if key in public_record}
    if shown.get("lastError") is not None:
        shown["lastError"] = clean_text(shown["lastError"])
    return shown
