"""AppViewX stand-in: the synchronous renew API as the AVX page documents it.

It keeps an inventory of certificates (resourceId, commonName, serialNumber, each with its current certificate and
any older ones), checks the `userName`/`password` headers, renews by issuing a new certificate from the test CA in
the requested format, can answer every row of the page's status table on demand, and records what it received.

Manual approval works as in AVX: a renewal submitted with `autoApproval=false` is answered without content and
shows in search only once `approve()` issued it, as a new certificate (new serial, later validity) beside the
current one and the older history. Search lists every certificate of a name; download serves any of them.
"""

from __future__ import annotations

import base64
import itertools
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tests.standins import certs
from tests.standins.base import RecordedRequest, Response, StandIn

# The AVX renew page's status table: (HTTP status, appStatusCode, message).
STATUS_TABLE: dict[str, tuple[int, str, str]] = {
    "AVX_GW_003": (401, "AVX_GW_003", "Authentication failed, reason - Invalid Credentials."),
    "INVALID_REQUEST": (400, "INVALID_REQUEST", "Invalid request specified."),
    "INVALID_SERIAL": (400, "VALIDATION_ERROR_0004", "Invalid serialNumber"),
    "INVALID_RESOURCE": (400, "VALIDATION_ERROR_0004", "Invalid resourceId"),
    "MANDATORY_EITHER": (
        400,
        "MANDATORY_FIELD_MISSING",
        "Either resourceId or commonName & serialNumber are Mandatory",
    ),
    "MANDATORY_CN": (400, "MANDATORY_FIELD_MISSING", "Mandatory field is missing or invalid - commonName."),
    "MANDATORY_SERIAL": (400, "MANDATORY_FIELD_MISSING", "Mandatory field is missing or invalid - serialNumber."),
    "INVALID_FORMAT": (
        400,
        "VALIDATION_ERROR_0004",
        "Validation Failure: Field format does not have the expected value",
    ),
    "AVX_GW_005": (403, "AVX_GW_005", "User does not have access to the targeted API"),
    "NO_RECORDS_FOUND": (404, "NO_RECORDS_FOUND", "No matching records found"),
    "CERT-VWF-0006": (
        406,
        "CERT-VWF-0006",
        "Life cycle action is unsupported by CA or another work order is in progress or certificate belongs to read "
        "group or is in Monitored status.",
    ),
    "READ_GROUP": (417, "READ_GROUP", "Group is given with read permission, so cannot perform any operation"),
    "OPEN_WORK_ORDERS_FOUND": (
        417,
        "OPEN_WORK_ORDERS_FOUND",
        "Since requested certificate's work order is in progress, cannot initiate another action",
    ),
    "CERT-GEN-0055": (
        417,
        "CERT-GEN-0055",
        "orderValidityUnit and orderValidityUnitValue field inside caConnectorInfo.vendorSpecificDetails or "
        "validityUnit and validityUnitValue is mandatory",
    ),
    "FAILED_NO_KEY": (
        500,
        "FAILED",
        "Certificate Renew action failed during renewal submission due to CSR or private key is not available.",
    ),
    "CANNOT_PERFORM_OPERATION": (
        500,
        "CANNOT_PERFORM_OPERATION",
        "Cannot perform the specified operation. Probable Cause: The specified action is not permitted for "
        "certificates in a monitored status.",
    ),
    "FAILED_DOWNLOAD": (
        500,
        "FAILED",
        "Certificate Renew action performed successfully but failed to download. Reason - Mandatory field is "
        "missing or invalid - format",
    ),
    "avx-common-011": (500, "avx-common-011", "Error while processing"),
}

APPROVE_PATH = "/_standin/approve/"  # the local stack's approver (see AvxStandIn.approve_waiting)
PASSWORD_FORMATS = {"PK12", "PFX", "JKS"}
ALL_FORMATS = {"CRT", "CERT", "CER", "PEM", "DER", "DERCER", "P7B", "P7C", "PK8", "PK12", "PFX", "JKS"}


def page_error(row: str) -> Response:
    status, code, message = STATUS_TABLE[row]
    return Response.json({"response": None, "message": message, "appStatusCode": code, "tags": {}}, status=status)


@dataclass
class InventoryItem:
    resource_id: str
    common_name: str
    serial_number: str  # of the current certificate
    renewals: list[certs.IssuedCertificate] = field(default_factory=list)  # issued by renewals, oldest first
    original: certs.IssuedCertificate | None = None  # the certificate it held before any renewal
    history: list[certs.IssuedCertificate] = field(default_factory=list)  # older ones, newest first

    def all_certificates(self) -> list[certs.IssuedCertificate]:
        """Newest first, as AVX search sorts by validTo descending."""
        return [*reversed(self.renewals), *([self.original] if self.original else []), *self.history]


class AvxStandIn(StandIn):
    name = "avx-standin"

    def __init__(self, username: str, password: str, ssl_context=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ssl_context)
        self.username = username
        self.password = password
        self.inventory: dict[str, InventoryItem] = {}
        self.scripted: deque[Response] = deque()
        self.pem_includes_key = True
        self.pem_key_pkcs8 = True
        self._serials = itertools.count(0x1000)
        self._renew_lock = threading.Lock()
        self.client_id = "avx-client"
        self.client_secret = "SENTINEL-avx-client-secret"
        self.sessions: set[str] = set()
        self.tokens: set[str] = set()
        self.awaiting_approval: dict[str, int] = {}
        self.renew_delay = 0.0  # seconds a renewal takes (concurrency tests)
        self.answer_delay = 0.0  # seconds between issuing a renewal and answering it (read-timeout tests)
        self.download_delay = 0.0  # seconds a download takes (concurrent completion tests)
        # Renew answers whose content cannot be used although the renewal happened:
        # "not-base64", "not-certificate" or "wrong-password".
        self.content_fault: str | None = None
        self.key_type = "rsa"  # "ed25519": renewals carry a key type Key Vault cannot hold

    # -- set-up ----------------------------------------------------------------------------------
    def add_certificate(
        self, common_name: str, serial_number: str | None = None, resource_id: str | None = None, history: int = 0
    ) -> InventoryItem:
        """A managed certificate, valid since 30 days; `history` older certificates of the same name before it."""
        now = datetime.now(UTC)
        serial = int(serial_number, 16) if serial_number else next(self._serials)
        original = certs.issue_certificate(common_name, not_before=now - timedelta(days=30), serial_number=serial)
        older = [
            certs.issue_certificate(common_name, not_before=now - timedelta(days=30 + 60 * n), days=90)
            for n in range(1, history + 1)
        ]
        item = InventoryItem(
            resource_id=resource_id or uuid.uuid4().hex[:24],
            common_name=common_name,
            serial_number=serial_number or format(serial, "X"),
            original=original,
            history=older,
        )
        with self.lock:
            self.inventory[item.resource_id] = item
        return item

    def script(self, *responses: Response) -> None:
        """Answer the next renew calls with these responses, in order."""
        with self.lock:
            self.scripted.extend(responses)

    def reset(self) -> None:
        with self.lock:
            self.scripted.clear()
            self.inventory.clear()
            self.pem_includes_key = True
            self.pem_key_pkcs8 = True
            self.sessions.clear()
            self.tokens.clear()
            self.awaiting_approval.clear()
            self.renew_delay = 0.0
            self.answer_delay = 0.0
            self.download_delay = 0.0
            self.content_fault = None
            self.key_type = "rsa"
        self.reset_records()

    def renew_calls(self) -> list[RecordedRequest]:
        return self.received("PUT", "/certificate/renew")

    def approve(self, resource_id: str) -> certs.IssuedCertificate:
        """An approver in AVX approves a renewal that was submitted with autoApproval=false."""
        item = self.inventory[resource_id]
        with self.lock:
            self.awaiting_approval[resource_id] -= 1
        return self._issue(item)

    def approve_waiting(self, resource_id: str) -> Response:
        """The local stack's approver (`POST /_standin/approve/<resourceId>`, loopback only): approves one renewal
        submitted with autoApproval=false, as an approver in AVX would. Not part of AVX's API."""
        with self.lock:
            known = resource_id in self.inventory
            waiting = self.awaiting_approval.get(resource_id, 0)
        if not known:
            return Response.json({"message": f"AppViewX holds no certificate with resourceId {resource_id}"}, 404)
        if waiting <= 0:
            return Response.json({"message": f"No renewal of {resource_id} awaits approval"}, 409)
        issued = self.approve(resource_id)
        return Response.json(
            {
                "message": f"Approved: {self.inventory[resource_id].common_name} renewed in AppViewX; run complete-pending to store it",
                "resourceId": resource_id,
                "serialNumber": format(issued.certificate.serial_number, "X"),
            }
        )

    def expire_credentials(self) -> None:
        """Sessions and service tokens lapse (AVX then answers 401)."""
        with self.lock:
            self.sessions.clear()
            self.tokens.clear()

    def _issue(self, item: InventoryItem) -> certs.IssuedCertificate:
        issued = certs.issue_certificate(item.common_name, key_type=self.key_type)
        with self._renew_lock:
            item.renewals.append(issued)
            item.serial_number = format(issued.certificate.serial_number, "X")
        return issued

    # -- protocol --------------------------------------------------------------------------------
    def handle(self, request: RecordedRequest) -> Response:
        path = request.path
        if path.startswith(APPROVE_PATH) and request.method == "POST":
            return self.approve_waiting(path[len(APPROVE_PATH) :])
        if path.endswith("/login") and request.method == "POST":
            return self._login(request)
        if path.endswith("/acctmgmt-get-service-token") and request.method == "POST":
            return self._service_token(request)
        if path.endswith("/certificate/renew") and request.method == "PUT":
            return self._renew(request)
        if not self._authenticated(request):
            return page_error("AVX_GW_003")
        if path.endswith("/certificate/search") and request.method == "POST":
            return self._search(request)
        if path.endswith("/certificate/download/format") and request.method == "POST":
            return self._download(request)
        return Response.json({"message": "Not found", "appStatusCode": "NOT_FOUND"}, status=404)

    def _authenticated(self, request: RecordedRequest) -> bool:
        with self.lock:
            if request.header("sessionId") in self.sessions or request.header("token") in self.tokens:
                return True
        return request.header("userName") == self.username and request.header("password") == self.password

    def _login(self, request: RecordedRequest) -> Response:
        if request.header("userName") != self.username or request.header("password") != self.password:
            return page_error("AVX_GW_003")
        session_id = uuid.uuid4().hex
        with self.lock:
            self.sessions.add(session_id)
        return Response.json(
            {"response": {"sessionId": session_id}, "message": "Login successful", "appStatusCode": None}
        )

    def _service_token(self, request: RecordedRequest) -> Response:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if (
            request.header("Authorization") != f"Basic {expected}"
            or b"grant_type=client_credentials" not in request.body
        ):
            return page_error("AVX_GW_003")
        token = f"avx-jwt-{uuid.uuid4().hex}"
        with self.lock:
            self.tokens.add(token)
        return Response.json({"response": token, "message": "Token generated", "appStatusCode": None})

    def _search(self, request: RecordedRequest) -> Response:
        try:
            criteria = request.json().get("input") or {}
        except (ValueError, AttributeError):
            return page_error("INVALID_REQUEST")
        objects = []
        with self.lock:
            items = list(self.inventory.values())
        for item in items:
            if criteria.get("resourceId") and criteria["resourceId"] != item.resource_id:
                continue
            if criteria.get("commonName") and criteria["commonName"] != item.common_name:
                continue
            for issued in item.all_certificates():
                objects.append(
                    {
                        "resourceId": item.resource_id,
                        "commonName": item.common_name,
                        "serialNumber": format(issued.certificate.serial_number, "X"),
                        "status": "Active",
                        "validFrom": issued.certificate.not_valid_before_utc.isoformat(),
                        "validTo": issued.certificate.not_valid_after_utc.isoformat(),
                    }
                )
        objects.sort(key=lambda o: o["validTo"], reverse=True)
        return Response.json(
            {
                "response": {"response": {"objects": objects, "totalRecords": len(objects)}},
                "message": "Success",
                "appStatusCode": None,
            }
        )

    def _download(self, request: RecordedRequest) -> Response:
        try:
            body = request.json()
        except ValueError:
            return page_error("INVALID_REQUEST")
        fmt = str(body.get("format") or "")
        if fmt not in ALL_FORMATS:
            return page_error("INVALID_FORMAT")
        with self.lock:
            item = self.inventory.get(body.get("resourceId") or "")
        if item is None:
            return page_error("NO_RECORDS_FOUND")
        if self.download_delay:
            self.stopping.wait(self.download_delay)
        for issued in item.all_certificates():
            if format(issued.certificate.serial_number, "X") == body.get("serialNumber"):
                if fmt in PASSWORD_FORMATS and not body.get("password"):
                    return page_error("INVALID_REQUEST")
                content = certs.encode(issued, fmt, body.get("password") or None)
                return Response(200, content, {"Content-Type": "application/octet-stream"})
        return page_error("NO_RECORDS_FOUND")

    def _find(self, body: dict) -> InventoryItem | None:  # type: ignore[type-arg]
        with self.lock:
            if body.get("resourceId"):
                return self.inventory.get(body["resourceId"])
            for item in self.inventory.values():
                if item.common_name == body.get("commonName") and item.serial_number == body.get("serialNumber"):
                    return item
        return None

    def _renew(self, request: RecordedRequest) -> Response:
        with self.lock:
            if self.scripted:
                return self.scripted.popleft()
        if not self._authenticated(request):
            return page_error("AVX_GW_003")
        if request.query_one("gwsource") is None:
            return page_error("INVALID_REQUEST")
        try:
            body = request.json()
        except ValueError:
            return page_error("INVALID_REQUEST")
        if not isinstance(body, dict):
            return page_error("INVALID_REQUEST")
        if not body.get("resourceId") and not (body.get("commonName") and body.get("serialNumber")):
            return page_error("MANDATORY_EITHER")
        fmt_block = body.get("certificateFormat") or {}
        fmt = str(fmt_block.get("format") or "")
        if not fmt:
            return page_error("FAILED_DOWNLOAD")
        if fmt not in ALL_FORMATS:
            return page_error("INVALID_FORMAT")
        password = fmt_block.get("password")
        if fmt in PASSWORD_FORMATS and not password:
            return page_error("INVALID_REQUEST")
        item = self._find(body)
        if item is None:
            return page_error("NO_RECORDS_FOUND")

        request_id = f"REQ{uuid.uuid4().hex[:10].upper()}"
        if request.query_one("autoApproval") == "false":
            with self.lock:
                self.awaiting_approval[item.resource_id] = self.awaiting_approval.get(item.resource_id, 0) + 1
            response = {"certificateContent": None, "resourceId": item.resource_id, "requestId": request_id}
            return Response.json(
                {"response": response, "message": "Request submitted for approval", "appStatusCode": None, "tags": {}}
            )
        if self.renew_delay:
            self.stopping.wait(self.renew_delay)
        issued = self._issue(item)
        if self.answer_delay:  # renewed, but the answer comes late (the caller's read timeout)
            self.stopping.wait(self.answer_delay)
        response: dict[str, object] = {
            "certificateContent": None,
            "privateKeyContent": "",
            "resourceId": item.resource_id,
            "requestId": request_id,
            "externalRequestId": None,
            "newCertificateUuid": str(uuid.uuid4()),
            "newCertificateId": item.resource_id,
            "keyAlreadyExist": False,
            "certificateName": item.common_name,
            "tags": None,
        }
        content = certs.encode(issued, fmt, password)
        response["certificateContent"] = base64.b64encode(content).decode()
        if self.content_fault == "not-base64":
            response["certificateContent"] = "%%not base64%%"
        elif self.content_fault == "not-certificate":
            response["certificateContent"] = base64.b64encode(b"<html>not a certificate</html>").decode()
        elif self.content_fault == "wrong-password":
            other = certs.encode(issued, "PFX", "Another-Pass-42!")
            response["certificateContent"] = base64.b64encode(other).decode()
        response["encodedFormat"] = fmt
        if fmt == "PEM" and self.pem_includes_key:
            key = certs.private_key_pem(issued, pkcs8=self.pem_key_pkcs8)
            response["privateKeyContent"] = base64.b64encode(key).decode()
        return Response.json(
            {
                "response": response,
                "message": "Certificate retrieved successfully from CA",
                "appStatusCode": None,
                "tags": {},
                "headers": None,
            }
        )
