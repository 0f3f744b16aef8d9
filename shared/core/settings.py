"""Every setting the app reads, read and validated in one place.

`load_settings()` parses the environment once per process. Each group (AVX, Key Vault, RCL, storage, ...) is
validated on its own, so a missing AVX setting does not break the nightly RCL run; asking for a group whose
settings are wrong raises `SettingsError` naming each setting and what is wrong with it.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar
from urllib.parse import urlsplit

from shared.core.errors import SettingsError

DEFAULT_RCL_API_URL = "https://letsencryptapi.azure-api.net/api/v2"
# An OAuth scope, not a secret (bandit B105 mistakes "TOKEN" names for passwords).
DEFAULT_RCL_TOKEN_SCOPE = "https://management.core.windows.net/.default"  # nosec B105
KEY_VAULT_SCOPE = "https://vault.azure.net/.default"
AVX_AUTH_MODES = ("headers", "session", "service-account")
# Settings whose values must never be shown (the redaction guard removes them) and that are Key Vault references in
# Azure. NOTIFY_WEBHOOK_URL: its query (sig=...) or path (Slack, Teams connectors) is the credential.
SECRET_SETTINGS = (
    "AVX_PASSWORD",
    "AVX_CLIENT_SECRET",
    "RCL_CLIENT_SECRET",
    "WEBHOOK_HMAC_SECRET",
    "IDENTITY_HEADER",
    "NOTIFY_WEBHOOK_URL",
)


@dataclass(frozen=True)
class AvxSettings:
    api_url: str
    username: str
    password: str
    gwsource: str
    sync_ttl_seconds: int
    timeout_seconds: float
    ca_bundle: str | None
    auth_mode: str = "headers"  # headers | session | service-account
    client_id: str | None = None
    client_secret: str | None = None

    def __repr__(self) -> str:  # keep the password and client secret out of any repr that reaches a log
        return f"AvxSettings(api_url={self.api_url!r}, auth_mode={self.auth_mode!r}, gwsource={self.gwsource!r})"


@dataclass(frozen=True)
class Adoption:
    """A Key Vault certificate AppViewX renewals may write although this app did not store its current version
    (AVX_ADOPTABLE_CERTIFICATES): for every caller, or only for one (an App Service authentication principal name)."""

    name: str
    caller: str | None = None


MAX_ADOPTIONS = 100


@dataclass(frozen=True)
class Vault:
    """One vault the app may write to: its URL (as listed) and its name (the first label of its host)."""

    url: str
    name: str

    @classmethod
    def of(cls, url: str) -> Vault:
        url = url.rstrip("/")
        return cls(url=url, name=vault_name_of(url))

    @property
    def host(self) -> str:
        """Scheme-less host and port (`kv.vault.azure.net`, `127.0.0.1:8443`): what tells two vaults apart."""
        return urlsplit(self.url).netloc.lower()


def vault_name_of(url: str) -> str:
    """The vault's name: the first label of its host (`kv-prod-weu` of https://kv-prod-weu.vault.azure.net)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.split(".")[0].lower()


class VaultNotListed(LookupError):
    """A vault named (by URL or name) that is not one of the app's vaults."""


@dataclass(frozen=True)
class KeyVaultSettings:
    url: str  # the default vault's (the first of KEY_VAULT_URLS, or KEY_VAULT_URL)
    verify_challenge_resource: bool
    vaults: tuple[Vault, ...] = ()  # every vault the app may write to, the default first; () means (url,)
    # Callers limited to some vaults (KEY_VAULT_CALLERS): principal id or name -> vault URLs it may write to.
    caller_vaults: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Certificates AppViewX renewals may write though this app did not store them (AVX_ADOPTABLE_CERTIFICATES).
    adoptable: tuple[Adoption, ...] = ()

    @property
    def all_vaults(self) -> tuple[Vault, ...]:
        return self.vaults or (Vault.of(self.url),)

    @property
    def default(self) -> Vault:
        return self.all_vaults[0]

    def names(self) -> str:
        return ", ".join(v.name for v in self.all_vaults)

    def vault(self, ref: str | None) -> Vault:
        """The vault `ref` names: None is the default; a URL as listed (case and a trailing / aside) or a name that is
        unique in the list. Raises VaultNotListed otherwise."""
        if ref is None or not ref.strip():
            return self.default
        text = ref.strip().rstrip("/").lower()
        if "://" in text:
            found = [v for v in self.all_vaults if v.url.lower() == text]
        else:
            found = [v for v in self.all_vaults if v.name == text]
        if len(found) != 1:
            raise VaultNotListed(ref)
        return found[0]

    def by_host(self, host: str) -> Vault | None:
        """The listed vault whose host (and port) is `host`, or None."""
        return next((v for v in self.all_vaults if v.host == host.lower()), None)

    def allowed_for(self, *callers: str | None) -> tuple[str, ...] | None:
        """The vault URLs a caller (principal id, then name) is limited to; None when it is not limited."""
        for caller in callers:
            if caller and caller in self.caller_vaults:
                return self.caller_vaults[caller]
        return None


def parse_adoptions(raw: str, problems: list[str], setting: str = "AVX_ADOPTABLE_CERTIFICATES") -> tuple[Adoption, ...]:
    """Comma-separated `name` (any caller) or `name=principal` entries; each bad entry named in `problems`."""
    found: list[Adoption] = []
    for index, entry in enumerate(part.strip() for part in raw.split(",")):
        if not entry:
            continue
        name, _, caller = (part.strip() for part in entry.partition("="))
        if not _KEY_VAULT_NAME.match(name):
            problems.append(
                f"{setting}: entry {index + 1} must start with a Key Vault certificate name, got {name[:64]!r}"
            )
        elif "=" in entry and not 0 < len(caller) <= 256:
            problems.append(f"{setting}: entry {index + 1} names no caller after '=' (or one over 256 characters)")
        else:
            found.append(Adoption(name, caller or None))
    if len(found) > MAX_ADOPTIONS:
        problems.append(f"{setting} lists {len(found)} certificates; at most {MAX_ADOPTIONS} are allowed")
    return tuple(found)


@dataclass(frozen=True)
class IdentitySettings:
    client_id: str | None  # a user-assigned identity; None means the system-assigned one
    # A second user-assigned identity whose Key Vault token is the one handed to RCL (a third party); None: the app's.
    rcl_key_vault_client_id: str | None = None


@dataclass(frozen=True)
class RclClientCredentials:
    tenant_id: str
    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return f"RclClientCredentials(tenant_id={self.tenant_id!r}, client_id={self.client_id!r})"


@dataclass(frozen=True)
class RclSettings:
    api_url: str
    token_scope: str
    client_credentials: RclClientCredentials | None  # None: use the managed identity
    send_key_vault_token: bool
    timeout_seconds: float
    verify_grace_hours: float
    warning_days: int
    # Pause before the one retry a night allows per RCL call (a Retry-After answer may ask for longer, up to a cap).
    retry_delay_seconds: float = 10.0
    # How long a renewed certificate may wait to be installed on its target before the renewal is failed.
    install_grace_hours: float = 24.0
    # Closed renewal records and nightly call counts older than this are removed by the nightly run.
    retention_days: float = 90.0
    # The largest RCL answer read (streamed; a bigger one is refused as it arrives, never held whole).
    max_response_mb: float = 64.0


@dataclass(frozen=True)
class StorageSettings:
    connection_string: str | None
    account_url: str | None  # identity-based AzureWebJobsStorage__accountName / __tableServiceUri
    renewal_table: str
    pending_table: str = "avxpending"
    idempotency_table: str = "webhookrequests"
    renewal_queue: str = "certificate-renewals"  # the asynchronous webhook's queue (its poison queue: + "-poison")
    consumer_table: str = "certconsumers"  # what the last discovery run found, per certificate


# The Functions Python worker runs synchronous functions on a ThreadPoolExecutor of PYTHON_THREADPOOL_THREAD_COUNT
# threads; unset (and on Flex Consumption, which does not take the setting), the executor's own default,
# min(32, cores + 4), which is never more than 32.
WORKER_DEFAULT_MAX_THREADS = 32


def connection_pool_size(thread_count: int | None) -> int:
    """Connections to keep per upstream host: one per worker thread. A thread holds at most one connection to a host
    at a time, so a pool this large never discards a connection ("Connection pool is full") and is never waited on;
    a larger one would only keep idle sockets. Pure."""
    return thread_count or WORKER_DEFAULT_MAX_THREADS


# Helper processes that open PFXs off the worker's interpreter lock (shared.core.pfx); 0 opens them in the worker.
PFX_OPEN_PROCESSES_DEFAULT = 1
PFX_OPEN_PROCESSES_MAX = 8


@dataclass(frozen=True)
class WorkerSettings:
    thread_count: int | None  # PYTHON_THREADPOOL_THREAD_COUNT; None: the worker's default
    pfx_processes: int = PFX_OPEN_PROCESSES_DEFAULT  # PFX_OPEN_PROCESSES

    @property
    def pool_size(self) -> int:
        """The one size of every connection pool the app keeps (AVX, Key Vault, tables)."""
        return connection_pool_size(self.thread_count)


@dataclass(frozen=True)
class WebhookSettings:
    hmac_secret: str | None = field(default=None, repr=False)
    pending_max_days: float = 7.0
    # Settled AppViewX renewal records (renewed/failed) and Key Vault version claims older than this are removed.
    record_retention_days: float = 400.0
    require_signature: bool = False
    # App Service authentication (Easy Auth) fronts the app: only then are X-MS-CLIENT-PRINCIPAL-* headers its own.
    app_service_auth: bool = False


@dataclass(frozen=True)
class TelemetrySettings:
    connection_string: str | None


NOTIFY_FORMATS = ("teams", "slack", "json")


@dataclass(frozen=True)
class NotifySettings:
    # A webhook URL carries its authorization (Logic Apps / Power Automate `sig=`, Slack's path): never shown.
    webhook_url: str | None = field(default=None, repr=False)
    format: str | None = None  # teams | slack | json; None: chosen from the URL's host (shared.notify.formats)
    budget_per_window: int = 20  # messages per 10 minutes, all instances together (shared.notify.budget)


MAX_ENDPOINT_CHECKS = 500  # each endpoint costs up to a few seconds; the timer has 10 minutes on Flex Consumption
ENDPOINT_CHECK_KEYS = ("certificate", "host", "address", "vault")
_KEY_VAULT_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class EndpointCheck:
    """One endpoint to probe: connect to `address_host:port`, ask for `host` (SNI), compare with `certificate`."""

    certificate: str  # the Key Vault certificate name the endpoint should serve
    host: str  # the DNS name clients use: sent as SNI
    address_host: str  # where to connect: a host name or an IP address
    port: int
    vault: str | None = None  # the URL of the listed vault the certificate is in; None: the default vault

    @property
    def address(self) -> str:
        host = f"[{self.address_host}]" if ":" in self.address_host else self.address_host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class SweepSettings:
    """The daily renewal sweep (`plan_renewals`): when a certificate is due, and how much one run may renew."""

    remaining_fraction: float
    before_days: float | None
    max_renewals: int


@dataclass(frozen=True)
class EndpointCheckSettings:
    endpoints: tuple[EndpointCheck, ...] = ()


DEFAULT_RESOURCE_MANAGER_URL = "https://management.azure.com"
# Rows a discovery run reads at most: Resource Graph pages (1,000 rows each) are quick; what costs is a Key Vault read
# per certificate and pinned version, well inside the timer's 10 minutes at this size.
DEFAULT_MAX_CONSUMERS = 2000
MAX_CONSUMER_SUBSCRIPTIONS = 100
_SUBSCRIPTION_ID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class ConsumerSettings:
    """Discovery of the Azure resources that use the vault's certificates (Azure Resource Graph)."""

    subscriptions: tuple[str, ...] = ()  # empty: discovery is off
    resource_manager_url: str = DEFAULT_RESOURCE_MANAGER_URL
    max_per_run: int = DEFAULT_MAX_CONSUMERS

    @property
    def enabled(self) -> bool:
        return bool(self.subscriptions)

    @property
    def scope(self) -> str:
        """The managed identity's token scope for Azure Resource Manager (this cloud's, or the stand-in's)."""
        return f"{self.resource_manager_url}/.default"


def parse_subscriptions(raw: str, problems: list[str], setting: str = "CONSUMER_SUBSCRIPTIONS") -> tuple[str, ...]:
    """Comma-separated subscription ids (GUIDs), de-duplicated in order; each bad entry named in `problems`."""
    found: list[str] = []
    for index, entry in enumerate(part.strip() for part in raw.split(",")):
        if not entry:
            continue
        if not _SUBSCRIPTION_ID.match(entry):
            problems.append(f"{setting}: entry {index + 1} must be a subscription id (a GUID), got {entry[:64]!r}")
        elif entry.lower() not in found:
            found.append(entry.lower())
    if len(found) > MAX_CONSUMER_SUBSCRIPTIONS:
        problems.append(f"{setting} lists {len(found)} subscriptions; at most {MAX_CONSUMER_SUBSCRIPTIONS} are queried")
    return tuple(found)


def is_dns_name(value: str) -> bool:
    """A host name clients can ask for by SNI: dot-separated labels of letters, digits and inner hyphens."""
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if all(label.isdigit() for label in labels):
        return False  # an IPv4 address is not a name SNI can carry
    return all(_DNS_LABEL.match(label) for label in labels)


def parse_address(value: str) -> tuple[str, int] | None:
    """`host:port`, `1.2.3.4:port` or `[::1]:port` (port optional, default 443); None when it is none of these."""
    text = value.strip()
    port_text = ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    else:
        host, _, port_text = text.partition(":")
        if not (is_dns_name(host) or _is_ipv4(host)):
            return None
    if not port_text:
        return host, 443
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        return None
    return host, int(port_text)


def _is_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _endpoint_check(entry: dict[str, object], label: str, problems: list[str]) -> EndpointCheck | None:
    """One entry of `ENDPOINT_CHECKS` as a check, or None after adding each of its problems to `problems`."""
    before = len(problems)
    host = entry.get("host")
    unknown = sorted(str(k) for k in entry if k not in ENDPOINT_CHECK_KEYS)
    if unknown:
        problems.append(f"{label}: unknown field(s) {', '.join(unknown)}; use certificate, host, address, vault")
    certificate = entry.get("certificate")
    if not isinstance(certificate, str) or not certificate.strip():
        problems.append(f"{label}: certificate (the Key Vault certificate name) is required")
    elif not _KEY_VAULT_NAME.match(certificate.strip()):
        problems.append(
            f"{label}: certificate must be a Key Vault name (1-127 letters, digits, -), got {certificate!r}"
        )
    if not isinstance(host, str) or not host.strip():
        problems.append(f"{label}: host (the DNS name the endpoint serves, sent as SNI) is required")
    elif not is_dns_name(host.strip()):
        problems.append(f"{label}: host must be a DNS name (it is sent as SNI), got {host!r}")
    address = entry.get("address")
    parsed: tuple[str, int] | None = None
    if address is not None:
        if not isinstance(address, str) or parse_address(address) is None:
            problems.append(f'{label}: address must be "<host or IP>:<port>" ([IPv6]:port), got {address!r}')
        else:
            parsed = parse_address(address)
    if len(problems) > before:
        return None
    name = str(host).strip().rstrip(".").lower()  # both are non-empty strings here (checked above)
    address_host, port = parsed or (name, 443)
    return EndpointCheck(certificate=str(certificate).strip(), host=name, address_host=address_host, port=port)


def _in_vault(
    check: EndpointCheck, value: object, vaults: KeyVaultSettings | None, label: str, problems: list[str]
) -> EndpointCheck | None:
    """The check with its `vault` (a listed vault's name or URL) resolved to the vault's URL; None after a problem."""
    if value is None:
        return check
    if not isinstance(value, str) or vaults is None:
        problems.append(f"{label}: vault must be the name or URL of one of KEY_VAULT_URLS")
        return None
    try:
        vault = vaults.vault(value)
    except VaultNotListed:
        problems.append(f"{label}: vault {value[:140]!r} is not one of the app's vaults ({vaults.names()})")
        return None
    return replace(check, vault=None if vault == vaults.default else vault.url)


def parse_endpoint_checks(
    raw: str, problems: list[str], setting: str = "ENDPOINT_CHECKS", vaults: KeyVaultSettings | None = None
) -> list[EndpointCheck]:
    """The endpoints of `ENDPOINT_CHECKS`; each problem names the entry (index and host) and is added to `problems`."""
    try:
        document = json.loads(raw)
    except ValueError as exc:
        problems.append(f"{setting} must be a JSON array of objects, but it is not valid JSON ({exc.msg})")
        return []
    if not isinstance(document, list):
        problems.append(f"{setting} must be a JSON array of objects, got a JSON {type(document).__name__}")
        return []
    if len(document) > MAX_ENDPOINT_CHECKS:
        problems.append(f"{setting} lists {len(document)} endpoints; at most {MAX_ENDPOINT_CHECKS} are checked")
        return []
    checks: list[EndpointCheck] = []
    seen: dict[tuple[str, str, str, str], int] = {}
    for index, entry in enumerate(document):
        if not isinstance(entry, dict):
            problems.append(f"{setting}[{index}] must be an object with certificate, host and optional address")
            continue
        host = entry.get("host")
        label = f"{setting}[{index}]" + (f" (host {host!r})" if isinstance(host, str) and host.strip() else "")
        check = _endpoint_check(entry, label, problems)
        if check is not None:
            check = _in_vault(check, entry.get("vault"), vaults, label, problems)
        if check is None:
            continue
        key = (check.certificate, check.host, check.address, check.vault or "")
        if key in seen:
            problems.append(f"{label}: the same endpoint as {setting}[{seen[key]}]")
            continue
        seen[key] = index
        checks.append(check)
    return checks


MAX_KEY_VAULTS = 50


def _key_vaults(r: _Reader) -> tuple[Vault, ...]:
    """KEY_VAULT_URLS (comma-separated, the first the default), or KEY_VAULT_URL alone as a one-vault list."""
    listed = r.text("KEY_VAULT_URLS")
    if not listed:
        single = r.url("KEY_VAULT_URL", required=True, https=True)
        return (Vault.of(single),) if single else ()
    vaults: list[Vault] = []
    for index, entry in enumerate(part.strip() for part in listed.split(",")):
        if not entry:
            continue
        label = f"KEY_VAULT_URLS entry {index + 1}"
        entry_reader = _Reader({label: entry})  # validated exactly as KEY_VAULT_URL is
        url = entry_reader.url(label, https=True)
        if entry_reader.problems:
            r.problems.extend(entry_reader.problems)
            continue
        vault = Vault.of(url or entry)
        same = next((v for v in vaults if v.host == vault.host), None)
        if same is not None:
            r.problems.append(f"{label} ({entry!r}) is a duplicate of {same.url!r}: list each vault once")
            continue
        vaults.append(vault)
    if not vaults and not r.problems:
        r.problems.append("KEY_VAULT_URLS is set but lists no vault")
    if len(vaults) > MAX_KEY_VAULTS:
        r.problems.append(f"KEY_VAULT_URLS lists {len(vaults)} vaults; at most {MAX_KEY_VAULTS}")
    single = r.url("KEY_VAULT_URL", https=True)
    if single and vaults and Vault.of(single).host != vaults[0].host:
        r.problems.append(
            f"KEY_VAULT_URL ({single!r}) must be the first entry of KEY_VAULT_URLS (the default vault), or be removed"
        )
    return tuple(vaults)


def parse_caller_vaults(raw: str, vaults: tuple[Vault, ...], problems: list[str]) -> dict[str, tuple[str, ...]]:
    """KEY_VAULT_CALLERS: a JSON object, caller (App Service authentication principal id or name) -> the vault names
    or URLs it may write to. Callers not named may write to every listed vault."""
    setting = "KEY_VAULT_CALLERS"
    if not raw:
        return {}
    try:
        document = json.loads(raw)
    except ValueError as exc:
        problems.append(f"{setting} must be a JSON object, but it is not valid JSON ({exc.msg})")
        return {}
    if not isinstance(document, dict):
        problems.append(
            f"{setting} must be a JSON object (caller -> list of vault names), got {type(document).__name__}"
        )
        return {}
    lookup = KeyVaultSettings(url=vaults[0].url if vaults else "", verify_challenge_resource=True, vaults=vaults)
    found: dict[str, tuple[str, ...]] = {}
    for caller, names in document.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            problems.append(f"{setting}[{caller!r}] must be a list of vault names or URLs")
            continue
        urls: list[str] = []
        for name in names:
            try:
                urls.append(lookup.vault(name).url)
            except VaultNotListed:
                problems.append(f"{setting}[{caller!r}]: {name!r} is not one of the vaults ({lookup.names()})")
        found[str(caller)] = tuple(urls)
    return found


_T = TypeVar("_T")

KEY_VAULT_REFERENCE_PREFIX = "@Microsoft.KeyVault("


def is_unresolved_key_vault_reference(value: str) -> bool:
    """App Service passes a Key Vault reference it could not resolve through unchanged, as literal text."""
    return value.strip().startswith(KEY_VAULT_REFERENCE_PREFIX)


def unresolved_reference_problem(name: str) -> str:
    # The reference itself names no secret value, but it is not quoted either: the name is what the operator needs.
    return (
        f"{name} is an unresolved Key Vault reference (@Microsoft.KeyVault(...)): App Service has not resolved it "
        "yet. Right after a deployment the identity's Key Vault Secrets User role assignment may still be "
        "propagating (wait a few minutes, then restart the app); otherwise check the secret name in the reference "
        "and that keyVaultReferenceIdentity is an identity with access to the vault"
    )


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1: the only hosts plain http may go to (local stand-ins, a sidecar)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Reader:
    """Collects every problem in a group before raising, so one deploy fixes them all."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.unresolved: set[str] = set()

    def raw(self, name: str) -> str:
        """The setting's value, stripped; "" (and a problem) while it is still an unresolved Key Vault reference."""
        value = self.env.get(name, "").strip()
        if is_unresolved_key_vault_reference(value):
            self.problems.append(unresolved_reference_problem(name))
            self.unresolved.add(name)
            return ""
        return value

    def text(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.raw(name)
        if value:
            return value
        if name in self.unresolved:  # already reported as unresolved: not "required but not set" as well
            return default
        if required and default is None:
            self.problems.append(f"{name} is required but not set")
        return default

    def url(self, name: str, default: str | None = None, *, required: bool = False, https: bool = False) -> str | None:
        value = self.text(name, default, required=required)
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            host = parts.hostname or ""
        except ValueError:
            self.problems.append(f"{name} must be an absolute https:// URL, got {value!r}")
            return value.rstrip("/")
        if parts.scheme not in ("http", "https") or not host:
            self.problems.append(f"{name} must be an absolute https:// URL, got {value!r}")
        elif https and parts.scheme != "https":
            self.problems.append(f"{name} must be an https:// URL (the Azure SDK refuses plain http), got {value!r}")
        elif parts.scheme != "https" and not is_loopback(host):
            # Credentials travel on these calls (the AVX password, RCL and Key Vault tokens): never in clear.
            self.problems.append(f"{name} must be an https:// URL (http:// only for a loopback host), got {value!r}")
        return value.rstrip("/")

    def number(
        self, name: str, default: float, convert: Callable[[str], _T], *, minimum: float = 0, maximum: float
    ) -> _T:
        """A finite number with minimum < value <= maximum (nan, inf and absurd values are refused by name)."""
        raw = self.raw(name)
        if not raw:
            return convert(str(default))
        try:
            value = convert(raw[:64])
            number = float(value)  # type: ignore[arg-type]
        except (ValueError, OverflowError):
            self.problems.append(f"{name} must be a number, got {raw[:64]!r}")
            return convert(str(default))
        if not math.isfinite(number):
            self.problems.append(f"{name} must be a finite number, got {raw!r}")
            return convert(str(default))
        if not minimum < number <= maximum:
            self.problems.append(f"{name} must be greater than {minimum:g} and at most {maximum:g}, got {raw!r}")
            return convert(str(default))
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.raw(name).lower()
        if not raw:
            return default
        if raw in ("true", "1", "yes"):
            return True
        if raw in ("false", "0", "no"):
            return False
        self.problems.append(f"{name} must be true or false, got {raw!r}")
        return default

    def secret(self, name: str) -> str | None:
        """A secret setting: unset or empty means "not configured"; whitespace only, or a Key Vault reference App
        Service could not resolve, is a configuration error (it must never quietly turn a protection off)."""
        raw = self.env.get(name)
        if raw is None or raw == "":
            return None
        value = raw.strip()
        if not value:
            self.problems.append(f"{name} is set but blank (remove it, or give it a value)")
            return None
        if is_unresolved_key_vault_reference(value):
            self.problems.append(unresolved_reference_problem(name))
            self.unresolved.add(name)
            return None
        return value

    def table_name(self, name: str, default: str) -> str:
        value = self.text(name, default) or default
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", value):
            self.problems.append(f"{name} must be 3-63 letters and digits starting with a letter, got {value!r}")
        return value

    def queue_name(self, name: str, default: str) -> str:
        """An Azure Storage queue name that still is one with "-poison" appended (the host's poison queue)."""
        value = self.text(name, default) or default
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,55}", value):
            self.problems.append(
                f"{name} must be 3-56 lowercase letters, digits and single hyphens, starting and ending with a letter "
                f"or digit (the host appends -poison), got {value!r}"
            )
        return value

    def check(self, group: str) -> None:
        if self.problems:
            raise SettingsError(group, self.problems)


class Settings:
    """The app's settings, parsed lazily per group and cached; built by `load_settings`."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = dict(env)
        self._cache: dict[str, object] = {}
        self._lock = threading.RLock()  # a group may read another (endpoint checks name vaults)

    def _group(self, name: str, build: Callable[[_Reader], _T]) -> _T:
        with self._lock:
            if name not in self._cache:
                reader = _Reader(self._env)
                value = build(reader)
                reader.check(name)
                self._cache[name] = value
            return self._cache[name]  # type: ignore[return-value]

    @property
    def avx(self) -> AvxSettings:
        def build(r: _Reader) -> AvxSettings:
            ca_bundle = r.text("AVX_CA_BUNDLE")
            if ca_bundle and not os.path.isfile(ca_bundle):
                r.problems.append(f"AVX_CA_BUNDLE must be the path of a PEM file, but {ca_bundle!r} does not exist")
            auth_mode = (r.text("AVX_AUTH_MODE", "headers") or "headers").lower()
            if auth_mode not in AVX_AUTH_MODES:
                r.problems.append(f"AVX_AUTH_MODE must be one of {', '.join(AVX_AUTH_MODES)}, got {auth_mode!r}")
            service = auth_mode == "service-account"
            return AvxSettings(
                api_url=r.url("AVX_API_URL", required=True) or "",
                username=r.text("AVX_USERNAME", required=not service) or "",
                password=r.text("AVX_PASSWORD", required=not service) or "",
                auth_mode=auth_mode,
                client_id=r.text("AVX_CLIENT_ID", required=service),
                client_secret=r.text("AVX_CLIENT_SECRET", required=service),
                gwsource=r.text("AVX_GWSOURCE", "external") or "external",
                sync_ttl_seconds=r.number("AVX_SYNC_TTL_SECONDS", 300, int, maximum=86400),
                timeout_seconds=r.number("AVX_TIMEOUT_SECONDS", 200, float, maximum=600),
                ca_bundle=ca_bundle,
            )

        return self._group("AppViewX", build)

    @property
    def key_vault(self) -> KeyVaultSettings:
        def build(r: _Reader) -> KeyVaultSettings:
            vaults = _key_vaults(r)
            return KeyVaultSettings(
                url=vaults[0].url if vaults else "",
                verify_challenge_resource=r.flag("KEY_VAULT_VERIFY_CHALLENGE_RESOURCE", True),
                vaults=vaults,
                caller_vaults=parse_caller_vaults(r.text("KEY_VAULT_CALLERS") or "", vaults, r.problems),
                adoptable=parse_adoptions(r.text("AVX_ADOPTABLE_CERTIFICATES") or "", r.problems),
            )

        return self._group("Key Vault", build)

    @property
    def identity(self) -> IdentitySettings:
        return self._group(
            "identity",
            lambda r: IdentitySettings(
                client_id=r.text("AZURE_CLIENT_ID"), rcl_key_vault_client_id=r.text("RCL_KEY_VAULT_CLIENT_ID")
            ),
        )

    @property
    def rcl(self) -> RclSettings:
        def build(r: _Reader) -> RclSettings:
            client_id, secret, tenant = (r.text(n) for n in ("RCL_CLIENT_ID", "RCL_CLIENT_SECRET", "RCL_TENANT_ID"))
            given = [
                n
                for n, v in (("RCL_CLIENT_ID", client_id), ("RCL_CLIENT_SECRET", secret), ("RCL_TENANT_ID", tenant))
                if v
            ]
            credentials = None
            if len(given) == 3:
                credentials = RclClientCredentials(
                    tenant_id=tenant or "", client_id=client_id or "", client_secret=secret or ""
                )
            elif given:
                missing = sorted({"RCL_CLIENT_ID", "RCL_CLIENT_SECRET", "RCL_TENANT_ID"} - set(given))
                r.problems.append(
                    f"{', '.join(given)} set without {', '.join(missing)}: set all three for client credentials, "
                    "or none to use the managed identity"
                )
            return RclSettings(
                api_url=r.url("RCL_API_URL", DEFAULT_RCL_API_URL) or DEFAULT_RCL_API_URL,
                token_scope=r.text("RCL_TOKEN_SCOPE", DEFAULT_RCL_TOKEN_SCOPE) or DEFAULT_RCL_TOKEN_SCOPE,
                client_credentials=credentials,
                send_key_vault_token=r.flag("RCL_SEND_KEY_VAULT_TOKEN", True),
                timeout_seconds=r.number("RCL_TIMEOUT_SECONDS", 60, float, maximum=600),
                verify_grace_hours=r.number("RCL_VERIFY_GRACE_HOURS", 24, float, maximum=24 * 30),
                warning_days=r.number("RENEWAL_WARNING_DAYS", 14, int, maximum=365),
                retry_delay_seconds=r.number("RCL_RETRY_DELAY_SECONDS", 10, float, maximum=300),
                install_grace_hours=r.number("RCL_INSTALL_GRACE_HOURS", 24, float, maximum=24 * 30),
                retention_days=r.number("RCL_RETENTION_DAYS", 90, float, minimum=1, maximum=3650),
                max_response_mb=r.number("RCL_MAX_RESPONSE_MB", 64, float, maximum=1024),
            )

        return self._group("RCL", build)

    @property
    def storage(self) -> StorageSettings:
        def build(r: _Reader) -> StorageSettings:
            connection_string = r.text("AzureWebJobsStorage")
            account_url = r.text("AzureWebJobsStorage__tableServiceUri")
            account_name = r.text("AzureWebJobsStorage__accountName")
            if not account_url and account_name:
                account_url = f"https://{account_name}.table.core.windows.net"
            if not connection_string and not account_url:
                r.problems.append(
                    "AzureWebJobsStorage is required but not set (a connection string, or "
                    "AzureWebJobsStorage__accountName for identity-based access)"
                )
            return StorageSettings(
                connection_string=connection_string,
                account_url=account_url,
                renewal_table=r.table_name("RENEWAL_STATE_TABLE", "certrenewals"),
                pending_table=r.table_name("PENDING_TABLE", "avxpending"),
                idempotency_table=r.table_name("IDEMPOTENCY_TABLE", "webhookrequests"),
                renewal_queue=r.queue_name("RENEWAL_QUEUE", "certificate-renewals"),
                consumer_table=r.table_name("CONSUMER_TABLE", "certconsumers"),
            )

        return self._group("storage", build)

    @property
    def webhook(self) -> WebhookSettings:
        def build(r: _Reader) -> WebhookSettings:
            secret = r.secret("WEBHOOK_HMAC_SECRET")
            if secret is not None and len(secret) < 16:
                r.problems.append(
                    "WEBHOOK_HMAC_SECRET must be at least 16 characters (use a random 32+ character value)"
                )
            require = r.flag("WEBHOOK_REQUIRE_SIGNATURE", False)
            if require and secret is None and "WEBHOOK_HMAC_SECRET" not in " ".join(r.problems):
                r.problems.append("WEBHOOK_REQUIRE_SIGNATURE is true but WEBHOOK_HMAC_SECRET is not set")
            # Set by the platform when App Service authentication is on ("True"/"False").
            easy_auth = r.env.get("WEBSITE_AUTH_ENABLED", "").strip().lower() == "true"
            pending_max_days = r.number("PENDING_MAX_DAYS", 7, float, maximum=365)
            retention = r.number("RENEWAL_RECORD_RETENTION_DAYS", 400, float, minimum=1, maximum=3650)
            if retention <= pending_max_days:
                r.problems.append(
                    f"RENEWAL_RECORD_RETENTION_DAYS must be more than PENDING_MAX_DAYS ({pending_max_days:g}), "
                    f"got {retention:g}"
                )
            return WebhookSettings(
                hmac_secret=secret,
                pending_max_days=pending_max_days,
                record_retention_days=retention,
                require_signature=require,
                app_service_auth=easy_auth,
            )

        return self._group("webhook", build)

    @property
    def worker(self) -> WorkerSettings:
        def build(r: _Reader) -> WorkerSettings:
            processes = r.number(
                "PFX_OPEN_PROCESSES", PFX_OPEN_PROCESSES_DEFAULT, int, minimum=-1, maximum=PFX_OPEN_PROCESSES_MAX
            )
            threads = (
                r.number("PYTHON_THREADPOOL_THREAD_COUNT", 1, int, maximum=1000)
                if r.raw("PYTHON_THREADPOOL_THREAD_COUNT")
                else None
            )
            return WorkerSettings(thread_count=threads, pfx_processes=processes)

        return self._group("worker", build)

    @property
    def telemetry(self) -> TelemetrySettings:
        return self._group(
            "telemetry", lambda r: TelemetrySettings(connection_string=r.text("APPLICATIONINSIGHTS_CONNECTION_STRING"))
        )

    @property
    def notify(self) -> NotifySettings:
        def build(r: _Reader) -> NotifySettings:
            url = r.secret("NOTIFY_WEBHOOK_URL")
            if url is not None:
                try:
                    parts = urlsplit(url)
                    scheme, host = parts.scheme.lower(), (parts.hostname or "")
                except ValueError:
                    scheme, host = "", ""
                if not host or not (scheme == "https" or (scheme == "http" and is_loopback(host))):
                    # The value is not quoted: a webhook URL carries its authorization.
                    r.problems.append(
                        "NOTIFY_WEBHOOK_URL must be an absolute https:// URL (http:// only for a loopback host); "
                        "the value is not shown because webhook URLs carry secrets"
                    )
            fmt = (r.text("NOTIFY_FORMAT") or "").lower() or None
            if fmt is not None and fmt not in NOTIFY_FORMATS:
                r.problems.append(f"NOTIFY_FORMAT must be one of {', '.join(NOTIFY_FORMATS)}, got {fmt!r}")
            budget = r.number("NOTIFY_BUDGET", 20, int, minimum=0, maximum=1000)
            return NotifySettings(webhook_url=url, format=fmt, budget_per_window=budget)

        return self._group("notify", build)

    @property
    def endpoint_checks(self) -> EndpointCheckSettings:
        def build(r: _Reader) -> EndpointCheckSettings:
            raw = r.text("ENDPOINT_CHECKS")
            if raw is None:
                return EndpointCheckSettings()
            vaults = self.key_vault if '"vault"' in raw else None  # only then: a one-vault check needs no vault list
            return EndpointCheckSettings(endpoints=tuple(parse_endpoint_checks(raw, r.problems, vaults=vaults)))

        return self._group("endpoint check", build)

    @property
    def sweep(self) -> SweepSettings:
        def build(r: _Reader) -> SweepSettings:
            before_days = None
            if r.raw("RENEW_BEFORE_DAYS"):
                before_days = r.number("RENEW_BEFORE_DAYS", 30, float, maximum=3650)
            return SweepSettings(
                remaining_fraction=r.number("RENEW_AT_REMAINING_FRACTION", 1 / 3, float, maximum=0.95),
                before_days=before_days,
                max_renewals=r.number("RENEWAL_SWEEP_MAX_RENEWALS", 10, int, maximum=500),
            )

        return self._group("renewal sweep", build)

    @property
    def consumers(self) -> ConsumerSettings:
        def build(r: _Reader) -> ConsumerSettings:
            return ConsumerSettings(
                subscriptions=parse_subscriptions(r.text("CONSUMER_SUBSCRIPTIONS") or "", r.problems),
                resource_manager_url=r.url("RESOURCE_MANAGER_URL", DEFAULT_RESOURCE_MANAGER_URL)
                or DEFAULT_RESOURCE_MANAGER_URL,
                max_per_run=r.number("CONSUMER_MAX_PER_RUN", DEFAULT_MAX_CONSUMERS, int, maximum=50000),
            )

        return self._group("consumer discovery", build)

    def secret_values(self) -> list[str]:
        """The values that must never be shown, whatever group they belong to (for the redaction guard)."""
        return [v for v in (self._env.get(n, "").strip() for n in SECRET_SETTINGS) if len(v) >= 4]


_settings: Settings | None = None
_settings_lock = threading.Lock()


def load_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    global _settings
    with _settings_lock:
        if _settings is None:
            _settings = Settings(os.environ)
        return _settings


def reset_settings() -> None:
    """Forget the cached settings (tests and the local stack change the environment between runs)."""
    global _settings
    with _settings_lock:
        _settings = None
