"""Until App Service has resolved a Key Vault reference (role assignments take minutes to apply; a wrong secret name
or identity never resolves), it hands the app the literal `@Microsoft.KeyVault(...)` text. The settings refuse it,
by name, for every secret setting, instead of using it as an HMAC key or a password."""

from __future__ import annotations

from typing import Any

import pytest

from shared.core.errors import SettingsError
from shared.core.settings import SECRET_SETTINGS, Settings
from tests.standins.stack import StandIns

UNRESOLVED = "@Microsoft.KeyVault(SecretUri=https://kv-cr-abc.vault.azure.net/secrets/{name})"


def unresolved(name: str) -> str:
    return UNRESOLVED.format(name=name.replace("_", "-"))


def test_webhook_answers_configuration_error_for_an_unresolved_hmac_secret(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import context as app_context

    # 90 characters: the length check alone would accept it as a strong HMAC key.
    monkeypatch.setenv("WEBHOOK_HMAC_SECRET", unresolved("WEBHOOK_HMAC_SECRET"))
    app_context.reset()
    item = standins.avx.add_certificate("kvref.contoso.com")

    status, answer = call_webhook({"resourceId": item.resource_id})

    assert (status, answer["error"]["code"]) == (500, "CONFIGURATION_ERROR")
    message = answer["error"]["message"]
    assert "WEBHOOK_HMAC_SECRET" in message and "unresolved Key Vault reference" in message
    assert "role assignment" in message
    assert standins.avx.renew_calls() == []


def test_webhook_answers_configuration_error_for_an_unresolved_avx_password(
    standins: StandIns, call_webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import context as app_context

    monkeypatch.setenv("AVX_PASSWORD", unresolved("AVX_PASSWORD"))
    app_context.reset()
    item = standins.avx.add_certificate("kvref2.contoso.com")

    status, answer = call_webhook({"resourceId": item.resource_id})

    assert (status, answer["error"]["code"]) == (500, "CONFIGURATION_ERROR")
    assert "AVX_PASSWORD is an unresolved Key Vault reference" in answer["error"]["message"]
    assert standins.avx.renew_calls() == []


# The group each secret setting is validated in, and the settings that make the group otherwise valid.
GROUP_OF_SECRET = {
    "AVX_PASSWORD": ("avx", {"AVX_API_URL": "https://avx.example", "AVX_USERNAME": "svc"}),
    "AVX_CLIENT_SECRET": (
        "avx",
        {"AVX_API_URL": "https://avx.example", "AVX_AUTH_MODE": "service-account", "AVX_CLIENT_ID": "c"},
    ),
    "RCL_CLIENT_SECRET": ("rcl", {"RCL_CLIENT_ID": "c", "RCL_TENANT_ID": "t"}),
    "WEBHOOK_HMAC_SECRET": ("webhook", {}),
    "NOTIFY_WEBHOOK_URL": ("notify", {}),
}


def test_every_secret_setting_is_covered() -> None:
    assert set(GROUP_OF_SECRET) == set(SECRET_SETTINGS) - {"IDENTITY_HEADER"}  # IDENTITY_HEADER: set by the platform


@pytest.mark.parametrize("name", sorted(GROUP_OF_SECRET))
def test_every_secret_setting_refuses_an_unresolved_reference(name: str) -> None:
    group, others = GROUP_OF_SECRET[name]
    settings = Settings({**others, name: "  " + unresolved(name)})

    with pytest.raises(SettingsError) as raised:
        getattr(settings, group)

    message = raised.value.message
    assert f"{name} is an unresolved Key Vault reference" in message
    assert "has not resolved" in message and "secret name" in message and "identity" in message


@pytest.mark.parametrize("name", sorted(GROUP_OF_SECRET))
def test_the_same_group_accepts_a_resolved_value(name: str) -> None:
    group, others = GROUP_OF_SECRET[name]
    value = "https://hooks.example/x?sig=abc" if name == "NOTIFY_WEBHOOK_URL" else "resolved-secret-value-0123456789"
    settings = Settings({**others, name: value})
    assert getattr(settings, group) is not None
