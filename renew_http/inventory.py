"""HTTP trigger `certificate_inventory`: `GET /api/certificates` (function key), the vault's certificates with who
renews each (appviewx / rcl / unmanaged), days left and the last outcome the app recorded. Thin: the shaping is in
`shared.vault.inventory`."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import azure.functions as func

from renew_http.answers import answered, json_response
from shared import context as app_context
from shared.core.errors import ApiError, Rejected, SettingsError
from shared.core.settings import EndpointCheck, Vault, VaultNotListed
from shared.core.telemetry import invocation

if TYPE_CHECKING:
    from shared.azure.last_outcomes import LastOutcome

bp = func.Blueprint()
log = logging.getLogger("certrenew.inventory")


def _page_size(raw: str | None) -> int:
    # Imported when the inventory is first asked for (with the Key Vault SDK behind them): not at cold start.
    from shared.azure.keyvault import LIST_PAGE_MAX
    from shared.vault.inventory import DEFAULT_PAGE_SIZE

    if raw is None:
        return DEFAULT_PAGE_SIZE
    text = raw.strip()
    # ASCII digits only, at most 4 of them: str.isdigit() also accepts "²", which int() refuses.
    if not re.fullmatch(r"[0-9]{1,4}", text) or not 1 <= int(text) <= LIST_PAGE_MAX:
        message = f"maxResults must be a whole number from 1 to {LIST_PAGE_MAX}"
        remediation = (
            f"Send maxResults as ASCII digits from 1 to {LIST_PAGE_MAX}, or leave it out (default {DEFAULT_PAGE_SIZE})."
        )
        raise Rejected(ApiError(400, "INVALID_REQUEST", message, remediation))
    return int(text)


def _foreign_continuation() -> Rejected:
    return Rejected(ApiError(400, "INVALID_REQUEST", "continuation is not a token this endpoint gave"))


def _endpoints() -> tuple[EndpointCheck, ...]:
    try:
        return app_context.settings().endpoint_checks.endpoints
    except SettingsError as exc:  # the endpoint check reports it; the inventory still answers
        log.warning("Inventory without endpoints: %s", exc.message)
        return ()


@bp.function_name("certificate_inventory")
@bp.route(route="certificates", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def certificate_inventory(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    invocation_id = getattr(context, "invocation_id", None)
    with invocation(invocation_id, context):
        return answered(lambda: _inventory(req, invocation_id), invocation_id, log, "Inventory failed")


def _vaults(wanted: str | None) -> tuple[Vault, ...]:
    """Every listed vault, or only the one `?vault=` names (its name or URL)."""
    settings = app_context.settings().key_vault
    if wanted is None:
        return settings.all_vaults
    try:
        return (settings.vault(wanted),)
    except VaultNotListed:
        message = f"vault {wanted[:140]!r} is not one of the app's vaults ({settings.names()})"
        raise Rejected(
            ApiError(400, "KEY_VAULT_NOT_ALLOWED", message, "Name a listed vault, or leave vault out for all.")
        ) from None


def _inventory(req: func.HttpRequest, invocation_id: str | None) -> func.HttpResponse:
    from shared.azure.keyvault import ForeignLink
    from shared.vault.inventory import (
        InventoryContext,
        decode_continuation,
        inventory_across,
        rcl_managed_of,
        with_backoff,
    )

    page_size = _page_size(req.params.get("maxResults"))
    vaults = _vaults(req.params.get("vault"))
    token = req.params.get("continuation")
    position = decode_continuation(token) if token is not None else None
    if token is not None and position is None:
        raise _foreign_continuation()
    default_outcomes = app_context.last_outcomes().read()  # one row per certificate, never the history
    default_url = app_context.settings().key_vault.url

    def outcomes_of(vault_url: str) -> Mapping[str, LastOutcome]:
        return default_outcomes if vault_url == default_url else app_context.last_outcomes(vault_url).read()

    shaping = InventoryContext(
        rcl_managed_of(default_outcomes),  # RCL schedules into the default vault's rows (its vault unknown yet)
        outcomes_of,
        _endpoints(),
        datetime.now(UTC),
        {name: known.consumers for name, known in app_context.known_consumers().items()},
    )
    try:
        page = inventory_across(vaults, app_context.key_vault_store, page_size, position, shaping, default_url)
    except ForeignLink:
        raise _foreign_continuation() from None
    with_backoff(page.certificates, app_context.renewal_failures(page.vault_url).all())
    body = {"certificates": page.certificates, "continuation": page.continuation, "invocationId": invocation_id}
    return json_response(200, body)
