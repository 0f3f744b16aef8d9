"""RCL stand-in: `POST /api/v2/CertificateRenewal` and `GET /api/v2/CertificateList` as RCL's pages describe them.

It holds a subscription's certificates as CertificateResponse objects. A renewal call returns the ones due
(expiring within `due_days`) as scheduled; tests then say which really renewed with `complete_renewal`, or set
`renew_on_schedule` to have every scheduled certificate renew at once (the local stack's night).
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.standins.base import RecordedRequest, Response, StandIn

RCL_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def rcl_time(moment: datetime) -> str:
    """RCL writes ISO 8601 without a zone (UTC) and with 7 fractional digits."""
    return moment.astimezone(UTC).replace(tzinfo=None).strftime(RCL_TIME_FORMAT) + "9"


def certificate_response(
    cid: int, name: str, expiry: datetime, target: str = "Azure DNS", installed: bool = True
) -> dict[str, Any]:
    issued = expiry - timedelta(days=90)
    return {
        "id": cid,
        "name": name,
        "issueDate": rcl_time(issued),
        "expiryDate": rcl_time(expiry),
        "remoteCreateDate": rcl_time(issued + timedelta(minutes=5)) if installed else "",
        "target": target,
        "renewal": "Automatic",
        "pemUri": "",
        "pfxUri": "",
        "crtUri": "",
        "cerUri": "",
        "privateKeyUri": "",
        "certificateUri": "",
        "intermediateCertificateUri": "",
        "fullChainCertificateUri": "",
    }


class RclStandIn(StandIn):
    name = "rcl-standin"

    def __init__(self, expected_token: str, expected_key_vault_token: str | None = None) -> None:
        super().__init__()
        self.expected_token = expected_token
        self.expected_key_vault_token = expected_key_vault_token
        self.certificates: list[dict[str, Any]] = []
        self.scripted: deque[Response] = deque()
        self.due_days = 30
        self.renew_on_schedule = False
        self._next_id = 100

    # -- set-up ----------------------------------------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            self.certificates.clear()
            self.scripted.clear()
            self.renew_on_schedule = False
        self.reset_records()

    def add_certificate(
        self, name: str, expires_in_days: float, *, target: str = "Azure DNS", installed: bool = True
    ) -> dict[str, Any]:
        with self.lock:
            self._next_id += 1
            entry = certificate_response(
                self._next_id, name, datetime.now(UTC) + timedelta(days=expires_in_days), target, installed
            )
            self.certificates.append(entry)
            return entry

    def add_many(self, count: int, *, prefix: str = "bulk", first_days: float = 31, step_days: float = 0.01) -> None:
        """`count` certificates (thousands, for load), expiring from `first_days` on, `step_days` apart."""
        now = datetime.now(UTC)
        with self.lock:
            for index in range(count):
                self._next_id += 1
                expiry = now + timedelta(days=first_days + index * step_days)
                self.certificates.append(certificate_response(self._next_id, f"{prefix}{index}.contoso.com", expiry))

    def complete_renewal(self, name: str, *, installed: bool) -> dict[str, Any]:
        """RCL finished renewing `name`: a new expiry 90 days out, installed on its target or not yet."""
        with self.lock:
            for index, entry in enumerate(self.certificates):
                if entry["name"] == name:
                    renewed = certificate_response(
                        entry["id"], name, datetime.now(UTC) + timedelta(days=90), entry["target"], installed
                    )
                    self.certificates[index] = renewed
                    return renewed
        raise KeyError(name)

    def remove(self, name: str) -> None:
        with self.lock:
            self.certificates = [c for c in self.certificates if c["name"] != name]

    def script(self, *responses: Response) -> None:
        with self.lock:
            self.scripted.extend(responses)

    def renewal_calls(self) -> list[RecordedRequest]:
        return self.received("POST", "/CertificateRenewal")

    def list_calls(self) -> list[RecordedRequest]:
        return self.received("GET", "/CertificateList")

    # -- protocol --------------------------------------------------------------------------------
    def handle(self, request: RecordedRequest) -> Response:
        with self.lock:
            if self.scripted:
                return self.scripted.popleft()
        if request.header("Authorization") != f"Bearer {self.expected_token}":
            return Response.text("Unauthorized: the client id is not registered for this subscription", status=401)
        if request.method == "POST" and request.path.endswith("/api/v2/CertificateRenewal"):
            return self._renewal(request)
        if request.method == "GET" and request.path.endswith("/api/v2/CertificateList"):
            with self.lock:
                return Response.json(list(self.certificates))
        return Response.text("Not Found", status=404)

    def _renewal(self, request: RecordedRequest) -> Response:
        if request.body:
            try:
                body = request.json()
            except ValueError:
                return Response.text("Bad Request: body is not JSON", status=400)
            token = body.get("keyVaultAccessToken") if isinstance(body, dict) else None
            if token and self.expected_key_vault_token and token != self.expected_key_vault_token:
                return Response.text("Bad Request: the Key Vault access token is not valid", status=400)
        now = datetime.now(UTC)
        with self.lock:
            due = [
                dict(c)
                for c in self.certificates
                if datetime.fromisoformat(c["expiryDate"][:26]).replace(tzinfo=UTC) - now
                <= timedelta(days=self.due_days)
            ]
            if self.renew_on_schedule:
                for entry in due:
                    self.complete_renewal(entry["name"], installed=True)
        return Response.json(due)
