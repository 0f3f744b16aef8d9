"""Key Vault: import (PKCS#12 or PEM), pending-operation lookup and merge, and the current version of a certificate,
through the real CertificateClient."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.azure.identity import get_token
from shared.core.errors import KeyVaultError
from shared.core.outbound import new_session
from shared.core.pacing import WindowLimit, WindowLimiter
from shared.core.settings import KEY_VAULT_SCOPE, WORKER_DEFAULT_MAX_THREADS, KeyVaultSettings
from shared.core.timestamps import iso_utc
from shared.core.upstream import CONNECT_TIMEOUT_SECONDS

if TYPE_CHECKING:  # the Key Vault SDK is imported on first use, to keep cold start short
    from azure.keyvault.certificates import KeyVaultCertificate

MAX_TAGS = 15
MAX_TAG_VALUE = 256

# Key Vault's write budget. "Azure Key Vault service limits"
# (https://learn.microsoft.com/en-us/azure/key-vault/general/service-limits), "maximum transactions allowed in 10
# seconds, per vault per region": 300 for create secret + import certificate + import key together (4,000 for all
# other transactions). The page does not say whether the window is fixed or sliding: a sliding window of 300 in any
# 10 s, each write counted from when it is sent until a window after its answer (shared.core.pacing), is right
# under both readings and whatever the latency. Merges are paced with imports (the page does not name them; pacing
# them too costs nothing at this app's rate). A 429 that still comes (other instances and other clients share the
# vault's budget) is retried by azure-core after its Retry-After, inside the same slot.
KEY_VAULT_WRITE_LIMIT = WindowLimit(count=300, window_seconds=10.0)

_write_limiters: dict[str, WindowLimiter] = {}
_write_limiters_lock = threading.Lock()


def write_limiter(vault_url: str) -> WindowLimiter:
    """The one write limiter of `vault_url` in this process, shared by every thread and client of that vault."""
    key = vault_url.rstrip("/").lower()
    with _write_limiters_lock:
        limiter = _write_limiters.get(key)
        if limiter is None:
            limiter = _write_limiters[key] = WindowLimiter(KEY_VAULT_WRITE_LIMIT)
        return limiter


@dataclass(frozen=True)
class StoredCertificate:
    """Where a certificate now is in Key Vault, and what it is. Nothing secret."""

    id: str
    name: str
    version: str
    thumbprint: str  # SHA-1, upper-case hex
    not_before: datetime | None
    expires_on: datetime | None
    subject: str
    # The version's tags (source=appviewx, avxResourceId, ...): read, never part of an answer (to_json leaves them out).
    tags: dict[str, str] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, str | None]:
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "thumbprint": self.thumbprint,
            "notBefore": iso_utc(self.not_before),
            "expiresOn": iso_utc(self.expires_on),
            "subject": self.subject,
        }


def clean_tags(tags: dict[str, str | None]) -> dict[str, str]:
    """Key Vault takes at most 15 tags of at most 256 characters; empty values are dropped."""
    kept = {k: str(v)[:MAX_TAG_VALUE] for k, v in tags.items() if v not in (None, "")}
    return dict(list(kept.items())[:MAX_TAGS])


class KeyVaultStore:
    """The vault the app stores renewed certificates in."""

    READ_TIMEOUT_SECONDS = 60

    def __init__(
        self,
        settings: KeyVaultSettings,
        credential: TokenCredential,
        pool_size: int = WORKER_DEFAULT_MAX_THREADS,
        **client_options: object,
    ) -> None:
        self.vault_url = settings.url
        options: dict[str, object] = {
            "verify_challenge_resource": settings.verify_challenge_resource,
            # azure-core's retry policy backs off exponentially and honours Retry-After on 429/503.
            "retry_total": 4,
            "retry_backoff_factor": 0.5,
            "retry_backoff_max": 30,
        }
        options.update(client_options)
        self._credential = credential
        from azure.core.pipeline.transport import RequestsTransport
        from azure.keyvault.certificates import CertificateClient

        # A pool as large as the worker's concurrency (settings.connection_pool_size), so bursts reuse connections
        # instead of discarding and reopening them; azure-core's own default pool holds 10.
        options.setdefault(
            "transport",
            RequestsTransport(
                session=new_session(pool_size),
                session_owner=True,
                connection_timeout=CONNECT_TIMEOUT_SECONDS,
                read_timeout=self.READ_TIMEOUT_SECONDS,
            ),
        )
        self._client = CertificateClient(vault_url=settings.url, credential=credential, **options)
        self._writes = write_limiter(settings.url)

    def close(self) -> None:
        self._client.close()

    def ensure_token(self) -> None:
        """Get (or reuse the cached) Key Vault token now, so an identity failure stops a renewal before AVX."""
        get_token(self._credential, KEY_VAULT_SCOPE, "Key Vault")

    def import_pfx(self, name: str, pfx: bytes, password: str | None, tags: dict[str, str]) -> StoredCertificate:
        return self._import(name, pfx, password, tags, pem=False)

    def import_pem(self, name: str, pem: bytes, tags: dict[str, str]) -> StoredCertificate:
        """PEM with a PKCS#8 private key, then the chain (Key Vault accepts no other PEM key form)."""
        return self._import(name, pem, None, tags, pem=True)

    def _import(
        self, name: str, content: bytes, password: str | None, tags: dict[str, str], pem: bool
    ) -> StoredCertificate:
        from azure.keyvault.certificates import CertificateContentType, CertificatePolicy

        content_type = CertificateContentType.pem if pem else CertificateContentType.pkcs12
        with self._writes.slot():
            return self._call(
                name,
                "import",
                lambda: self._client.import_certificate(
                    certificate_name=name,
                    certificate_bytes=content,
                    password=password,
                    tags=tags,
                    policy=CertificatePolicy(content_type=content_type),
                ),
            )

    def has_pending_csr(self, name: str) -> bool:
        """True when Key Vault holds a pending operation (a key and CSR it made) that a signed cert can merge into."""
        try:
            operation = self._client.get_certificate_operation(name)
        except ResourceNotFoundError:
            return False
        except (HttpResponseError, ServiceRequestError, ServiceResponseError, ClientAuthenticationError) as exc:
            raise _store_error(name, "read the pending operation of", exc) from None
        return bool(operation.csr) and (operation.status or "").lower() == "inprogress"

    def current(self, name: str) -> StoredCertificate | None:
        """The current (latest) version of certificate `name`, or None when the vault has no such certificate."""
        return self._read(name, lambda: self._client.get_certificate(name))

    def version(self, name: str, version: str) -> StoredCertificate | None:
        """One version of certificate `name`, or None when the vault has no such version."""
        return self._read(name, lambda: self._client.get_certificate_version(name, version))

    def _read(self, name: str, operation: Callable[[], KeyVaultCertificate]) -> StoredCertificate | None:
        try:
            certificate = operation()
        except ResourceNotFoundError:
            return None
        except (AzureError, ValueError) as exc:
            error = _store_error(name, "read", exc)
            error.code = "KEY_VAULT_UNAVAILABLE"  # a read, not a store: nothing was changed
            raise error from None
        return describe(certificate)

    def list_page(self, page_size: int, next_link: str | None = None) -> CertificatePage:
        """One page of the vault's certificates (`list_properties_of_certificates`, Key Vault's own paging): the
        first page, or the page `next_link` (a nextLink of an earlier page) names."""
        if next_link is not None and not is_vault_list_link(self.vault_url, next_link):
            raise ForeignLink("the continuation is not a certificate list link of this vault")
        size = max(1, min(page_size, LIST_PAGE_MAX))
        try:
            pages = self._client.list_properties_of_certificates(max_page_size=size).by_page(
                continuation_token=next_link
            )
            page = next(pages, None)
            items = list(page) if page is not None else []
            following = pages.continuation_token if page is not None else None
        except (AzureError, ValueError) as exc:
            found = _store_error("", "list", exc)
            reason = found.message.split(": ", 1)[-1]
            raise KeyVaultError(
                f"Could not list the vault's certificates: {reason}",
                status=found.status,
                kv_code=found.kv_code,
                code="KEY_VAULT_UNAVAILABLE",
                remediation=found.remediation,
            ) from None
        listed = [
            ListedCertificate(
                name=p.name or "",
                thumbprint=p.x509_thumbprint.hex().upper() if p.x509_thumbprint else "",
                not_before=p.not_before,
                expires_on=p.expires_on,
                enabled=p.enabled,
                tags=dict(p.tags or {}),
                version=p.version or "",
            )
            for p in items
        ]
        return CertificatePage(listed, following or None)

    def merge(self, name: str, chain_der: list[bytes], tags: dict[str, str]) -> StoredCertificate:
        with self._writes.slot():
            return self._call(
                name, "merge", lambda: self._client.merge_certificate(name, x509_certificates=chain_der, tags=tags)
            )

    def _call(self, name: str, action: str, operation: object) -> StoredCertificate:
        try:
            certificate = operation()  # type: ignore[operator]
        except (AzureError, ValueError) as exc:  # ValueError: an answer that is not the JSON Key Vault sends
            raise _store_error(name, action, exc) from None
        return describe(certificate)


def describe(certificate: KeyVaultCertificate) -> StoredCertificate:
    props = certificate.properties
    subject = ""
    if certificate.cer:
        from cryptography import x509

        subject = x509.load_der_x509_certificate(bytes(certificate.cer)).subject.rfc4514_string()
    thumbprint = props.x509_thumbprint.hex().upper() if props.x509_thumbprint else ""
    return StoredCertificate(
        id=certificate.id or "",
        name=certificate.name or "",
        version=props.version or "",
        thumbprint=thumbprint,
        not_before=props.not_before,
        expires_on=props.expires_on,
        subject=subject,
        tags=dict(props.tags or {}),
    )


@dataclass(frozen=True)
class ListedCertificate:
    """One certificate of the vault as the list API shows it (its current version's attributes and tags)."""

    name: str
    thumbprint: str  # SHA-1, upper-case hex; "" when Key Vault gave none
    not_before: datetime | None
    expires_on: datetime | None
    enabled: bool | None
    tags: dict[str, str]
    version: str = ""  # the current version's id ("" when Key Vault gave none)


@dataclass(frozen=True)
class CertificatePage:
    certificates: list[ListedCertificate]
    next_link: str | None  # Key Vault's nextLink (a URL of this vault), None on the last page


LIST_PAGE_MAX = 25  # Key Vault's largest list page


class ForeignLink(ValueError):
    """A continuation that is not a list link of this vault (it would send the app's token elsewhere)."""


def is_vault_list_link(vault_url: str, link: str) -> bool:
    """True for `https://<this vault>/certificates?...` only: a caller-supplied continuation may never point the
    SDK (and the app's bearer token) at another host or another API."""
    try:
        vault, parts = urlsplit(vault_url), urlsplit(link)
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and parts.netloc.lower() == vault.netloc.lower()
        and parts.path.rstrip("/") == vault.path.rstrip("/") + "/certificates"
        and not parts.fragment
        and not parts.username
    )


def _store_error(name: str, action: str, exc: Exception) -> KeyVaultError:
    status = getattr(exc, "status_code", None)
    kv_code = None
    error = getattr(exc, "error", None)
    if error is not None:
        kv_code = getattr(error, "code", None)
    if isinstance(exc, ClientAuthenticationError) and status is None:
        reason = "the app could not authenticate to Key Vault"
    elif isinstance(exc, ValueError):
        reason = "Key Vault's answer could not be read"
    elif status is None:
        reason = "Key Vault could not be reached"
    else:
        reason = f"Key Vault answered {status}" + (f" {kv_code}" if kv_code else "")
    detail = getattr(error, "message", None) or ""
    message = f"Could not {action} certificate {name!r}: {reason}" + (f" ({detail[:300]})" if detail else "")
    remediation = {
        401: "Check the app's managed identity.",
        403: "Grant the app's identity the Key Vault Certificates Officer role on the vault.",
        409: "The name is in use by a soft-deleted certificate: purge or recover it, or choose another name.",
        429: "Key Vault is throttling; the app retried with backoff. Retry later.",
    }.get(status or 0, "Check the vault's availability and the app's access to it.")
    return KeyVaultError(message, status=status, kv_code=kv_code, remediation=remediation)


def b64decode_strict(text: str) -> bytes:
    """Decode base64 content from an API answer; raises ValueError on anything else."""
    return base64.b64decode("".join(text.split()), validate=True)
