"""A private Entra ID (Azure AD) authority: OpenID discovery and the v2.0 token endpoint's client-credentials grant.

azure-identity's `ClientSecretCredential` (MSAL underneath) talks to it when `AZURE_AUTHORITY_HOST` points here
and instance discovery is disabled. HTTPS only (MSAL refuses plain http authorities), from the tests' CA.
"""

from __future__ import annotations

import ssl
from urllib.parse import parse_qs

from tests.standins.base import RecordedRequest, Response, StandIn


class EntraStandIn(StandIn):
    name = "entra-standin"

    def __init__(self, ssl_context: ssl.SSLContext, tenant_id: str, client_id: str, client_secret: str) -> None:
        super().__init__(ssl_context)
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret

    def token_for(self, scope: str) -> str:
        slug = scope.split("//")[-1].replace(".", "-").replace("/", "-")
        return f"SENTINEL-token-entra-{self.client_id}-{slug}"

    def token_calls(self) -> list[RecordedRequest]:
        return self.received("POST", "/oauth2/v2.0/token")

    def handle(self, request: RecordedRequest) -> Response:
        base = f"{self.url}/{self.tenant_id}"
        if request.method == "GET" and request.path.endswith("/.well-known/openid-configuration"):
            return Response.json(
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "issuer": f"{base}/v2.0",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                }
            )
        if request.method == "POST" and request.path == f"/{self.tenant_id}/oauth2/v2.0/token":
            form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
            if form.get("grant_type") != "client_credentials":
                return Response.json({"error": "unsupported_grant_type"}, 400)
            if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
                return Response.json(
                    {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."},
                    401,
                )
            scope = form.get("scope", "")
            return Response.json(
                {
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "ext_expires_in": 3600,
                    "access_token": self.token_for(scope),
                }
            )
        return Response.json({"error": "not_found"}, 404)
