"""What both nightly RCL runs share: their dependencies, RCL calls within the night's call budget (RCL's quota is
50 requests a week), the warning about unusable dates, and a failure described for the run's event."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from azure.core.credentials import TokenCredential

from shared.core.errors import CertRenewError, RclError
from shared.core.settings import RclSettings
from shared.rcl.client import MAX_RETRY_AFTER_SECONDS, CertificateResponse, RclClient, RclHttpError, is_retryable
from shared.rcl.decisions import MAX_CALLS_PER_NIGHT
from shared.rcl.state import RenewalStateStore
from shared.rcl.summaries import describe_names

log = logging.getLogger("certrenew.rcl")
BUDGET_EXHAUSTED = "RCL_CALL_BUDGET_EXHAUSTED"

_T = TypeVar("_T")


@dataclass(frozen=True)
class RclDependencies:
    """What both runs use; built per invocation from the process's cached clients (`shared.context`)."""

    settings: RclSettings
    client: RclClient
    state: RenewalStateStore
    rcl_credential: TokenCredential  # client credentials when RCL_CLIENT_* are set, else the managed identity
    # The token RCL acts on the vault with: RCL_KEY_VAULT_CLIENT_ID's identity, else the app's own managed identity.
    key_vault_credential: TokenCredential
    # A credential with an empty cache, for a Key Vault token fresher than the cached one.
    fresh_key_vault_credential: Callable[[], TokenCredential] | None = None
    # (certificate name, RCL's new expiry) -> the name of the listed vault it was found in; None with one vault.
    locate: Callable[[str, datetime | None], str | None] | None = None


def call_within_budget(
    deps: RclDependencies,
    night: str,
    kind: str,
    method: str,
    call: Callable[[], _T],
    sleep: Callable[[float], None],
) -> _T:
    """Make `call` once, and once more if the failure may pass, never beyond the night's budget for `kind`."""
    last_error: RclError | None = None
    for _ in range(MAX_CALLS_PER_NIGHT):
        if deps.state.reserve_call(night, kind, MAX_CALLS_PER_NIGHT) is None:
            if last_error is not None:
                raise last_error
            raise RclError(
                f"RCL was already called {MAX_CALLS_PER_NIGHT} times for {kind} this night (UTC {night}); "
                "not calling it again, to stay within RCL's quota of 50 requests a week",
                code=BUDGET_EXHAUSTED,
                remediation=(
                    "Nothing to do if this was a re-run: the next night's run calls RCL again. Look at the night's "
                    "earlier invocations for why they failed."
                ),
            )
        try:
            return call()
        except RclError as exc:
            retry_after = exc.retry_after if isinstance(exc, RclHttpError) else None
            if not is_retryable(exc, method) or (retry_after or 0) > MAX_RETRY_AFTER_SECONDS:
                raise
            last_error = exc
            delay = max(deps.settings.retry_delay_seconds, retry_after or 0)
            log.warning("RCL %s failed (%s: %s); trying once more in %.1f s", kind, exc.code, exc.message, delay)
            sleep(delay)
    # The loop returns, raises, or records an error on every pass, so an error is always there to raise.
    raise last_error or RclError("RCL was not called", code=BUDGET_EXHAUSTED)


def warn_date_problems(certificates: list[CertificateResponse], what: str) -> int:
    """One warning naming every certificate with a date RCL sent that cannot be used; how many there were."""
    troubled = [c for c in certificates if c.date_problems]
    if troubled:
        details = [f"{c.name} ({'; '.join(c.date_problems)})" for c in troubled]
        log.warning(
            "RCL's %s has %d certificate(s) with unusable dates: %s", what, len(troubled), describe_names(details)
        )
    return len(troubled)


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """A failure's stable code and a message safe to show (only the app's own errors carry their text)."""
    if isinstance(exc, CertRenewError):
        return exc.code, exc.message
    return "INTERNAL_ERROR", f"Unexpected {type(exc).__name__} in the RCL renewal run"
