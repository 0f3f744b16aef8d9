"""AppViewX stand-in: the synchronous renew API as the AVX renew page documents it, point by point.

"page N" cites line N of `shared/reference/avx-certificate-renew-sync-api.txt`; NOTES cites
`shared/reference/NOTES.md`, section "AppViewX (AVX) certificate API". The page's tables are data in `avx_page.py`.
Where the page is silent the stand-in says so ("SILENT") and picks one reading; a knob gives the other where the
app's correctness depends on it, and the tests run the app under both.

The model:
- AVX holds certificate RECORDS, each one certificate: resourceId (a Mongo ObjectId, page 117), commonName,
  serialNumber, validity, status, and the "Before you begin" conditions (page 7-15) that refuse a renewal.
- A renewal creates a NEW record (page 188: response.resourceId is "Identifier of the certificate record that has
  been created"; the sample names it "<renewed cert ID>" and repeats it as newCertificateId beside a
  newCertificateUuid, page 332-336; NOTES: "A renewal is a new certificate record ... the record that was renewed
  stays in the inventory with the old certificate"). The renewed record keeps its certificate and its status
  (SILENT on whether AVX changes the old record's status: it is left as it was).
- Manual approval (`autoApproval=false`, page 17, 95-103) answers without content (NOTES) and the new record shows
  in search only once someone approves (NOTES; `approve`). While it waits, the old record has an open work order
  (page 11, 290). SILENT on the status and the body of that answer: the stand-in answers the page's 202 row (page
  237) and names the reserved new record (`approval_answer_names`; "requested" and "none" are the other readings).
- Renewing a record that AVX has since renewed (an old resourceId) is accepted and creates another new record
  (SILENT: AVX decides; the app passes a refusal on as it would any other).
- Search (`POST /certificate/search`) and download (`POST /certificate/download/format`) are as NOTES describes
  them; search lists `validFrom` unless `search_lists_valid_from` is off (NOTES lists commonName, serialNumber,
  resourceId, status, validTo "..." - SILENT on validFrom).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import struct
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from cryptography.hazmat.primitives import serialization

from tests.standins import certs
from tests.standins.avx_page import (
    ACCEPTED_MESSAGE,
    ALL_FORMATS,
    PASSWORD_FORMATS,
    STATUS_TABLE,
)
from tests.standins.base import RecordedRequest, Response, StandIn

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["ALL_FORMATS", "APPROVE_PATH", "PASSWORD_FORMATS", "STATUS_TABLE", "AvxCertificate", "AvxStandIn"]

APPROVE_PATH = "/_standin/approve/"  # the local stack's approver (see AvxStandIn.approve_waiting); not AVX's API
MONGO_ID = re.compile(r"[0-9a-f]{24}")  # page 117: "Mongo ID of the certificate" (an ObjectId: 24 hex digits)
HEX_SERIAL = re.compile(r"[0-9A-Fa-f:]{1,128}")


def page_error(row: str) -> Response:
    """The answer of one row of the page's status table (page 234-312), body shaped as page 224-232 describes."""
    status, code, message = STATUS_TABLE[row]
    return Response.json({"response": None, "message": message, "appStatusCode": code, "tags": {}}, status=status)


def new_resource_id() -> str:
    return uuid.uuid4().hex[:24]


@dataclass
class AvxCertificate:
    """One AVX certificate record. `issued` is None while the renewal that creates it waits for approval."""

    resource_id: str
    common_name: str
    issued: certs.IssuedCertificate | None
    listed_serial: str | None = None  # the serial as AVX writes it (hex); from `issued` when None
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "Active"
    request_id: str | None = None  # the work order that created it
    renewed_from: str | None = None  # stand-in bookkeeping: the record this one renews (SILENT whether AVX lists it)
    renewals: list[AvxCertificate] = field(default_factory=list)  # records made by renewing this one, oldest first
    approved: bool = True  # listed in search and downloadable
    work_orders: int = 0  # open work orders (page 11): awaiting approval, or being processed
    # "Before you begin" (page 7-15): all met unless a test says otherwise.
    acf_permission: bool = True  # page 7
    state: Literal["managed", "monitored", "revoked"] = "managed"  # page 8
    ca_renews: bool = True  # page 9, 14, 282
    group_rw: bool = True  # page 10
    has_key: bool = True  # page 12
    ca_validity: bool = True  # page 296
    ca_reachable: bool = True  # page 15

    @property
    def serial_number(self) -> str | None:
        if self.listed_serial:
            return self.listed_serial
        return format(self.issued.certificate.serial_number, "X") if self.issued else None

    @property
    def certificate(self) -> x509.Certificate:
        assert self.issued is not None, f"record {self.resource_id} waits for approval: no certificate yet"
        return self.issued.certificate


# Which renewal condition (page 7-15) refuses with which row, in the order they are checked.
_REFUSALS: tuple[tuple[str, str], ...] = (
    ("acf_permission", "AVX_GW_005"),
    ("group_rw", "READ_GROUP"),
    ("ca_renews", "CERT-VWF-0006"),
    ("ca_validity", "CERT-GEN-0055"),
    ("has_key", "FAILED_NO_KEY"),
    ("ca_reachable", "avx-common-011"),
)


class AvxStandIn(StandIn):
    name = "avx-standin"

    def __init__(self, username: str, password: str, ssl_context=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ssl_context)
        self.username = username
        self.password = password
        self.inventory: dict[str, AvxCertificate] = {}
        self.scripted: deque[Response] = deque()
        self._serials = itertools.count(0x1000)
        self._renew_lock = threading.Lock()
        self.client_id = "avx-client"
        self.client_secret = "SENTINEL-avx-client-secret"
        self.sessions: set[str] = set()
        self.tokens: set[str] = set()
        self._defaults()

    def _defaults(self) -> None:
        self.pem_includes_key = True  # NOTES/sample page 331: privateKeyContent beside a PEM certificate
        self.pem_key_pkcs8 = True
        self.renew_delay = 0.0  # seconds a renewal takes (concurrency tests)
        self.answer_delay = 0.0  # seconds between issuing a renewal and answering it (read-timeout tests)
        self.download_delay = 0.0  # seconds a download takes (concurrent completion tests)
        # Renew answers whose content cannot be used although the renewal happened:
        # "not-base64", "not-certificate" or "wrong-password".
        self.content_fault: str | None = None
        self.key_type = "rsa"  # "ed25519": renewals carry a key type Key Vault cannot hold
        # SILENT readings (see the module docstring): what a manual-approval answer names, whether search lists
        # validFrom.
        self.approval_answer_names: Literal["new", "requested", "none"] = "new"
        self.search_lists_valid_from = True

    # -- set-up ----------------------------------------------------------------------------------
    def add_certificate(
        self, common_name: str, serial_number: str | None = None, resource_id: str | None = None, history: int = 0
    ) -> AvxCertificate:
        """A managed certificate valid since 30 days; `history` older records of the same name before it, each the
        record the next one renewed (as AVX keeps them: page 188, NOTES)."""
        now = datetime.now(UTC)
        older: AvxCertificate | None = None
        for n in range(history, 0, -1):
            issued = certs.issue_certificate(common_name, not_before=now - timedelta(days=30 + 60 * n), days=90)
            record = AvxCertificate(new_resource_id(), common_name, issued, renewed_from=older and older.resource_id)
            self._keep(record, older)
            older = record
        serial = int(serial_number.replace(":", ""), 16) if serial_number else next(self._serials)
        issued = certs.issue_certificate(common_name, not_before=now - timedelta(days=30), serial_number=serial)
        record = AvxCertificate(
            resource_id or new_resource_id(),
            common_name,
            issued,
            listed_serial=serial_number,
            renewed_from=older.resource_id if older else None,
        )
        self._keep(record, older)
        return record

    def _keep(self, record: AvxCertificate, renewed: AvxCertificate | None) -> None:
        with self.lock:
            self.inventory[record.resource_id] = record
            if renewed is not None:
                renewed.renewals.append(record)

    def script(self, *responses: Response) -> None:
        """Answer the next renew calls with these responses, in order."""
        with self.lock:
            self.scripted.extend(responses)

    def reset(self) -> None:
        with self.lock:
            self.scripted.clear()
            self.inventory.clear()
            self.sessions.clear()
            self.tokens.clear()
            self._defaults()
        self.reset_records()

    def renew_calls(self) -> list[RecordedRequest]:
        return self.received("PUT", "/certificate/renew")

    def remove(self, resource_id: str) -> None:
        """Someone deletes a record in AVX."""
        with self.lock:
            del self.inventory[resource_id]

    def latest(self, resource_id: str) -> AvxCertificate:
        """The newest record in the renewal line that starts at `resource_id` (itself when never renewed)."""
        record = self.inventory[resource_id]
        while record.renewals and record.renewals[-1].approved:
            record = record.renewals[-1]
        return record

    def renew_outside(self, resource_id: str, not_before: datetime | None = None) -> AvxCertificate:
        """Someone renews a record in AVX, outside this app (auto-approved): a new record, valid from `not_before`
        (default: 5 minutes ago)."""
        record = self._reserve(self.inventory[resource_id], f"REQ{uuid.uuid4().hex[:10].upper()}")
        return self._issue(record, not_before)

    def _reserve(self, renewed: AvxCertificate, request_id: str) -> AvxCertificate:
        """The new record a renewal creates (page 188), not listed until it is issued."""
        record = AvxCertificate(new_resource_id(), renewed.common_name, None, request_id=request_id, approved=False)
        record.renewed_from = renewed.resource_id
        self._keep(record, renewed)
        return record

    def _issue(self, record: AvxCertificate, not_before: datetime | None = None) -> AvxCertificate:
        issued = certs.issue_certificate(record.common_name, key_type=self.key_type, not_before=not_before)
        with self._renew_lock:
            record.issued = issued
            record.approved = True
        return record

    # -- approval (page 17: "Users can approve specific requests") ------------------------------
    def waiting(self, key: str) -> AvxCertificate | None:
        """The oldest renewal waiting for approval, by the renewed record's id, the new record's id or requestId."""
        with self.lock:
            records = list(self.inventory.values())
        for record in records:
            if record.approved or record.issued is not None:
                continue
            if key in (record.resource_id, record.renewed_from, record.request_id):
                return record
        return None

    def approve(self, key: str) -> AvxCertificate:
        """An approver in AVX approves a renewal submitted with autoApproval=false: its new record is issued and
        shows in search (NOTES). `key`: the renewed record's resourceId, the new record's, or the requestId."""
        record = self.waiting(key)
        if record is None:
            raise KeyError(f"no renewal of {key} awaits approval")
        with self.lock:
            renewed = self.inventory.get(record.renewed_from or "")
            if renewed is not None:
                renewed.work_orders -= 1
        return self._issue(record)

    def approve_waiting(self, key: str) -> Response:
        """The local stack's approver (`POST /_standin/approve/<resourceId>`, loopback only). Not AVX's API."""
        with self.lock:
            known = key in self.inventory
        if not known:
            return Response.json({"message": f"AppViewX holds no certificate with resourceId {key}"}, 404)
        if self.waiting(key) is None:
            return Response.json({"message": f"No renewal of {key} awaits approval"}, 409)
        record = self.approve(key)
        return Response.json(
            {
                "message": f"Approved: {record.common_name} renewed in AppViewX as record {record.resource_id}; run "
                "complete-pending to store it",
                "resourceId": record.resource_id,
                "renewedResourceId": record.renewed_from,
                "serialNumber": record.serial_number,
            }
        )

    def expire_credentials(self) -> None:
        """Sessions and service tokens lapse (AVX then answers 401, NOTES)."""
        with self.lock:
            self.sessions.clear()
            self.tokens.clear()

    # -- protocol --------------------------------------------------------------------------------
    def handle(self, request: RecordedRequest) -> Response:
        path = request.path
        if path.startswith(APPROVE_PATH) and request.method == "POST":
            return self.approve_waiting(path[len(APPROVE_PATH) :])
        if path.endswith("/login") and request.method == "POST":
            return self._login(request)
        if path.endswith("/acctmgmt-get-service-token") and request.method == "POST":
            return self._service_token(request)
        if path.endswith("/certificate/renew") and request.method == "PUT":  # page 22-23
            return self._renew(request)
        if not self._authenticated(request):
            return page_error("AVX_GW_003")
        if path.endswith("/certificate/search") and request.method == "POST":
            return self._search(request)
        if path.endswith("/certificate/download/format") and request.method == "POST":
            return self._download(request)
        return Response.json({"message": "Not found", "appStatusCode": "NOT_FOUND"}, status=404)

    def _authenticated(self, request: RecordedRequest) -> bool:
        """Page 33-47: userName/password headers; NOTES: or a session id, or a service-account token."""
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

    def _listing(self, record: AvxCertificate) -> dict[str, object]:
        certificate = record.certificate
        listed: dict[str, object] = {
            "resourceId": record.resource_id,
            "commonName": record.common_name,
            "serialNumber": record.serial_number,
            "status": record.status,
            "validTo": certificate.not_valid_after_utc.isoformat(),
        }
        if self.search_lists_valid_from:
            listed["validFrom"] = certificate.not_valid_before_utc.isoformat()
        return listed

    def _search(self, request: RecordedRequest) -> Response:
        """NOTES: body {"input": {...}, "filter": {...}}, answer in response.response.objects[]. Records waiting for
        approval are not listed (NOTES: the new record shows in search once someone approves)."""
        try:
            criteria = request.json().get("input") or {}
        except (ValueError, AttributeError):
            return page_error("INVALID_REQUEST")
        with self.lock:
            records = [r for r in self.inventory.values() if r.approved and r.issued is not None]
        objects = [
            self._listing(r)
            for r in records
            if (not criteria.get("resourceId") or criteria["resourceId"] == r.resource_id)
            and (not criteria.get("commonName") or criteria["commonName"] == r.common_name)
        ]
        objects.sort(key=lambda o: str(o["validTo"]), reverse=True)
        return Response.json(
            {
                "response": {"response": {"objects": objects, "totalRecords": len(objects)}},
                "message": "Success",
                "appStatusCode": None,
            }
        )

    def _download(self, request: RecordedRequest) -> Response:
        """NOTES: {format, password, commonName, serialNumber, resourceId, isChainRequired} -> the file's bytes, in a
        format of the page's Table 4 (page 162-175; PK12, PFX and JKS need a password)."""
        try:
            body = request.json()
        except ValueError:
            return page_error("INVALID_REQUEST")
        if not isinstance(body, dict):
            return page_error("INVALID_REQUEST")
        fmt = str(body.get("format") or "")
        if fmt not in ALL_FORMATS:
            return page_error("INVALID_FORMAT")
        if fmt in PASSWORD_FORMATS and not body.get("password"):
            return page_error("INVALID_REQUEST")  # SILENT: the page names no code for a missing password
        with self.lock:
            record = self.inventory.get(str(body.get("resourceId") or ""))
        if record is None or not record.approved or record.issued is None:
            return page_error("NO_RECORDS_FOUND")
        serial = body.get("serialNumber")
        if serial and _serial_key(str(serial)) != _serial_key(record.serial_number or ""):
            return page_error("NO_RECORDS_FOUND")
        if self.download_delay:
            self.stopping.wait(self.download_delay)
        content = encode(record.issued, fmt, body.get("password") or None)
        return Response(200, content, {"Content-Type": "application/octet-stream"})

    # -- renew -------------------------------------------------------------------------------------
    def _request_problem(self, request: RecordedRequest) -> str | None:
        """The query (page 59-103) and header (page 49-57) rules; the page names no code for breaking them, so
        INVALID_REQUEST (page 242) stands for all (SILENT)."""
        if request.query_one("gwsource") in (None, ""):  # page 63: mandatory
            return "INVALID_REQUEST"
        if request.query_one("isSync") not in (None, "true", "false"):  # page 79
            return "INVALID_REQUEST"
        ttl = request.query_one("ttl")
        if ttl is not None and not (ttl.isascii() and ttl.isdigit() and int(ttl) > 0):  # page 93
            return "INVALID_REQUEST"
        if request.query_one("autoApproval") not in (None, "true", "false"):  # page 95-103 (SILENT on others)
            return "INVALID_REQUEST"
        content_type = (request.header("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":  # page 57
            return "INVALID_REQUEST"
        return None

    def _payload_problem(self, body: dict) -> str | None:  # type: ignore[type-arg]
        """Table 2 and 3 (page 115-160) against the status table."""
        if body.get("workflowType") not in (None, "direct"):  # page 146 (SILENT on other values)
            return "INVALID_REQUEST"
        if not body.get("resourceId"):  # page 121/127/134: either resourceId or serialNumber and commonName
            if not body.get("commonName") and not body.get("serialNumber"):
                return "MANDATORY_EITHER"
            if not body.get("commonName"):
                return "MANDATORY_CN"
            if not body.get("serialNumber"):
                return "MANDATORY_SERIAL"
        block = body.get("certificateFormat")
        if block is not None and not isinstance(block, dict):
            return "INVALID_REQUEST"
        fmt = (block or {}).get("format")
        if fmt and fmt not in ALL_FORMATS:  # page 268
            return "INVALID_FORMAT"
        if fmt in PASSWORD_FORMATS and not (block or {}).get("password"):  # page 156, Table 4 "Password Required"
            return "INVALID_REQUEST"  # SILENT: the page names no code for a missing password
        return None

    def _find(self, body: dict) -> AvxCertificate | str:  # type: ignore[type-arg]
        """The record to renew, or the status row that refuses. resourceId wins when both shapes are given (SILENT)."""
        resource_id = body.get("resourceId")
        with self.lock:
            if resource_id:
                record = self.inventory.get(str(resource_id))
                if record is None:
                    return "NO_RECORDS_FOUND" if MONGO_ID.fullmatch(str(resource_id)) else "INVALID_RESOURCE"
                return record if record.approved else "NO_RECORDS_FOUND"
            serial = str(body.get("serialNumber"))
            if not HEX_SERIAL.fullmatch(serial):
                return "INVALID_SERIAL"
            for record in self.inventory.values():
                if (
                    record.approved
                    and record.common_name == body.get("commonName")
                    and _serial_key(record.serial_number or "") == _serial_key(serial)
                ):
                    return record
        return "NO_RECORDS_FOUND"

    def _refusal(self, record: AvxCertificate) -> str | None:
        """The "Before you begin" conditions (page 7-15) this record breaks, as a status row."""
        if record.state == "monitored":
            return "CANNOT_PERFORM_OPERATION"  # page 304
        if record.state == "revoked":
            return "CERT-VWF-0006"  # page 8; SILENT on the code: the lifecycle row (page 280) is the stand-in's
        for condition, row in _REFUSALS:
            if not getattr(record, condition):
                return row
        if record.work_orders > 0:
            return "OPEN_WORK_ORDERS_FOUND"  # page 11, 290
        return None

    def _renew(self, request: RecordedRequest) -> Response:
        with self.lock:
            if self.scripted:
                return self.scripted.popleft()
        if not self._authenticated(request):
            return page_error("AVX_GW_003")
        problem = self._request_problem(request)
        if problem:
            return page_error(problem)
        try:
            body = request.json()
        except ValueError:
            return page_error("INVALID_REQUEST")
        if not isinstance(body, dict):
            return page_error("INVALID_REQUEST")
        problem = self._payload_problem(body)
        if problem:
            return page_error(problem)
        found = self._find(body)
        if isinstance(found, str):
            return page_error(found)
        with self.lock:
            refusal = self._refusal(found)
            if refusal is None:
                found.work_orders += 1  # the renewal's own work order, open from here
        if refusal:
            return page_error(refusal)
        record = self._reserve(found, f"REQ{uuid.uuid4().hex[:10].upper()}")
        if request.query_one("autoApproval") == "false":  # page 17, 103: waits for an approver
            return self._submitted(found, record)
        return self._processed(request, body, found, record)

    def _submitted(self, renewed: AvxCertificate, record: AvxCertificate) -> Response:
        """Manual approval: no content (NOTES); the page's 202 row (page 237). SILENT on which id it names."""
        named = {"new": record.resource_id, "requested": renewed.resource_id, "none": None}[self.approval_answer_names]
        response: dict[str, object] = {"certificateContent": None, "resourceId": named, "requestId": record.request_id}
        if self.approval_answer_names == "new":
            response.update(newCertificateId=record.resource_id, newCertificateUuid=record.uuid)
        return Response.json(
            {"response": response, "message": ACCEPTED_MESSAGE, "appStatusCode": None, "tags": {}}, status=202
        )

    def _processed(
        self,
        request: RecordedRequest,
        body: dict,  # type: ignore[type-arg]
        renewed: AvxCertificate,
        record: AvxCertificate,
    ) -> Response:
        if self.renew_delay:
            self.stopping.wait(self.renew_delay)
        self._issue(record)
        with self.lock:
            renewed.work_orders -= 1
        if self.answer_delay:  # renewed, but the answer comes late (the caller's read timeout)
            self.stopping.wait(self.answer_delay)
        block = body.get("certificateFormat") or {}
        if not block.get("format"):  # page 308: renewed, but nothing to download
            return page_error("FAILED_DOWNLOAD")
        if request.query_one("isSync") != "true":  # page 3, 73: without isSync=true the request is asynchronous
            response = {"resourceId": record.resource_id, "requestId": record.request_id, "certificateContent": None}
            return Response.json(
                {"response": response, "message": ACCEPTED_MESSAGE, "appStatusCode": None, "tags": {}}, status=202
            )
        return Response.json(
            {
                "response": self._renewed_response(record, block["format"], block.get("password")),
                "message": "Certificate retrieved successfully from CA",  # page 340
                "appStatusCode": None,
                "tags": {},
                "headers": None,
            }
        )

    def _renewed_response(self, record: AvxCertificate, fmt: str, password: str | None) -> dict[str, object]:
        """The sample response (page 329-339) plus the fields of Table 5 (page 183-222). SILENT on the HTTP status
        of a synchronous success: 200 (the 202 row's message is that of a triggered, not finished, renewal)."""
        assert record.issued is not None
        content = encode(record.issued, fmt, password)
        if self.content_fault == "not-base64":
            text = "%%not base64%%"
        elif self.content_fault == "not-certificate":
            text = base64.b64encode(b"<html>not a certificate</html>").decode()
        elif self.content_fault == "wrong-password":
            text = base64.b64encode(encode(record.issued, "PFX", "Another-Pass-42!")).decode()
        else:
            text = base64.b64encode(content).decode()
        key = ""
        if fmt == "PEM" and self.pem_includes_key:
            key = base64.b64encode(certs.private_key_pem(record.issued, pkcs8=self.pem_key_pkcs8)).decode()
        return {
            "certificateContent": text,
            "privateKeyContent": key,
            "resourceId": record.resource_id,  # page 188, 332: the record that has been created
            "requestId": record.request_id,
            "externalRequestId": None,
            "newCertificateUuid": record.uuid,  # page 335
            "newCertificateId": record.resource_id,  # page 336
            "keyAlreadyExist": False,
            "certificateName": record.common_name,  # page 216-220
            "encodedFormat": fmt,  # page 208-212 (SILENT on its value; the app never reads it)
            "tags": None,
        }


def _serial_key(serial: str) -> str:
    return serial.replace(":", "").upper().lstrip("0") or "0"


def encode(issued: certs.IssuedCertificate, fmt: str, password: str | None) -> bytes:
    """The file of one Table 4 format (page 162-175); JKS as a Java keystore of the certificate chain."""
    if fmt == "JKS":
        return jks_of(issued, password or "")
    return certs.encode(issued, fmt, password)


def jks_of(issued: certs.IssuedCertificate, password: str) -> bytes:
    """A JKS keystore (version 2) with the chain as trusted-certificate entries, sealed with the password. AVX's
    would also hold the private key; the app never asks for JKS (Key Vault cannot read it), so the stand-in only
    shows that the format is served, with its password."""

    def utf(text: str) -> bytes:
        data = text.encode("utf-8")
        return struct.pack(">H", len(data)) + data

    chain = [issued.certificate, *issued.chain]
    out = struct.pack(">III", 0xFEEDFEED, 2, len(chain))
    for index, certificate in enumerate(chain):
        der = certificate.public_bytes(serialization.Encoding.DER)
        out += struct.pack(">I", 2) + utf(f"cert-{index}") + struct.pack(">Q", 0) + utf("X.509")
        out += struct.pack(">I", len(der)) + der
    seal = hashlib.sha1(password.encode("utf-16-be") + b"Mighty Aphrodite" + out, usedforsecurity=False).digest()
    return out + seal
