"""Endpoint checks, the decisions: does what an endpoint serves match Key Vault's current version? Pure, no I/O.

`shared.endpoints.probe` reads what an endpoint serves (TLS), `shared.azure.keyvault` what it should serve; `decide` compares
them, and `EndpointCheckSummary` is the run's one line per endpoint.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from shared.core.events import Event, Source
from shared.core.settings import EndpointCheck
from shared.core.timestamps import iso_utc, utc

# Why an endpoint could not be compared (the `reason` of EndpointCheckFailed).
DNS_FAILED = "ENDPOINT_DNS_FAILED"
UNREACHABLE = "ENDPOINT_UNREACHABLE"
TIMEOUT = "ENDPOINT_TIMEOUT"
TLS_FAILED = "ENDPOINT_TLS_FAILED"
NO_CERTIFICATE = "ENDPOINT_NO_CERTIFICATE"
KEY_VAULT_UNAVAILABLE = "KEY_VAULT_UNAVAILABLE"
NOT_IN_KEY_VAULT = "KEY_VAULT_CERTIFICATE_NOT_FOUND"


class Outcome(Enum):
    DEPLOYED = "deployed"
    NOT_DEPLOYED = "not deployed"
    UNCHECKED = "unchecked"


@dataclass(frozen=True)
class ServedCertificate:
    """The leaf certificate an endpoint served (read without trusting it)."""

    thumbprint: str  # SHA-1 of the DER, upper-case hex (as Key Vault shows it)
    not_after: datetime | None
    subject: str


@dataclass(frozen=True)
class ExpectedCertificate:
    """The current version of the Key Vault certificate the endpoint should serve."""

    thumbprint: str
    version: str
    expires_on: datetime | None


@dataclass(frozen=True)
class Problem:
    """Why one side of the comparison is missing: a stable code and a message naming the endpoint's side."""

    reason: str
    message: str


def sha1_thumbprint(der: bytes) -> str:
    # SHA-1 because that is the thumbprint Key Vault, App Service and Windows show; it identifies, it does not protect.
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def served_from_der(der: bytes) -> ServedCertificate:
    """What an endpoint served, from the DER of its leaf; ValueError when it is not a certificate."""
    from cryptography import x509

    certificate = x509.load_der_x509_certificate(der)
    return ServedCertificate(
        thumbprint=sha1_thumbprint(der),
        not_after=certificate.not_valid_after_utc,
        subject=certificate.subject.rfc4514_string(),
    )


def days_left(expires: datetime | None, now: datetime) -> int | None:
    """Whole days from `now` until `expires` (negative once expired); None when unknown."""
    if expires is None:
        return None
    return math.floor((utc(expires) - utc(now)).total_seconds() / 86400)


@dataclass(frozen=True)
class EndpointResult:
    """What one endpoint check came to: the event to emit and the summary line."""

    check: EndpointCheck
    outcome: Outcome
    served: ServedCertificate | None = None
    expected: ExpectedCertificate | None = None
    problem: Problem | None = None
    days_left: int | None = None  # of the served certificate

    def event(self) -> tuple[Event, dict[str, object]]:
        base: dict[str, object] = {
            "source": Source.ENDPOINT,
            "certificateName": self.check.certificate,
            "host": self.check.host,
            "address": self.check.address,
        }
        if self.outcome is Outcome.DEPLOYED and self.served is not None and self.expected is not None:
            return Event.DEPLOYED, {
                **base,
                "thumbprint": self.served.thumbprint,
                "keyVaultVersion": self.expected.version,
                "expiryDate": iso_utc(self.served.not_after),
                "daysLeft": self.days_left,
            }
        if self.outcome is Outcome.NOT_DEPLOYED and self.served is not None and self.expected is not None:
            return Event.NOT_DEPLOYED, {
                **base,
                "servedThumbprint": self.served.thumbprint,
                "servedExpiryDate": iso_utc(self.served.not_after),
                "servedSubject": self.served.subject,
                "expectedThumbprint": self.expected.thumbprint,
                "expectedVersion": self.expected.version,
                "expectedExpiryDate": iso_utc(self.expected.expires_on),
                "daysLeft": self.days_left,
            }
        problem = self.problem or Problem("UNKNOWN", "the endpoint was not checked")
        return Event.ENDPOINT_CHECK_FAILED, {**base, "reason": problem.reason, "message": problem.message}

    def line(self) -> str:
        where = f"{self.check.certificate} on {self.check.host} ({self.check.address})"
        left = "?" if self.days_left is None else str(self.days_left)
        if self.outcome is Outcome.DEPLOYED and self.served is not None:
            return f"deployed      {where}: serves the current version {self.served.thumbprint}, {left} day(s) left"
        if self.outcome is Outcome.NOT_DEPLOYED and self.served is not None and self.expected is not None:
            return (
                f"NOT deployed  {where}: serves {self.served.thumbprint} (expires "
                f"{iso_utc(self.served.not_after) or '?'}, in {left} day(s)), Key Vault's current version is "
                f"{self.expected.thumbprint}"
            )
        problem = self.problem or Problem("UNKNOWN", "the endpoint was not checked")
        return f"unchecked     {where}: {problem.reason}: {problem.message}"


def decide(
    check: EndpointCheck,
    served: ServedCertificate | Problem,
    expected: ExpectedCertificate | Problem,
    now: datetime,
) -> EndpointResult:
    """Compare what `check`'s endpoint serves with what Key Vault holds as current. An endpoint that could not be
    read is reported before a Key Vault problem: it is the endpoint's own finding."""
    if isinstance(served, Problem):
        return EndpointResult(check, Outcome.UNCHECKED, problem=served)
    left = days_left(served.not_after, now)
    if isinstance(expected, Problem):
        return EndpointResult(check, Outcome.UNCHECKED, served=served, problem=expected, days_left=left)
    outcome = Outcome.DEPLOYED if served.thumbprint == expected.thumbprint.upper() else Outcome.NOT_DEPLOYED
    return EndpointResult(check, outcome, served=served, expected=expected, days_left=left)


@dataclass(frozen=True)
class EndpointCheckSummary:
    results: tuple[EndpointResult, ...]

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    def lines(self) -> list[str]:
        head = (
            f"Endpoint check: {len(self.results)} endpoint(s): {self.count(Outcome.DEPLOYED)} serve the current "
            f"version, {self.count(Outcome.NOT_DEPLOYED)} do not, {self.count(Outcome.UNCHECKED)} could not be checked"
        )
        return [head, *(f"  {r.line()}" for r in self.results)]
