"""Which Azure resources reference a certificate of the app's vault, read from Resource Graph rows. Pure, no I/O.

Where each resource type keeps its reference (ARM references on learn.microsoft.com/azure/templates and the SDK
models; the stand-in `tests/standins/resourcegraph.py` cites each):

- Application Gateway: `properties.sslCertificates[].properties.keyVaultSecretId`, a secret URI (versionless follows
  renewals); listeners `properties.httpListeners[].properties.{hostName, hostNames[], sslCertificate.id}`.
- Front Door Standard/Premium `Microsoft.Cdn/profiles/secrets`: `properties.parameters` of type CustomerCertificate,
  `secretSource.id` (the secret's resource id), `secretVersion`, `useLatestVersion`; custom domains
  (`Microsoft.Cdn/profiles/customDomains`) name their secret in `properties.tlsSettings.secret.id`, their host in
  `properties.hostName`.
- App Service `Microsoft.Web/certificates`: `properties.keyVaultId` (the vault's resource id), `keyVaultSecretName`,
  `thumbprint` (App Service syncs the latest version); sites bind a thumbprint per host name in
  `properties.hostNameSslStates[].{name, sslState, thumbprint}`.
- API Management: `properties.hostnameConfigurations[].{keyVaultId (a secret URI), hostName, certificate.thumbprint}`.
- Container Apps `Microsoft.App/managedEnvironments/certificates`:
  `properties.certificateKeyVaultProperties.keyVaultUrl` (a secret URI), `properties.thumbprint`.

A Key Vault certificate's secret has the certificate's name and version, so a secret reference names the certificate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

APP_GATEWAY = "Microsoft.Network/applicationGateways"
FRONT_DOOR_SECRET = "Microsoft.Cdn/profiles/secrets"  # nosec B105: a resource type name, not a secret
FRONT_DOOR_DOMAIN = "Microsoft.Cdn/profiles/customDomains"
WEB_CERTIFICATE = "Microsoft.Web/certificates"
WEB_SITE = "Microsoft.Web/sites"
API_MANAGEMENT = "Microsoft.ApiManagement/service"
CONTAINER_APPS_CERTIFICATE = "Microsoft.App/managedEnvironments/certificates"
KEY_VAULT = "Microsoft.KeyVault/vaults"
TYPES = (
    APP_GATEWAY,
    FRONT_DOOR_SECRET,
    FRONT_DOOR_DOMAIN,
    WEB_CERTIFICATE,
    WEB_SITE,
    API_MANAGEMENT,
    CONTAINER_APPS_CERTIFICATE,
    KEY_VAULT,
)
_CANONICAL = {t.lower(): t for t in TYPES}

# The one query of a discovery run: the rows of every type above, only the columns used.
QUERY = (
    "resources | where type in~ ("
    + ", ".join(f"'{t.lower()}'" for t in TYPES)
    + ") | project id, name, type, subscriptionId, properties | order by id asc"
)


@dataclass(frozen=True)
class Reference:
    """One resource's use of one certificate of the app's vault."""

    consumer_id: str  # the resource id (for an Application Gateway, its sslCertificates child)
    consumer_type: str
    certificate: str  # the Key Vault certificate (= secret) name
    version: str | None  # None: versionless, follows the latest version
    host_names: tuple[str, ...] = ()
    served_thumbprint: str | None = None  # what the resource says it uses now, when it says (upper-case hex)

    @property
    def follows(self) -> str:
        return "latest" if self.version is None else "pinned"


@dataclass(frozen=True)
class VaultIdentity:
    """How references may name the app's vault: by its URI's host, or by its resource name."""

    host: str  # lower-case host[:port] of KEY_VAULT_URL
    names: frozenset[str]  # lower-case vault names known to be this vault

    @classmethod
    def of(cls, vault_url: str, rows: Iterable[Mapping[str, Any]] = ()) -> VaultIdentity:
        host = _host(vault_url)
        names = {host.split(".", 1)[0]} if "." in host and not host[0].isdigit() else set()
        for row in rows:  # the vault's own row maps its resource name to its URI (any cloud, any naming)
            if _type(row) == KEY_VAULT and _host(_text(_get(row, "properties", "vaultUri"))) == host:
                names.add(_text(row.get("name")).lower())
        return cls(host, frozenset(n for n in names if n))

    def secret_uri(self, uri: str) -> tuple[str, str | None] | None:
        """(name, version or None) of a secret URI in this vault; None for another vault or not a secret URI."""
        try:
            parts = urlsplit(uri.strip())
        except ValueError:
            return None
        segments = [s for s in parts.path.split("/") if s]
        if _host(uri.strip()) != self.host or len(segments) not in (2, 3) or segments[0].lower() != "secrets":
            return None
        return segments[1], (segments[2] if len(segments) == 3 else None)

    def secret_resource(self, resource_id: str) -> str | None:
        """The secret name of `.../providers/Microsoft.KeyVault/vaults/<vault>/secrets/<name>` in this vault."""
        segments = [s for s in resource_id.strip().split("/") if s]
        lowered = [s.lower() for s in segments]
        # ARM's form is `vaults`; Front Door's reference example writes `vault`: either is read.
        at = next((i for i, s in enumerate(lowered) if s in ("vaults", "vault")), -1)
        if at < 0 or len(segments) < at + 4:
            return None
        if lowered[at + 1] not in self.names or lowered[at + 2] != "secrets":
            return None
        return segments[at + 3]

    def vault_resource(self, resource_id: str) -> bool:
        segments = [s.lower() for s in resource_id.strip().split("/") if s]
        return len(segments) >= 2 and segments[-2] == "vaults" and segments[-1] in self.names


def _host(url: str) -> str:
    """The lower-case host[:port] of `url`, without https' default port (`:443` names the same vault)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    netloc = parts.netloc.lower()
    return netloc[: -len(":443")] if parts.scheme.lower() == "https" and netloc.endswith(":443") else netloc


def _get(row: Mapping[str, Any], *path: str) -> Any:
    value: Any = row
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _objects(value: Any) -> list[Mapping[str, Any]]:
    """The objects of an array (an item of another kind is no reference)."""
    return [item for item in _list(value) if isinstance(item, Mapping)]


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _type(row: Mapping[str, Any]) -> str:
    return _CANONICAL.get(_text(row.get("type")).lower(), _text(row.get("type")))


def _thumbprint(value: Any) -> str | None:
    return _text(value).upper() or None


def _hosts(*values: Any) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            host = _text(item).lower().rstrip(".")
            if host and host not in found:
                found.append(host)
    return tuple(found)


def app_gateway(row: Mapping[str, Any], vault: VaultIdentity) -> list[Reference]:
    listeners = [
        _object(_get(listener, "properties")) for listener in _objects(_get(row, "properties", "httpListeners"))
    ]
    found = []
    for certificate in _objects(_get(row, "properties", "sslCertificates")):
        secret = vault.secret_uri(_text(_get(certificate, "properties", "keyVaultSecretId")))
        if secret is None:
            continue
        child = f"{_text(row.get('id'))}/sslCertificates/{_text(certificate.get('name'))}"
        hosts = _hosts(
            *(
                [p.get("hostName"), p.get("hostNames")]
                for p in listeners
                if _text(_get(p, "sslCertificate", "id")).lower() == child.lower()
            )
        )
        found.append(Reference(child, APP_GATEWAY, secret[0], secret[1], hosts))
    return found


def front_door_secret(row: Mapping[str, Any], vault: VaultIdentity, domains: Mapping[str, tuple[str, ...]]) -> list:
    parameters = _object(_get(row, "properties", "parameters"))
    if _text(parameters.get("type")).lower() != "customercertificate":
        return []
    name = vault.secret_resource(_text(_get(parameters, "secretSource", "id")))
    if name is None:
        return []
    # useLatestVersion true: the secret follows the latest version, whatever secretVersion still says.
    version = None if parameters.get("useLatestVersion") is True else (_text(parameters.get("secretVersion")) or None)
    row_id = _text(row.get("id"))
    return [Reference(row_id, FRONT_DOOR_SECRET, name, version, domains.get(row_id.lower(), ()))]


def front_door_domains(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Host names per Front Door secret id (lower-case), from the custom domains that use it."""
    found: dict[str, tuple[str, ...]] = {}
    for row in rows:
        if _type(row) == FRONT_DOOR_DOMAIN:
            secret = _text(_get(row, "properties", "tlsSettings", "secret", "id")).lower()
            if secret:
                found[secret] = _hosts(found.get(secret, []), _get(row, "properties", "hostName"))
    return found


def web_certificate(row: Mapping[str, Any], vault: VaultIdentity) -> list[Reference]:
    properties = _object(_get(row, "properties"))
    name = _text(properties.get("keyVaultSecretName"))
    if not name or not vault.vault_resource(_text(properties.get("keyVaultId"))):
        return []
    served = _thumbprint(properties.get("thumbprint"))
    return [Reference(_text(row.get("id")), WEB_CERTIFICATE, name, None, (), served)]


def web_sites(row: Mapping[str, Any], certificates: list[Reference]) -> list[Reference]:
    """A site's TLS bindings of a Key Vault-backed App Service certificate: by the bound thumbprint, or (once the
    certificate moved on to a newer thumbprint) by the host name the certificate lists."""
    by_thumbprint = {c.served_thumbprint: c for c in certificates if c.served_thumbprint}
    found: dict[tuple[str, str], list[str]] = {}
    for binding in _objects(_get(row, "properties", "hostNameSslStates")):
        thumbprint = _thumbprint(binding.get("thumbprint"))
        host = _text(binding.get("name")).lower()
        if not thumbprint or _text(binding.get("sslState")).lower() in ("", "disabled"):
            continue
        certificate = by_thumbprint.get(thumbprint) or next(
            (c for c in certificates if _covers(c.host_names, host)), None
        )
        if certificate is not None:
            found.setdefault((certificate.certificate, thumbprint), []).append(host)
    return [
        Reference(_text(row.get("id")), WEB_SITE, name, None, tuple(hosts), thumbprint)
        for (name, thumbprint), hosts in found.items()
    ]


def _covers(names: tuple[str, ...], host: str) -> bool:
    return any(n == host or (n.startswith("*.") and host.split(".", 1)[-1] == n[2:]) for n in names)


def api_management(row: Mapping[str, Any], vault: VaultIdentity) -> list[Reference]:
    found = []
    for configuration in _objects(_get(row, "properties", "hostnameConfigurations")):
        secret = vault.secret_uri(_text(configuration.get("keyVaultId")))
        if secret is not None:
            served = _thumbprint(_get(configuration, "certificate", "thumbprint"))
            hosts = _hosts(configuration.get("hostName"))
            found.append(Reference(_text(row.get("id")), API_MANAGEMENT, secret[0], secret[1], hosts, served))
    return found


def container_apps_certificate(row: Mapping[str, Any], vault: VaultIdentity) -> list[Reference]:
    secret = vault.secret_uri(_text(_get(row, "properties", "certificateKeyVaultProperties", "keyVaultUrl")))
    if secret is None:
        return []
    served = _thumbprint(_get(row, "properties", "thumbprint"))
    return [Reference(_text(row.get("id")), CONTAINER_APPS_CERTIFICATE, secret[0], secret[1], (), served)]


def references(rows: list[Mapping[str, Any]], vault_url: str) -> list[Reference]:
    """Every reference to a certificate of the vault at `vault_url` in `rows` (one Resource Graph result)."""
    vault = VaultIdentity.of(vault_url, rows)
    domains = front_door_domains(rows)
    found: list[Reference] = []
    web_certificates: list[Reference] = []
    for row in rows:
        kind = _type(row)
        if kind == APP_GATEWAY:
            found += app_gateway(row, vault)
        elif kind == FRONT_DOOR_SECRET:
            found += front_door_secret(row, vault, domains)
        elif kind == WEB_CERTIFICATE:
            listed = web_certificate(row, vault)
            hosts = _hosts(_get(row, "properties", "hostNames"))
            web_certificates += [
                Reference(r.consumer_id, r.consumer_type, r.certificate, None, hosts, r.served_thumbprint)
                for r in listed
            ]
            found += listed
        elif kind == API_MANAGEMENT:
            found += api_management(row, vault)
        elif kind == CONTAINER_APPS_CERTIFICATE:
            found += container_apps_certificate(row, vault)
    for row in rows:
        if _type(row) == WEB_SITE:
            found += web_sites(row, web_certificates)
    return found
