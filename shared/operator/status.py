"""`status`: the recorded RCL renewals and the AppViewX renewal records, as tables."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.operator.files import LOCAL_STACK_SETTINGS
from shared.operator.outcomes import EXIT_FAILED, EXIT_MISTAKE, EXIT_OK, program_name
from shared.operator.words import INSTALLED_WORDS, clip, expiry_words, state_word, when


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def _print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "(none)") -> None:
    print(title)
    print(format_table(headers, rows) if rows else f"  {empty}")


def rcl_note(record: dict[str, Any]) -> str:
    if record.get("reason"):
        return clip(f"{record['reason']}: {record.get('message') or ''}".rstrip(": "))
    if record.get("state") == "renewed":
        return INSTALLED_WORDS[bool(record.get("installed"))]
    return ""


def rcl_expiry(record: dict[str, Any], now: datetime) -> str:
    # A renewed record shows the new expiry; every other one the expiry RCL was asked to renew.
    return expiry_words(record.get("newExpiryDate") or record.get("expiryDate"), now)


def pending_names(records: Sequence[Any]) -> dict[str, str]:
    """The certificate each pending record is about, by pending id: its Key Vault name or common name; for a
    renewal asked by resourceId only, the common name AppViewX lists for it (one read-only search per id)."""
    names: dict[str, str] = {}
    unnamed: dict[str, list[str]] = {}
    for record in records:
        name = getattr(record, "key_vault_name", None) or getattr(record, "common_name", None)
        resource_id = getattr(record, "requested_resource_id", None) or getattr(record, "avx_resource_id", None)
        if name:
            names[record.pending_id] = name
        elif resource_id:
            unnamed.setdefault(resource_id, []).append(record.pending_id)
    for resource_id, pending_ids in unnamed.items():
        found = _avx_common_name(resource_id)
        for pending_id in pending_ids:
            names[pending_id] = found or f"resourceId {resource_id}"
    return names


def _avx_common_name(resource_id: str) -> str | None:
    from shared import context as app_context
    from shared.core.errors import CertRenewError

    try:
        listed = app_context.avx_client().search(resource_id=resource_id)
    except CertRenewError as exc:  # AVX not configured or not reachable: the table still prints
        logging.getLogger("certrenew.cli").debug("No AppViewX name for %s: %s", resource_id, exc.message)
        return None
    return next((c.common_name for c in listed if c.common_name), None)


def status_hint(error: Exception, settings_path: Path | None) -> str:
    """The likely cause of `status` failing, in words an operator can act on."""
    from shared.core.errors import SettingsError, StateStoreError

    if isinstance(error, SettingsError) and settings_path is None:
        return (
            "no settings were given: pass --settings local.settings.json (for the local stack "
            f"--settings {LOCAL_STACK_SETTINGS} while `bash dev.sh local --serve` runs), or set AzureWebJobsStorage"
        )
    if isinstance(error, SettingsError):
        return f"fix the named setting in {settings_path}"
    if isinstance(error, StateStoreError):
        endpoint = local_table_endpoint(os.environ.get("AzureWebJobsStorage", ""))
        if endpoint:
            return (
                f"nothing answers at {endpoint}: the local stack (its Azurite) is not running; start "
                "`bash dev.sh local --serve` in another terminal and keep it running while you use status "
                f"(each start writes a new {LOCAL_STACK_SETTINGS})"
            )
        return (
            "the storage account in AzureWebJobsStorage cannot be reached from here, or you may not read its "
            "tables: check the network path and your access (az login, or the connection string's key)"
        )
    return getattr(error, "remediation", None) or ""


def local_table_endpoint(connection_string: str) -> str | None:
    """The table endpoint of a storage connection string when it is on this machine (Azurite), else None."""
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        return "http://127.0.0.1:10002"
    endpoint = parts.get("TableEndpoint", "")
    host = urlsplit(endpoint).hostname or ""
    return endpoint.rstrip("/") if host in ("127.0.0.1", "localhost", "::1") else None


def _read_status_tables(settings_path: Path | None) -> tuple[list[dict[str, Any]], list[Any]] | int:
    """The RCL renewal records and the AppViewX records; else, after telling on stderr why they cannot be read, the
    exit code: 2 for a mistake in how status was called (no settings, a setting wrong), 1 for storage failing."""
    from shared import context as app_context
    from shared.core.errors import CertRenewError, SettingsError

    try:
        return app_context.renewal_state().all_records(), app_context.pending_store().all_records()
    except CertRenewError as exc:
        print(
            f"{program_name()} status: cannot read the app's tables ([{exc.code}] {exc.message.rstrip('.')}). "
            f"Likely cause: {status_hint(exc, settings_path)}.",
            file=sys.stderr,
        )
        return EXIT_MISTAKE if isinstance(exc, SettingsError) else EXIT_FAILED


def _print_rcl_renewals(rcl_records: Sequence[dict[str, Any]], now: datetime) -> None:
    rcl_rows = [
        (
            r.get("certificateName"),
            r.get("certificateId"),
            r.get("target"),
            state_word(r.get("state")),
            rcl_expiry(r, now),
            when(r.get("scheduledAt")),
            rcl_note(r),
        )
        for r in rcl_records
    ]
    _print_table(
        "RCL renewals",
        ("certificate", "id", "target", "state", "expiry", "scheduled", "note"),
        rcl_rows,
        "(none recorded)",
    )


def status(settings_path: Path | None) -> int:
    """Print both tables; `settings_path` (--settings) only shapes the hint when the tables cannot be read."""
    from shared.appviewx.records import OPEN_STATES

    now = datetime.now(UTC)
    tables = _read_status_tables(settings_path)
    if isinstance(tables, int):
        return tables
    rcl_records, pending_records = tables
    _print_rcl_renewals(rcl_records, now)
    names = pending_names(pending_records)
    pending_rows = [
        (
            p.pending_id,
            names.get(p.pending_id, ""),
            state_word(p.state),
            p.reason,
            p.attempts,
            when(p.next_attempt_at) if p.state in OPEN_STATES else "",
            clip(p.last_error, 60),
        )
        for p in pending_records
    ]
    print()
    _print_table(
        "AppViewX renewals (accepted, pending, renewed, failed)",
        ("pending id", "certificate", "state", "reason", "tries", "next try", "last error"),
        pending_rows,
    )
    return EXIT_OK
