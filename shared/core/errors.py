"""Typed errors of the app. Every message here is safe to show: none carries a token, password or key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class CertRenewError(Exception):
    """Base of every error the app raises on purpose."""

    code = "INTERNAL_ERROR"
    remediation: str | None = None

    def __init__(self, message: str, *, code: str | None = None, remediation: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if remediation is not None:
            self.remediation = remediation


class SettingsError(CertRenewError):
    code = "CONFIGURATION_ERROR"

    def __init__(self, group: str, problems: list[str]) -> None:
        self.group = group
        self.problems = problems
        super().__init__(
            f"{group} settings are invalid: " + "; ".join(problems),
            remediation="Fix the named app settings (see docs/settings.md) and restart the app.",
        )


class IdentityError(CertRenewError):
    code = "IDENTITY_UNAVAILABLE"
    remediation = (
        "Check that the Function App has a managed identity (and that AZURE_CLIENT_ID names a user-assigned "
        "identity attached to it), or that the client-credential settings are right."
    )


class KeyVaultError(CertRenewError):
    code = "KEY_VAULT_STORE_FAILED"

    def __init__(self, message: str, *, status: int | None = None, kv_code: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.kv_code = kv_code


class AvxError(CertRenewError):
    """AppViewX answered with a failure, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        http_status: int | None = None,
        remediation: str | None = None,
        sent: bool = True,
        app_status_code: str | None = None,
    ) -> None:
        super().__init__(message, code=code, remediation=remediation)
        self.http_status = http_status
        # False only when the request provably never reached AVX (refused connection, DNS failure, failed login).
        self.sent = sent
        # AVX's own appStatusCode in its answer (None when the answer holds none, e.g. a gateway's error page).
        self.app_status_code = app_status_code


class RclError(CertRenewError):
    def __init__(self, message: str, *, code: str, http_status: int | None = None, remediation: str | None = None):
        super().__init__(message, code=code, remediation=remediation)
        self.http_status = http_status


class StateStoreError(CertRenewError):
    code = "STATE_STORE_UNAVAILABLE"
    remediation = "Check AzureWebJobsStorage and that the identity may read and write its tables."


class ResourceGraphError(CertRenewError):
    code = "RESOURCE_GRAPH_UNAVAILABLE"
    remediation = (
        "Check that the app's identity has Reader on each subscription in CONSUMER_SUBSCRIPTIONS and that "
        "RESOURCE_MANAGER_URL is this cloud's Resource Manager; the next discovery run tries again."
    )


# What to do when the code that failed gave no advice of its own: every error answer carries a remediation.
FALLBACK_REMEDIATION: dict[str, str] = {
    "AVX_BAD_RESPONSE": (
        "AppViewX failed or answered something the app cannot read: check the certificate in AppViewX (the AVX ids "
        "identify it when given) before retrying; the invocationId finds this run in Application Insights."
    ),
    "KEY_VAULT_STORE_FAILED": (
        "Check that the app's identity may import certificates into KEY_VAULT_URL (Key Vault Certificates Officer) "
        "and that the vault is reachable; the invocationId finds this run in Application Insights."
    ),
}


def default_remediation(status: int, code: str) -> str:
    if code in FALLBACK_REMEDIATION:
        return FALLBACK_REMEDIATION[code]
    if 400 <= status < 500:
        return "Correct the request as the message says and send it again (docs/webhook.md's troubleshooting table has this code)."
    return (
        "Retry later; if it keeps failing, look the invocationId up in Application Insights (docs/webhook.md's "
        "troubleshooting table has this code)."
    )


@dataclass(frozen=True)
class ApiError:
    """An error answer of the webhook: `{"error": {"code", "message", "remediation"}}` with an HTTP status. An
    error made without a remediation answers the generic one for its code or status (never none)."""

    status: int
    code: str
    message: str
    remediation: str | None = None
    details: dict[str, Any] | None = None

    def body(self, invocation_id: str | None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "remediation": self.remediation or default_remediation(self.status, self.code),
        }
        if self.details:
            error.update(self.details)
        return {"error": error, "invocationId": invocation_id}


class Rejected(Exception):
    """Bad input, refused before anything changed: carries the answer to give (parsing raises it instead of
    returning a `Result | ApiError` union; the HTTP functions' boundary answers it as it is)."""

    def __init__(self, answer: ApiError) -> None:
        super().__init__(answer.message)
        self.answer = answer


def http_answer(exc: CertRenewError | Rejected) -> ApiError:
    """The one mapping from the app's exceptions to HTTP answers, used by every HTTP function:

    - `Rejected`: its own answer (4xx, or 413 for an oversized body);
    - `StateStoreError`: 503 with its code (the tables are unreachable: retry later);
    - `KeyVaultError`: 502 `KEY_VAULT_UNAVAILABLE` (Key Vault failed or refused the app);
    - any other `CertRenewError` (settings, identity, ...): 500 with its code.

    A problem found while reading a renewal record is therefore 503 only when the table failed; a settings problem
    is 500 on every route (the status route answered 503 for it before the one boundary)."""
    if isinstance(exc, Rejected):
        return exc.answer
    if isinstance(exc, StateStoreError):
        return ApiError(503, exc.code, exc.message, exc.remediation)
    if isinstance(exc, KeyVaultError):
        return ApiError(502, "KEY_VAULT_UNAVAILABLE", exc.message, exc.remediation)
    return ApiError(500, exc.code, exc.message, exc.remediation)
