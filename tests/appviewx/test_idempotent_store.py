"""Storing is idempotent: a renewal already in Key Vault (its record could not be saved after the import) is settled
by the next run without a second import, so Key Vault never holds the same renewed certificate twice."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import context as app_context
from shared.appviewx.completion import complete_pending
from shared.appviewx.records import LEASE, RenewalState
from tests.standins import certs
from tests.standins.base import Response
from tests.standins.stack import StandIns
from tests.standins.tableproxy import CountingProxy


def table_error(status: int, code: str) -> Response:
    body = {"odata.error": {"code": code, "message": {"lang": "en-US", "value": f"{code} (injected)"}}}
    return Response.json(body, status=status)


def pending_renewal(standins: StandIns, call_webhook: Any, name: str) -> tuple[Any, str]:
    """A renewal AVX made whose import failed (Key Vault refused it): a pending record for completion."""
    item = standins.avx.add_certificate(f"{name}.contoso.com")
    standins.key_vault.fail_next(20, Response.json({"error": {"code": "InternalError"}}, status=500), "import")
    status, answer = call_webhook({"resourceId": item.resource_id})
    assert status == 202 and answer["reason"] == "KEY_VAULT_STORE_FAILED", answer
    standins.key_vault.reset_records()  # Key Vault is back
    return item, answer["pendingId"]


def test_record_save_failing_after_import_is_settled_without_a_second_version(
    standins: StandIns, call_webhook: Any, table_proxy: CountingProxy
) -> None:
    item, pending_id = pending_renewal(standins, call_webhook, "saved-late")
    records, avx, vault = app_context.pending_store(), app_context.avx_client(), app_context.key_vault_store()
    start = datetime.now(UTC)

    # The run claims the record (one write), imports, then cannot save the settled record (every later write fails).
    table_proxy.fail_next(50, table_error(503, "ServerBusy"), kind="write", after=1)
    summary = complete_pending(records, avx, vault, 7, now=start)
    assert summary.completed == [pending_id]  # stored, though the record still says otherwise
    assert len(standins.key_vault.certificates["saved-late-contoso-com"]) == 1
    table_proxy.reset_records()
    record = records.get(pending_id)
    assert record is not None and record.state is RenewalState.PENDING

    imports = len(standins.key_vault.received("POST", "/import"))
    # The next run (after the dead run's lease) finds the renewed certificate already current in Key Vault.
    started = time.monotonic()
    summary = complete_pending(records, avx, vault, 7, now=start + LEASE + timedelta(minutes=1))
    assert time.monotonic() - started < 30
    assert summary.completed == [pending_id]
    versions = standins.key_vault.certificates["saved-late-contoso-com"]
    assert len(versions) == 1, "the same renewed certificate was imported twice"
    assert certs.thumbprint_hex(versions[0].certificate) == certs.thumbprint_hex(item.renewals[-1].certificate)
    assert len(standins.key_vault.received("POST", "/import")) == imports
    settled = records.get(pending_id)
    assert settled is not None and settled.state is RenewalState.RENEWED
    assert settled.key_vault_certificate_id and settled.key_vault_certificate_id.endswith(versions[0].version)
    assert len(standins.avx.renew_calls()) == 1


def test_a_different_current_certificate_is_replaced_by_the_renewal(standins: StandIns, call_webhook: Any) -> None:
    # The check only skips the import when the current version IS the renewed certificate. The current version here
    # is an earlier one this app stored from AppViewX (so the renewal may replace it: shared.appviewx.ownership).
    item, pending_id = pending_renewal(standins, call_webhook, "other-current")
    old = certs.issue_certificate("other-current.contoso.com")
    tags = {"source": "appviewx", "avxResourceId": "earlier"}
    standins.key_vault.seed("other-current-contoso-com", old.certificate, old.private_key, tags=tags)
    records = app_context.pending_store()
    summary = complete_pending(records, app_context.avx_client(), app_context.key_vault_store(), 7)
    assert summary.completed == [pending_id]
    versions = standins.key_vault.certificates["other-current-contoso-com"]
    assert len(versions) == 2
    assert certs.thumbprint_hex(versions[-1].certificate) == certs.thumbprint_hex(item.renewals[-1].certificate)
