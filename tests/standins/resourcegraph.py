"""Azure Resource Graph (`POST /providers/Microsoft.ResourceGraph/resources`), over HTTPS, and the rows of each
resource type that uses a Key Vault certificate.

The protocol, from the Resource Graph REST reference "Resources - Resources" and its SDK models (QueryRequest,
QueryRequestOptions, QueryResponse; NOTES.md "Azure Resource Graph"):
- request: `?api-version=...`, `Authorization: Bearer <token for the Resource Manager audience>`, JSON body
  `{"subscriptions": [ids], "query": "<KQL>", "options": {"$top": 1..1000, "$skipToken": "...",
  "resultFormat": "objectArray"}}` (QueryRequestOptions: `$top` at most 1000, `$skipToken` "continuation token for
  pagination", resultFormat `objectArray` or `table`);
- answer: `{"totalRecords", "count", "resultTruncated": "true"|"false", "$skipToken"?, "data": [rows], "facets": []}`
  (QueryResponse: "skipToken: when present, the value can be passed to a subsequent query call (together with the
  same query and scopes used in the current request) to retrieve the next page of data"; `count` is the rows of
  this page, `totalRecords` all that matched);
- `resultTruncated` "true" comes with no `$skipToken`: paging was not possible (a `limit`/`take` in the query, or
  no column of a simple type) — or, the same page says, fewer rows were left than asked for; `count` < `totalRecords`
  tells the two apart (learn.microsoft.com/azure/governance/resource-graph/concepts/paging-results). The stand-in
  pages every query (answers "false"); tests script a truncated answer;
- errors: `{"error": {"code", "message"}}` (ARM's error shape); throttling is per user: `x-ms-user-quota-remaining`,
  `x-ms-user-quota-resets-after` (hh:mm:ss) and 429 when the quota is spent (NOTES.md). Whether a 429 also carries
  `Retry-After` the notes do not say: `throttle()` can answer with either or both, and the app waits for either.

The stand-in does not evaluate KQL (it records the query for the tests to read): it serves the rows it holds for the
requested subscriptions, in order, `page_size` at a time. A `$skipToken` is honoured only with the same query and
subscriptions it was given for (anything else: 400 BadRequest, as a token is tied to its query).

Which child types Resource Graph indexes (`microsoft.cdn/profiles/secrets`, `microsoft.app/managedenvironments/
certificates`) the references are silent on: the app treats a type that never comes back as having no consumers.

The row builders below give each type's properties at the documented paths (ARM template references,
learn.microsoft.com/azure/templates/...; SDK models on learn.microsoft.com):
- `Microsoft.Network/applicationGateways`: `sslCertificates[].properties.keyVaultSecretId` ("KeyVault Secret Id",
  versionless: "Application Gateway will sync the certificate in regular intervals", Az.Network
  New-AzApplicationGatewaySslCertificate); `httpListeners[].properties.{hostName, hostNames, sslCertificate.id}`;
- `Microsoft.Cdn/profiles/secrets`: `parameters` {type CustomerCertificate, `secretSource.id`, `secretVersion`,
  `useLatestVersion`} (templates/microsoft.cdn/profiles/secrets); `Microsoft.Cdn/profiles/customDomains`:
  `hostName`, `tlsSettings.secret.id`;
- `Microsoft.Web/certificates`: `keyVaultId` ("Key Vault Csm resource Id"), `keyVaultSecretName`, `thumbprint`,
  `hostNames` (templates/microsoft.web/certificates); `Microsoft.Web/sites`: `hostNameSslStates[]` {name, sslState
  Disabled|SniEnabled|IpBasedEnabled, thumbprint} (HostNameSslState model);
- `Microsoft.ApiManagement/service`: `hostnameConfigurations[]` {hostName, keyVaultId "Url to the KeyVault Secret
  ... If absolute Url containing version is provided, auto-update of ssl certificate will not work", certificate
  {thumbprint, expiry}} (HostnameConfiguration model);
- `Microsoft.App/managedEnvironments/certificates`: `certificateKeyVaultProperties` {identity, keyVaultUrl "URL
  pointing to the Azure Key Vault secret that holds the certificate"} (CertificateKeyVaultProperties model);
- `Microsoft.KeyVault/vaults`: `vaultUri`.

Pages read (through the `search` tool's docs corpus):
learn.microsoft.com/javascript/api/@azure/arm-resourcegraph/resourcegraphmodels.queryresponse,
learn.microsoft.com/dotnet/api/azure.resourcemanager.resourcegraph.models.resourcequeryresult (and
...armresourcegraphmodelfactory.resourcequeryrequestoptions: skipToken, top, skip, resultFormat),
learn.microsoft.com/powershell/module/az.network/new-azapplicationgatewaysslcertificate,
learn.microsoft.com/azure/templates/microsoft.cdn/profiles/secrets,
learn.microsoft.com/azure/templates/microsoft.web/2020-10-01/certificates,
learn.microsoft.com/dotnet/api/microsoft.azure.management.websites.models.hostnamesslstate,
learn.microsoft.com/javascript/api/@azure/arm-apimanagement/hostnameconfiguration,
learn.microsoft.com/azure/templates/microsoft.app/managedenvironments/certificates and
learn.microsoft.com/javascript/api/@azure/arm-appcontainers/certificatekeyvaultproperties.
Not confirmed by a page: Front Door custom domains' `tlsSettings.secret.id` and Container Apps certificates' read-only
`thumbprint` (the app uses them only when present), and the Front Door reference page's own example, which names the
vault segment `vault` rather than `vaults` (the app reads either).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from typing import Any

from tests.standins.base import RecordedRequest, Response, StandIn

PATH = "/providers/Microsoft.ResourceGraph/resources"
API_VERSIONS = ("2021-03-01", "2022-10-01", "2024-04-01")
TOP_MAX = 1000


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response.json({"error": {"code": code, "message": message}}, status, headers)


class ResourceGraphStandIn(StandIn):
    name = "resourcegraph-standin"

    def __init__(self, ssl_context: Any, expected_token: str) -> None:
        super().__init__(ssl_context)
        self.expected_token = expected_token
        self.rows: list[dict[str, Any]] = []
        self.page_size = TOP_MAX  # rows per page at most, whatever $top asks (tests make it small to page)
        self.scripted: deque[Response] = deque()
        self._tokens: dict[str, tuple[str, tuple[str, ...], int]] = {}
        self._serial = itertools.count(1)
        self._token_lock = threading.Lock()

    def reset(self) -> None:
        with self.lock:
            self.rows.clear()
            self.scripted.clear()
            self._tokens.clear()
            self.page_size = TOP_MAX
        self.reset_records()

    def add(self, *rows: dict[str, Any]) -> None:
        with self.lock:
            self.rows.extend(rows)

    def throttle(self, times: int = 1, *, retry_after: str | None = "1", resets_after: str | None = "00:00:01") -> None:
        """The next `times` queries are answered 429 (the per-user quota is spent)."""
        headers = {"x-ms-user-quota-remaining": "0"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        if resets_after is not None:
            headers["x-ms-user-quota-resets-after"] = resets_after
        with self.lock:
            for _ in range(times):
                self.scripted.append(
                    _error(429, "RateLimiting", "Please provide below info when asking for support", headers)
                )

    def queries(self) -> list[RecordedRequest]:
        return self.received("POST", PATH)

    def handle(self, request: RecordedRequest) -> Response:
        if request.method != "POST" or request.path != PATH:
            return _error(404, "NotFound", f"stand-in serves only POST {PATH}")
        if request.query_one("api-version") not in API_VERSIONS:
            return _error(400, "InvalidApiVersionParameter", "unsupported api-version")
        if request.header("Authorization") != f"Bearer {self.expected_token}":
            return _error(401, "AuthenticationFailed", "missing or wrong bearer token")
        with self.lock:
            if self.scripted:
                return self.scripted.popleft()
        try:
            body = request.json()
        except ValueError:
            return _error(400, "BadRequest", "the body is not JSON")
        problem = self._problem(body)
        if problem:
            return _error(400, "BadRequest", problem)
        return self._page(body)

    @staticmethod
    def _problem(body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("query"), str) or not body["query"].strip():
            return "query is required"
        subscriptions = body.get("subscriptions")
        if (
            not isinstance(subscriptions, list)
            or not subscriptions
            or not all(isinstance(s, str) for s in subscriptions)
        ):
            return "subscriptions must be a non-empty array of subscription ids"
        options = body.get("options") or {}
        top = options.get("$top", 100)
        if not isinstance(top, int) or not 1 <= top <= TOP_MAX:
            return f"$top must be from 1 to {TOP_MAX}"
        if options.get("resultFormat", "objectArray") != "objectArray":
            return "the stand-in serves resultFormat objectArray only"
        return None

    def _page(self, body: dict[str, Any]) -> Response:
        subscriptions = tuple(s.lower() for s in body["subscriptions"])
        options = body.get("options") or {}
        offset = 0
        token = options.get("$skipToken")
        if token is not None:
            with self._token_lock:
                issued = self._tokens.get(token)
            if issued is None or issued[:2] != (body["query"], subscriptions):
                return _error(400, "BadRequest", "$skipToken is not valid for this query and these subscriptions")
            offset = issued[2]
        with self.lock:
            matching = [r for r in self.rows if str(r.get("subscriptionId", "")).lower() in subscriptions]
            size = min(int(options.get("$top", 100)), self.page_size)
        page = matching[offset : offset + size]
        answer: dict[str, Any] = {
            "totalRecords": len(matching),
            "count": len(page),
            "resultTruncated": "false",
            "data": page,
            "facets": [],
        }
        if offset + size < len(matching):
            next_token = f"ew0KICAiJGlkIjogIjEiLA0K{next(self._serial)}"
            with self._token_lock:
                self._tokens[next_token] = (body["query"], subscriptions, offset + size)
            answer["$skipToken"] = next_token
        headers = {"x-ms-user-quota-remaining": "14", "x-ms-user-quota-resets-after": "00:00:05"}
        return Response(
            200, json.dumps(answer).encode(), {"Content-Type": "application/json; charset=utf-8", **headers}
        )


# -- rows of each consumer type (paths as documented; see the module docstring) ------------------------------------
def _resource_id(subscription: str, provider_path: str, group: str = "rg-web") -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{provider_path}"


def _row(resource_id: str, kind: str, properties: dict[str, Any]) -> dict[str, Any]:
    subscription = resource_id.split("/")[2]
    return {
        "id": resource_id,
        "name": resource_id.rsplit("/", 1)[-1],
        "type": kind.lower(),  # Resource Graph answers types in lower case
        "subscriptionId": subscription,
        "properties": properties,
    }


def key_vault(subscription: str, name: str, vault_uri: str) -> dict[str, Any]:
    resource_id = _resource_id(subscription, f"Microsoft.KeyVault/vaults/{name}", "rg-security")
    return _row(resource_id, "Microsoft.KeyVault/vaults", {"vaultUri": vault_uri.rstrip("/") + "/"})


def key_vault_secret_id(subscription: str, vault_name: str, secret: str) -> str:
    return _resource_id(subscription, f"Microsoft.KeyVault/vaults/{vault_name}/secrets/{secret}", "rg-security")


def app_gateway(subscription: str, name: str, certificates: dict[str, str], listeners: dict[str, str]) -> dict:
    """`certificates`: sslCertificate name -> keyVaultSecretId; `listeners`: host name -> sslCertificate name."""
    resource_id = _resource_id(subscription, f"Microsoft.Network/applicationGateways/{name}")
    return _row(
        resource_id,
        "Microsoft.Network/applicationGateways",
        {
            "sslCertificates": [
                {
                    "name": cert,
                    "id": f"{resource_id}/sslCertificates/{cert}",
                    "properties": {"keyVaultSecretId": secret_id, "provisioningState": "Succeeded"},
                }
                for cert, secret_id in certificates.items()
            ],
            "httpListeners": [
                {
                    "name": f"listener-{index}",
                    "properties": {
                        "protocol": "Https",
                        "hostName": host,
                        "sslCertificate": {"id": f"{resource_id}/sslCertificates/{cert}"},
                    },
                }
                for index, (host, cert) in enumerate(listeners.items())
            ],
        },
    )


def front_door_secret(
    subscription: str, profile: str, name: str, secret_resource_id: str, *, version: str | None, use_latest: bool
) -> dict[str, Any]:
    resource_id = _resource_id(subscription, f"Microsoft.Cdn/profiles/{profile}/secrets/{name}")
    parameters: dict[str, Any] = {
        "type": "CustomerCertificate",
        "secretSource": {"id": secret_resource_id},
        "useLatestVersion": use_latest,
        "subjectAlternativeNames": [],
    }
    if version is not None:
        parameters["secretVersion"] = version
    return _row(resource_id, "Microsoft.Cdn/profiles/secrets", {"parameters": parameters})


def front_door_domain(subscription: str, profile: str, name: str, host: str, secret_row_id: str) -> dict[str, Any]:
    resource_id = _resource_id(subscription, f"Microsoft.Cdn/profiles/{profile}/customDomains/{name}")
    properties = {
        "hostName": host,
        "tlsSettings": {"certificateType": "CustomerCertificate", "secret": {"id": secret_row_id}},
    }
    return _row(resource_id, "Microsoft.Cdn/profiles/customDomains", properties)


def web_certificate(
    subscription: str, name: str, vault_resource_id: str, secret: str, thumbprint: str, hosts: list[str]
) -> dict[str, Any]:
    resource_id = _resource_id(subscription, f"Microsoft.Web/certificates/{name}")
    properties = {
        "keyVaultId": vault_resource_id,
        "keyVaultSecretName": secret,
        "keyVaultSecretStatus": "Succeeded",
        "thumbprint": thumbprint,
        "hostNames": hosts,
    }
    return _row(resource_id, "Microsoft.Web/certificates", properties)


def web_site(subscription: str, name: str, bindings: dict[str, str | None]) -> dict[str, Any]:
    """`bindings`: host name -> bound thumbprint (None: no TLS binding)."""
    resource_id = _resource_id(subscription, f"Microsoft.Web/sites/{name}")
    states = [{"name": f"{name}.azurewebsites.net", "sslState": "Disabled", "hostType": "Standard"}]
    states += [
        {"name": host, "sslState": "SniEnabled" if thumb else "Disabled", "thumbprint": thumb, "hostType": "Standard"}
        for host, thumb in bindings.items()
    ]
    return _row(resource_id, "Microsoft.Web/sites", {"hostNameSslStates": states, "state": "Running"})


def api_management(subscription: str, name: str, host: str, secret_uri: str, thumbprint: str) -> dict[str, Any]:
    resource_id = _resource_id(subscription, f"Microsoft.ApiManagement/service/{name}")
    configuration = {
        "type": "Proxy",
        "hostName": host,
        "keyVaultId": secret_uri,
        "certificateSource": "KeyVault",
        "certificate": {"thumbprint": thumbprint, "subject": f"CN={host}"},
    }
    return _row(resource_id, "Microsoft.ApiManagement/service", {"hostnameConfigurations": [configuration]})


def container_apps_certificate(subscription: str, environment: str, name: str, secret_uri: str) -> dict[str, Any]:
    resource_id = _resource_id(subscription, f"Microsoft.App/managedEnvironments/{environment}/certificates/{name}")
    properties = {"certificateKeyVaultProperties": {"identity": "system", "keyVaultUrl": secret_uri}}
    return _row(resource_id, "Microsoft.App/managedEnvironments/certificates", properties)
