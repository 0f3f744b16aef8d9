"""RCL's bearer from client credentials (RCL_CLIENT_ID/SECRET/TENANT_ID): the real azure-identity
ClientSecretCredential (MSAL) against a private Entra authority stand-in over HTTPS, chosen over the managed identity;
the Key Vault token still comes from the managed identity."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import azure.functions as func
import pytest
from azure.identity import ClientSecretCredential, ManagedIdentityCredential

from shared import context as app_context
from shared.core.errors import CertRenewError
from tests.standins.entra import EntraStandIn
from tests.standins.stack import KEY_VAULT_RESOURCE, RCL_CLIENT_SECRET, RCL_RESOURCE, FakeContext, StandIns

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "625bc9f6-3bf6-4b6d-94ba-e97cf07a22de"
RCL_SCOPE = "https://management.core.windows.net/.default"


@pytest.fixture
def entra(standins: StandIns) -> Iterator[EntraStandIn]:
    server = EntraStandIn(standins.ca.server_context(), TENANT_ID, CLIENT_ID, RCL_CLIENT_SECRET).start()
    assert isinstance(server, EntraStandIn)
    # RCL knows the app registration, not the managed identity.
    standins.rcl.expected_token = server.token_for(RCL_SCOPE)
    yield server
    standins.rcl.expected_token = standins.identity.token_for(RCL_RESOURCE)
    server.stop()


@pytest.fixture
def client_credentials_env(
    storage_env: dict[str, str], entra: EntraStandIn, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    values = {
        "RENEWAL_STATE_TABLE": f"rcl{uuid.uuid4().hex[:12]}",
        "RCL_CLIENT_ID": CLIENT_ID,
        "RCL_CLIENT_SECRET": RCL_CLIENT_SECRET,
        "RCL_TENANT_ID": TENANT_ID,
        "AZURE_AUTHORITY_HOST": entra.url,  # honoured by azure-identity; a private authority skips instance discovery
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    app_context.reset()
    return {**storage_env, **values}


def run_renewal(functions: dict[str, Any]) -> None:
    functions["renew_timer"].get_user_function()(func.timer.TimerRequest(past_due=False), FakeContext("renew_timer"))


def test_client_credentials_are_chosen_when_all_three_are_set(client_credentials_env: dict[str, str]) -> None:
    assert isinstance(app_context.rcl_credential(), ClientSecretCredential)
    deps = app_context.rcl_dependencies()
    assert isinstance(deps.key_vault_credential.inner, ManagedIdentityCredential)  # type: ignore[attr-defined]


def test_managed_identity_is_used_without_client_credentials(storage_env: dict[str, str]) -> None:
    assert isinstance(app_context.rcl_credential().inner, ManagedIdentityCredential)  # type: ignore[attr-defined]


def test_rcl_token_from_the_app_registration_key_vault_token_from_the_managed_identity(
    standins: StandIns, entra: EntraStandIn, functions: dict[str, Any], client_credentials_env: dict[str, str]
) -> None:
    standins.rcl.add_certificate("sp.contoso.com", 3)
    run_renewal(functions)

    (sent,) = standins.rcl.renewal_calls()
    assert sent.header("Authorization") == f"Bearer {entra.token_for(RCL_SCOPE)}"
    assert sent.json() == {"keyVaultAccessToken": standins.identity.token_for(KEY_VAULT_RESOURCE)}
    (token_call,) = entra.token_calls()
    form = {k: v[0] for k, v in parse_qs(token_call.body.decode()).items()}
    assert form["grant_type"] == "client_credentials"
    assert form["client_id"] == CLIENT_ID
    assert form["scope"] == RCL_SCOPE
    assert token_call.path == f"/{TENANT_ID}/oauth2/v2.0/token"
    # The managed identity was asked only for the vault.
    assert [r.query_one("resource") for r in standins.identity.token_requests()] == [KEY_VAULT_RESOURCE]


def test_a_wrong_client_secret_is_an_identity_error_without_the_secret(
    standins: StandIns,
    entra: EntraStandIn,
    functions: dict[str, Any],
    client_credentials_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RCL_CLIENT_SECRET", "SENTINEL-rcl-client-secret-Zt4-but-wrong")
    app_context.reset()
    with pytest.raises(CertRenewError) as raised:
        run_renewal(functions)
    error = raised.value
    assert error.code == "IDENTITY_UNAVAILABLE" and "the RCL API" in error.message
    assert RCL_CLIENT_SECRET not in str(error) and RCL_CLIENT_SECRET not in (error.remediation or "")
    assert standins.rcl.requests == []
