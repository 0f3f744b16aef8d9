"""Identity: the managed identity (App Service endpoint, system- or user-assigned) and, for RCL, optional client
credentials of the app registration the RCL portal knows.

Credentials are made once per process and kept: azure-identity caches their tokens in memory, so a token is
fetched once per resource per lifetime, never per request. The managed identity fetches one token at a time
(`OneFetchAtATime`): azure-identity does not hold concurrent callers back, so a burst of 16 invocations starting
with no token (a cold instance, or a token close to its end) sent 16 requests to the identity endpoint at once.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import AzureError

from shared.core.errors import IdentityError
from shared.core.outbound import upstream_text
from shared.core.settings import IdentitySettings, RclClientCredentials

_PUBLIC_AUTHORITY_HOSTS = ("login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn")

log = logging.getLogger("certrenew.identity")
_lock = threading.Lock()
_credentials: dict[tuple[str, ...], TokenCredential] = {}
_warned_shared_key_vault_identity = False


def managed_identity(settings: IdentitySettings) -> TokenCredential:
    """The app's managed identity; user-assigned when AZURE_CLIENT_ID is set."""
    key = ("mi", settings.client_id or "")
    with _lock:
        if key not in _credentials:
            from azure.identity import ManagedIdentityCredential  # lazy: keeps cold start short

            _credentials[key] = OneFetchAtATime(ManagedIdentityCredential(client_id=settings.client_id))
        return _credentials[key]


class OneFetchAtATime:
    """A credential whose callers ask it one at a time: the first fetches the token, the others then read it from
    the inner credential's cache (microseconds) instead of each sending a request. A token from the cache comes back
    without a wait; only a fetch holds the others, and they would otherwise all wait on a fetch of their own."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        with self._lock:
            return self.inner.get_token(*scopes, **kwargs)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        with self._lock:
            return self.inner.get_token_info(*scopes, options=options)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> OneFetchAtATime:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def new_key_vault_credential_for_rcl(settings: IdentitySettings) -> TokenCredential:
    """The identity of `key_vault_credential_for_rcl` with an empty token cache, for when the cached token is too
    close to its end (the caller closes it)."""
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=settings.rcl_key_vault_client_id or settings.client_id)


def key_vault_credential_for_rcl(settings: IdentitySettings) -> TokenCredential:
    """The identity whose Key Vault token is handed to RCL, a third party: the second user-assigned identity of
    RCL_KEY_VAULT_CLIENT_ID (Key Vault Certificates Officer only), so the token cannot read the app's secrets.
    Without it, the app's own identity, as before, with one warning per process."""
    global _warned_shared_key_vault_identity
    if settings.rcl_key_vault_client_id:
        return managed_identity(IdentitySettings(client_id=settings.rcl_key_vault_client_id))
    with _lock:
        warn = not _warned_shared_key_vault_identity
        _warned_shared_key_vault_identity = True
    if warn:
        log.warning(
            "RCL_KEY_VAULT_CLIENT_ID is not set: RCL receives a Key Vault token of the app's own identity, which can "
            "also read the app's secrets in the vault; give RCL a second identity with Key Vault Certificates "
            "Officer only (see docs/security.md)"
        )
    return managed_identity(settings)


def client_credentials(creds: RclClientCredentials) -> TokenCredential:
    """An app registration's client credentials (used for RCL when its three settings are given)."""
    key = ("sp", creds.tenant_id, creds.client_id)
    with _lock:
        if key not in _credentials:
            authority = os.environ.get("AZURE_AUTHORITY_HOST", "")
            # A private authority (sovereign proxy, local stand-in) is not in Microsoft's instance list.
            private = bool(authority) and urlsplit(authority).hostname not in _PUBLIC_AUTHORITY_HOSTS
            from azure.identity import ClientSecretCredential

            _credentials[key] = ClientSecretCredential(
                creds.tenant_id, creds.client_id, creds.client_secret, disable_instance_discovery=private
            )
        return _credentials[key]


def get_token(credential: TokenCredential, scope: str, purpose: str) -> str:
    """A bearer token for `scope`, or an IdentityError that names what the token was for."""
    return get_access_token(credential, scope, purpose).token


def get_access_token(credential: TokenCredential, scope: str, purpose: str) -> AccessToken:
    """The token with its expiry (`expires_on`, epoch seconds), or an IdentityError naming what it was for."""
    from azure.identity import CredentialUnavailableError

    try:
        return credential.get_token(scope)
    except (CredentialUnavailableError, AzureError, ValueError) as exc:
        raise IdentityError(f"Could not get a token for {purpose} (scope {scope}): {_first_line(exc)}") from None


def reset_credentials() -> None:
    """Forget the process's credentials (tests change the identity endpoint between runs)."""
    with _lock:
        for credential in _credentials.values():
            close = getattr(credential, "close", None)
            if close:
                close()
        _credentials.clear()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return upstream_text(text[0]) if text else type(exc).__name__
