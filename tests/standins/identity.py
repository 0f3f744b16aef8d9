"""The App Service managed-identity endpoint (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`, api-version 2019-08-01)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import MutableMapping

from tests.standins.base import RecordedRequest, Response, StandIn


class IdentityStandIn(StandIn):
    name = "identity-standin"

    def __init__(self, identity_header: str, token_prefix: str = "mi-token") -> None:
        super().__init__()
        self.identity_header = identity_header
        self.token_prefix = token_prefix
        self.expected_client_id: str | None = None
        self.scripted: deque[Response] = deque()
        # Seconds of life of the next tokens issued per resource (each used once); one hour otherwise.
        self.lifetimes: MutableMapping[str, deque[int]] = {}

    @property
    def endpoint(self) -> str:
        return f"{self.url}/msi/token"

    def token_for(self, resource: str) -> str:
        """The token this endpoint issues for a resource; tests look for it where it must (and must not) appear."""
        slug = resource.rstrip("/").split("//")[-1].replace(".", "-").replace("/", "-")
        return f"{self.token_prefix}-{slug}"

    def script(self, *responses: Response) -> None:
        with self.lock:
            self.scripted.extend(responses)

    def token_requests(self, resource: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.received("GET") if resource is None or r.query_one("resource") == resource]

    def handle(self, request: RecordedRequest) -> Response:
        with self.lock:
            if self.scripted:
                return self.scripted.popleft()
        if request.header("X-IDENTITY-HEADER") != self.identity_header:
            return Response.json({"error": "invalid_request", "error_description": "missing identity header"}, 400)
        if request.query_one("api-version") != "2019-08-01":
            return Response.json({"error": "invalid_request", "error_description": "unsupported api-version"}, 400)
        resource = request.query_one("resource")
        if not resource:
            return Response.json({"error": "invalid_request", "error_description": "resource is required"}, 400)
        if self.expected_client_id and request.query_one("client_id") != self.expected_client_id:
            return Response.json({"error": "invalid_request", "error_description": "identity not found"}, 400)
        with self.lock:
            planned = self.lifetimes.get(resource)
            lifetime = planned.popleft() if planned else 3600
        return Response.json(
            {
                "access_token": self.token_for(resource),
                "expires_on": str(int(time.time()) + lifetime),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": self.expected_client_id or "system-assigned",
            }
        )
