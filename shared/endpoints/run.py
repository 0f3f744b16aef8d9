"""The endpoint check run: for each configured endpoint, is the certificate it serves Key Vault's current version?

Sequences the I/O — Key Vault once per certificate (`shared.azure.keyvault`), each endpoint once (`shared.endpoints.probe`),
at most `MAX_PARALLEL` at a time — and reports each endpoint as an event (the decisions: `shared.endpoints.decisions`).
One endpoint's failure (unreachable, TLS, timeout, Key Vault) is reported for that endpoint and never stops the
others; the run as a whole is bounded even when name resolution hangs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from shared.azure.keyvault import StoredCertificate
from shared.core.errors import CertRenewError
from shared.core.settings import EndpointCheck, vault_name_of
from shared.core.telemetry import emit_event
from shared.endpoints.decisions import (
    KEY_VAULT_UNAVAILABLE,
    NOT_IN_KEY_VAULT,
    TIMEOUT,
    EndpointCheckSummary,
    EndpointResult,
    ExpectedCertificate,
    Problem,
    ServedCertificate,
    decide,
)
from shared.endpoints.probe import TIMEOUT_SECONDS, served_certificate

log = logging.getLogger("certrenew.endpoints")

MAX_PARALLEL = 8  # endpoints probed at once: enough for hundreds within the timer's limit, gentle on the worker
GRACE_SECONDS = 5.0  # beyond the probes' own deadlines, for name resolution (which no socket timeout bounds)
MAX_RUN_SECONDS = 480.0  # inside host.json's functionTimeout (10 minutes), with room to emit the events


class CurrentCertificates(Protocol):
    def current(self, name: str) -> StoredCertificate | None: ...


_T = TypeVar("_T")
Probe = Callable[[EndpointCheck], ServedCertificate | Problem]


def _expected(key_vault: CurrentCertificates, name: str) -> ExpectedCertificate | Problem:
    try:
        stored = key_vault.current(name)
    except CertRenewError as exc:  # KeyVaultError, IdentityError: the message is safe to show
        return Problem(KEY_VAULT_UNAVAILABLE, exc.message)
    if stored is None:
        return Problem(NOT_IN_KEY_VAULT, f"Key Vault holds no certificate named {name!r}")
    if not stored.thumbprint:
        return Problem(NOT_IN_KEY_VAULT, f"Key Vault's current version of {name!r} has no certificate yet")
    return ExpectedCertificate(thumbprint=stored.thumbprint, version=stored.version, expires_on=stored.expires_on)


def check_endpoints(
    checks: Sequence[EndpointCheck],
    key_vault: CurrentCertificates,
    *,
    probe: Probe = served_certificate,
    max_parallel: int = MAX_PARALLEL,
    max_run_seconds: float = MAX_RUN_SECONDS,
    probe_seconds: float = TIMEOUT_SECONDS,
    grace_seconds: float = GRACE_SECONDS,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    vaults: Callable[[str], CurrentCertificates] | None = None,
) -> EndpointCheckSummary:
    """Check every endpoint, emit one event each, and return the summary (in the configured order). A check naming
    a vault is compared with that vault's certificate (`vaults`: a listed vault's store by URL); others with
    `key_vault`'s (the default vault)."""
    names = sorted({(c.vault or "", c.certificate) for c in checks})
    # Queued probes start only when a worker is free: the bound allows for every round of MAX_PARALLEL.
    rounds = max(1, math.ceil((len(checks) + len(names)) / max_parallel))
    bound = min(rounds * (probe_seconds + grace_seconds), max_run_seconds)
    executor = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="endpoint-check")
    try:
        expected_futures: dict[tuple[str, str], Future[ExpectedCertificate | Problem]] = {
            (vault, name): executor.submit(_expected, vaults(vault) if vault and vaults else key_vault, name)
            for vault, name in names
        }
        served_futures: list[Future[ServedCertificate | Problem]] = [executor.submit(probe, c) for c in checks]
        wait([*expected_futures.values(), *served_futures], timeout=bound)
    finally:
        # Whatever is still running (a hung name lookup) is left behind, not waited for.
        executor.shutdown(wait=False, cancel_futures=True)

    expected = {
        name: _outcome(f, Problem(KEY_VAULT_UNAVAILABLE, "Key Vault did not answer in time"))
        for name, f in expected_futures.items()
    }
    results: list[EndpointResult] = []
    for check, future in zip(checks, served_futures, strict=True):
        late = Problem(TIMEOUT, f"{check.host} at {check.address}: not checked within the run's limit of {bound:g} s")
        result = decide(check, _outcome(future, late), expected[(check.vault or "", check.certificate)], now())
        results.append(result)
        name, properties = result.event()
        emit_event(name, {**properties, "vault": vault_name_of(check.vault)} if check.vault else properties)
    return EndpointCheckSummary(tuple(results))


def _outcome(future: Future[_T], late: Problem) -> _T | Problem:
    if not future.done() or future.cancelled():
        return late
    error = future.exception()
    if error is not None:  # a bug, not an endpoint's answer: reported as such, without its (unknown) text
        log.error("Endpoint check step failed unexpectedly: %s", type(error).__name__)
        return Problem("INTERNAL_ERROR", f"the check failed unexpectedly ({type(error).__name__})")
    return future.result()
