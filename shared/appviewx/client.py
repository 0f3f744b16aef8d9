"""AppViewX: the synchronous certificate renew API (`PUT /certificate/renew?isSync=true`).

One `AvxClient` per process keeps one `requests` session, so connections to AVX are kept alive and reused.
The password travels only in the `password` header; it is never part of a URL, a log line or an error.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.core.errors import AvxError
from shared.core.outbound import AnswerTooLarge, Deadline, RetryPolicy, never_sent, new_session, send, upstream_text
from shared.core.settings import AvxSettings
from shared.core.upstream import CONNECT_TIMEOUT_SECONDS, optional_text

if TYPE_CHECKING:  # requests is imported where a call is made, to keep cold start short
    import requests

# The largest AVX answer read: a certificate file or a page of 50 search results is far smaller. A bigger answer is
# refused as it streams in, never held whole.
MAX_ANSWER_BYTES = 4 * 1024 * 1024

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
    # An AVX status code and its advice, not a password (bandit B105 reads any "PASSWORD" key as one).
    "PASSWORD_FORMAT_WRONG": "Use a password of 8+ characters with upper, lower, digit and special characters.",  # nosec B105
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


def parse_renew_answer(status: int, body: bytes) -> AvxRenewResult:
    """Turn AVX's HTTP answer into a result, or raise the AvxError it stands for."""
    try:
        document = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        document = None
    if not isinstance(document, dict):
        document = None
    app_code = optional_text(document.get("appStatusCode")) if document else None
    message = optional_text(document.get("message")) if document else None
    if not 200 <= status < 300 or app_code:
        raise AvxError(
            upstream_text(message) if message else f"AppViewX answered HTTP {status}",
            code=app_code or "AVX_BAD_RESPONSE",
            http_status=status,
            remediation=REMEDIATION.get(app_code or ""),
            app_status_code=app_code,
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
        # The record AVX created for the renewal (page: resourceId = newCertificateId); newCertificateId, when given,
        # is unambiguous (an AVX that names the requested record under resourceId still names the new one there).
        resource_id=optional_text(response.get("newCertificateId")) or optional_text(response.get("resourceId")),
        request_id=optional_text(response.get("requestId")),
        message=message,
        certificate_name=optional_text(response.get("certificateName")),
        certificate_content=optional_text(response.get("certificateContent")),
        private_key_content=optional_text(response.get("privateKeyContent")),
    )


@dataclass(frozen=True)
class AvxCertificateRecord:
    """One certificate as AVX's search lists it."""

    resource_id: str | None
    common_name: str | None
    serial_number: str | None
    status: str | None
    valid_to: str | None
    valid_from: str | None = None


def parse_search_answer(body: bytes) -> list[AvxCertificateRecord]:
    try:
        document = json.loads(body.decode("utf-8"))
        objects = document["response"]["response"]["objects"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise AvxError(
            "AppViewX answered the certificate search with an unreadable body", code="AVX_BAD_RESPONSE"
        ) from None
    if not isinstance(objects, list):
        raise AvxError("AppViewX's certificate search answer holds no list", code="AVX_BAD_RESPONSE")
    return [
        AvxCertificateRecord(
            resource_id=optional_text(o.get("resourceId") or o.get("_id")),
            common_name=optional_text(o.get("commonName")),
            serial_number=optional_text(o.get("serialNumber")),
            status=optional_text(o.get("status")),
            valid_to=optional_text(o.get("validTo")),
            valid_from=optional_text(o.get("validFrom")),
        )
        for o in objects
        if isinstance(o, dict)
    ]


class _Auth:
    """How the app proves itself to AVX: password headers, a session id, or a service-account token."""

    SERVICE_TOKEN_LIFETIME = 25 * 60  # AVX tokens last 30 minutes; refresh early

    def __init__(self, client: AvxClient) -> None:
        self.client = client
        self.settings = client.settings
        self._lock = threading.Lock()
        self._value: str | None = None
        self._expires = 0.0

    def headers(self) -> dict[str, str]:
        mode = self.settings.auth_mode
        if mode == "headers":
            return {"userName": self.settings.username, "password": self.settings.password}
        with self._lock:
            if self._value is None or time.monotonic() >= self._expires:
                self._value, lifetime = self._session_id() if mode == "session" else self._service_token()
                self._expires = time.monotonic() + lifetime
            return {"sessionId" if mode == "session" else "token": self._value}

    def invalidate(self) -> bool:
        """Forget the session/token after a 401; True when a fresh one may help."""
        if self.settings.auth_mode == "headers":
            return False
        with self._lock:
            self._value = None
        return True

    def _login_call(self, path: str, **kwargs: object) -> dict[str, Any]:
        answer = self.client.call("POST", path, idempotent=True, authenticated=False, **kwargs)
        try:
            document = json.loads(answer.content.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            document = None
        if answer.status_code != 200 or not isinstance(document, dict):
            code = optional_text(document.get("appStatusCode")) if isinstance(document, dict) else None
            raise AvxError(
                f"AppViewX refused the app's {self.settings.auth_mode} login (HTTP {answer.status_code})",
                code=code or "AVX_GW_003",
                http_status=401 if answer.status_code in (200, 401) else answer.status_code,
                remediation=REMEDIATION["AVX_GW_003"],
            )
        return document

    def _session_id(self) -> tuple[str, float]:
        document = self._login_call(
            "/login",
            headers={"userName": self.settings.username, "password": self.settings.password},
            json={},
        )
        response = document.get("response")
        session_id = optional_text(response.get("sessionId")) if isinstance(response, dict) else None
        if not session_id:
            raise AvxError("AppViewX's login answer holds no sessionId", code="AVX_BAD_RESPONSE")
        return session_id, 12 * 3600.0  # kept until AVX answers 401

    def _service_token(self) -> tuple[str, float]:
        basic = base64.b64encode(f"{self.settings.client_id}:{self.settings.client_secret}".encode()).decode()
        document = self._login_call(
            "/acctmgmt-get-service-token",
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
            data="grant_type=client_credentials",
        )
        token = optional_text(document.get("response"))
        if not token:
            raise AvxError("AppViewX's service-token answer holds no token", code="AVX_BAD_RESPONSE")
        return token, float(self.SERVICE_TOKEN_LIFETIME)


class AvxClient:
    """The AppViewX certificate API, as the app's own AVX account, over one kept-alive session."""

    def __init__(self, settings: AvxSettings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = session or new_session()
        if settings.ca_bundle:
            self.session.verify = settings.ca_bundle
        self._auth = _Auth(self)

    def close(self) -> None:
        self.session.close()

    def _timeout(self) -> tuple[float, float]:
        return (min(CONNECT_TIMEOUT_SECONDS, self.settings.timeout_seconds), self.settings.timeout_seconds)

    def call(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        authenticated: bool = True,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: object,
    ) -> requests.Response:
        """One AVX call with the outbound rules; on 401 with a session or token, log in again once."""
        import requests

        url = f"{self.settings.api_url}{path}"
        query = {"gwsource": self.settings.gwsource, **(params or {})}
        policy = RetryPolicy() if idempotent else RetryPolicy(attempts=2)
        # AVX_TIMEOUT_SECONDS bounds the whole call (retries, waits and reading the answer), not each read.
        deadline = Deadline.after(self.settings.timeout_seconds)
        for attempt in (1, 2):
            merged = self._headers(headers, authenticated)
            try:
                answer = send(
                    self.session,
                    method,
                    url,
                    idempotent=idempotent,
                    policy=policy,
                    timeout=self._timeout(),
                    deadline=deadline,
                    max_bytes=MAX_ANSWER_BYTES,
                    params=query,
                    headers=merged,
                    **kwargs,
                )
            except (AnswerTooLarge, requests.RequestException) as exc:
                raise self._transport_error(exc) from None
            # A 401 was refused before AVX acted, so even the renew PUT may be sent again after a fresh login.
            if answer.status_code == 401 and authenticated and attempt == 1 and self._auth.invalidate():
                continue
            return answer
        raise AssertionError("unreachable")

    def _headers(self, headers: dict[str, str] | None, authenticated: bool) -> dict[str, str]:
        merged = {"Accept": "application/json", **(headers or {})}
        if authenticated:
            try:
                merged.update(self._auth.headers())
            except AvxError as exc:
                exc.sent = False  # the login failed: this request itself was never sent
                raise
        return merged

    def _transport_error(self, exc: Exception) -> AvxError:
        """What a failed exchange with AVX means for the caller (was the request sent? is it worth a retry?)."""
        import requests

        if isinstance(exc, AnswerTooLarge):
            return AvxError(
                f"AppViewX's answer is too large: {exc}",
                code="AVX_BAD_RESPONSE",
                remediation="Check AVX_API_URL: AppViewX's certificate API answers are far smaller.",
            )
        if isinstance(exc, requests.exceptions.InvalidHeader) and getattr(exc, "response", None) is not None:
            # AVX answered, with headers that cannot be read (an unreadable Content-Length): it may have acted.
            return AvxError("AppViewX's answer has unreadable headers", code="AVX_BAD_RESPONSE")
        if isinstance(exc, requests.ReadTimeout):
            return AvxError(
                f"AppViewX did not answer within {self.settings.timeout_seconds:g} s",
                code="AVX_TIMEOUT",
                remediation="AVX may still complete the renewal: check the certificate in AppViewX before retrying.",
            )
        tls = isinstance(exc, requests.exceptions.SSLError)
        return AvxError(
            f"AppViewX at {self.settings.api_url} could not be reached: {type(exc).__name__}",
            code="AVX_UNREACHABLE",
            remediation=(
                "Check AVX_CA_BUNDLE: AVX's TLS certificate is not trusted."
                if tls
                else "Check AVX_API_URL and the network path from the Function App to AppViewX."
            ),
            sent=not (tls or never_sent(exc)),
        )

    def renew(self, request: AvxRenewRequest, auto_approval: bool | None = None) -> AvxRenewResult:
        params = {"isSync": "true", "ttl": str(self.settings.sync_ttl_seconds)}
        if auto_approval is not None:
            params["autoApproval"] = "true" if auto_approval else "false"
        answer = self.call(
            "PUT",
            "/certificate/renew",
            idempotent=False,
            params=params,
            headers={"Content-Type": "application/json"},
            data=json.dumps(request.payload()),
        )
        return parse_renew_answer(answer.status_code, answer.content)

    def search(self, *, common_name: str | None = None, resource_id: str | None = None) -> list[AvxCertificateRecord]:
        """Certificates matching a common name or resource id, newest first."""
        criteria = {k: v for k, v in (("commonName", common_name), ("resourceId", resource_id)) if v}
        body = {"input": criteria, "filter": {"max": 50, "start": 1, "sortColumn": "validTo", "sortOrder": "desc"}}
        answer = self.call("POST", "/certificate/search", idempotent=True, json=body)
        if answer.status_code != 200:
            parse_renew_answer(answer.status_code, answer.content)  # raises the mapped AvxError
        return parse_search_answer(answer.content)

    def download(self, record: AvxCertificateRecord, fmt: str, password: str | None) -> bytes:
        """The certificate file AVX already holds (nothing is renewed again)."""
        body = {
            "format": fmt,
            "password": password or "",
            "commonName": record.common_name,
            "serialNumber": record.serial_number,
            "resourceId": record.resource_id,
            "isChainRequired": True,
        }
        answer = self.call("POST", "/certificate/download/format", idempotent=True, json=body)
        if answer.status_code != 200:
            parse_renew_answer(answer.status_code, answer.content)
        content_type = answer.headers.get("Content-Type", "")
        if "json" in content_type:
            # Some AVX versions wrap the file as base64 in {"response": ...}.
            try:
                wrapped = json.loads(answer.content.decode("utf-8")).get("response")
                return base64.b64decode(wrapped, validate=True)
            except (ValueError, AttributeError, TypeError):
                raise AvxError("AppViewX's download answer is not a file", code="AVX_BAD_RESPONSE") from None
        return answer.content
