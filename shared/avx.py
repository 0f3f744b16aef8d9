"""AppViewX: the synchronous certificate renew API (`PUT /certificate/renew?isSync=true`).

One `AvxClient` per process keeps one `requests` session, so connections to AVX are kept alive and reused.
The password travels only in the `password` header; it is never part of a URL, a log line or an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NameResolutionError, NewConnectionError

from shared.errors import AvxError
from shared.settings import AvxSettings

CONNECT_TIMEOUT_SECONDS = 10.0

# Remediation texts of the AVX renew page's status table, by appStatusCode.
REMEDIATION: dict[str, str] = {
    "AVX_GW_003": "Ensure that valid username and password or a valid sessionId is provided as header parameters.",
    "AVX_GW_005": "Ensure the user has ACF permission to renew certificates within the specified certificate's category.",
    "INVALID_REQUEST": "Ensure that the payload is valid.",
    "VALIDATION_ERROR_0004": "Ensure that the resourceId, serialNumber and certificateFormat.format are entered correctly.",
    "MANDATORY_FIELD_MISSING": "Please ensure either resourceId or commonName & serialNumber are entered.",
    "NO_RECORDS_FOUND": "Check and ensure that the values provided for commonName/ serialNumber/ resourceId are correct.",
    "CERT-VWF-0006": (
        "Ensure the CA supports the renew action, no work order is in progress for the certificate, the certificate "
        "does not belong to a read-only group and is not in the monitored status."
    ),
    "READ_GROUP": "Ensure the group associated with the certificate has RW permission for the user.",
    "OPEN_WORK_ORDERS_FOUND": "Trigger the request once the open work order for the certificate is completed.",
    "CERT-GEN-0055": "Ensure valid values are assigned to the mandatory validity fields of the CA connector.",
    "FAILED": "To renew, upload the private key or CSR in AppViewX, or use the regenerate option.",
    "CANNOT_PERFORM_OPERATION": "Change the status of the certificate from a monitored status to a managed status.",
    "PASSWORD_FORMAT_WRONG": "Use a password of 8+ characters with upper, lower, digit and special characters.",
}


@dataclass(frozen=True)
class AvxRenewRequest:
    """The renew payload, holding only the fields the AVX page defines."""

    resource_id: str | None = None
    common_name: str | None = None
    serial_number: str | None = None
    format: str = "PFX"
    password: str | None = field(default=None, repr=False)
    workflow_type: str | None = None

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.resource_id:
            body["resourceId"] = self.resource_id
        if self.common_name:
            body["commonName"] = self.common_name
        if self.serial_number:
            body["serialNumber"] = self.serial_number
        certificate_format: dict[str, str] = {"format": self.format}
        if self.password:
            certificate_format["password"] = self.password
        body["certificateFormat"] = certificate_format
        if self.workflow_type:
            body["workflowType"] = self.workflow_type
        return body


@dataclass(frozen=True)
class AvxRenewResult:
    resource_id: str | None
    request_id: str | None
    message: str | None
    certificate_name: str | None
    certificate_content: str | None = field(repr=False)  # base64
    private_key_content: str | None = field(repr=False)

    def ids(self) -> dict[str, str | None]:
        return {"resourceId": self.resource_id, "requestId": self.request_id, "message": self.message}


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def parse_renew_answer(status: int, body: bytes) -> AvxRenewResult:
    """Turn AVX's HTTP answer into a result, or raise the AvxError it stands for."""
    try:
        document = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        document = None
    if not isinstance(document, dict):
        document = None
    app_code = _text(document.get("appStatusCode")) if document else None
    message = _text(document.get("message")) if document else None
    if not 200 <= status < 300 or app_code:
        raise AvxError(
            message or f"AppViewX answered HTTP {status}",
            code=app_code or "AVX_BAD_RESPONSE",
            http_status=status,
            remediation=REMEDIATION.get(app_code or ""),
        )
    if document is None:
        raise AvxError(
            f"AppViewX answered HTTP {status} with a body that is not a JSON object",
            code="AVX_BAD_RESPONSE",
            http_status=status,
        )
    response = document.get("response")
    if not isinstance(response, dict):
        response = {}
    return AvxRenewResult(
        resource_id=_text(response.get("resourceId")) or _text(response.get("newCertificateId")),
        request_id=_text(response.get("requestId")),
        message=message,
        certificate_name=_text(response.get("certificateName")),
        certificate_content=_text(response.get("certificateContent")),
        private_key_content=_text(response.get("privateKeyContent")),
    )


def _never_sent(exc: requests.RequestException) -> bool:
    """True only when the request provably did not reach AVX: refused connection, DNS failure, connect timeout."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (NewConnectionError, NameResolutionError, ConnectionRefusedError)):
            return True
        linked = (getattr(current, "reason", None), current.__cause__, current.__context__, *current.args)
        stack.extend(e for e in linked if isinstance(e, BaseException))
    return False


class AvxClient:
    """The AppViewX certificate API, as the app's own AVX account."""

    def __init__(self, settings: AvxSettings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = session or requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        if settings.ca_bundle:
            self.session.verify = settings.ca_bundle

    def close(self) -> None:
        self.session.close()

    def _auth_headers(self) -> dict[str, str]:
        return {"userName": self.settings.username, "password": self.settings.password}

    def renew(self, request: AvxRenewRequest, auto_approval: bool | None = None) -> AvxRenewResult:
        params: dict[str, str] = {
            "gwsource": self.settings.gwsource,
            "isSync": "true",
            "ttl": str(self.settings.sync_ttl_seconds),
        }
        if auto_approval is not None:
            params["autoApproval"] = "true" if auto_approval else "false"
        url = f"{self.settings.api_url}/certificate/renew"
        try:
            answer = self.session.put(
                url,
                params=params,
                data=json.dumps(request.payload()),
                headers={**self._auth_headers(), "Content-Type": "application/json", "Accept": "application/json"},
                timeout=(min(CONNECT_TIMEOUT_SECONDS, self.settings.timeout_seconds), self.settings.timeout_seconds),
            )
        except requests.ReadTimeout:
            raise AvxError(
                f"AppViewX did not answer within {self.settings.timeout_seconds:g} s",
                code="AVX_TIMEOUT",
                remediation="AVX may still complete the renewal: check the certificate in AppViewX before retrying.",
            ) from None
        except requests.RequestException as exc:
            sent = not _never_sent(exc)
            tls = isinstance(exc, requests.exceptions.SSLError)
            raise AvxError(
                f"AppViewX at {self.settings.api_url} could not be reached: {type(exc).__name__}",
                code="AVX_UNREACHABLE",
                remediation=(
                    "Check AVX_CA_BUNDLE: AVX's TLS certificate is not trusted."
                    if tls
                    else "Check AVX_API_URL and the network path from the Function App to AppViewX."
                ),
                sent=sent and not tls,
            ) from None
        return parse_renew_answer(answer.status_code, answer.content)
