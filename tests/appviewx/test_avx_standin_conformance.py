"""The AVX stand-in against the AVX renew page, row by row (issue 22).

The stand-in is a claim about AppViewX; these tests walk the page's status table (page lines 234-312) and its
download-format table (Table 4, lines 162-175) against it over real HTTPS, plus the renewal model the page and
NOTES.md describe (a renewal is a new record; manual approval answers without content and lists the new record only
once approved; the query parameters gwsource, isSync, ttl, autoApproval). Each test names the page line it checks.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from tests.standins.avx import AvxCertificate, AvxStandIn
from tests.standins.avx_page import ACCEPTED_MESSAGE, FORMAT_TABLE, STATUS_TABLE_ROWS, FormatRow
from tests.standins.stack import AVX_PASSWORD, AVX_USERNAME, StandIns

PASSWORD = "Conformance-Pass-1!"  # a test password, not a sentinel


class Avx:
    """The stand-in, called as the page shows: PUT /avxapi/certificate/renew?gwsource=external with the
    userName/password headers (page 22-57)."""

    def __init__(self, standins: StandIns) -> None:
        self.standin: AvxStandIn = standins.avx
        self.base = f"{standins.avx.url}/avxapi"
        self.session = requests.Session()
        self.session.trust_env = False  # the machine's REQUESTS_CA_BUNDLE would win over `verify`
        self.session.verify = str(standins.ca.bundle_path)
        self.headers = {"userName": AVX_USERNAME, "password": AVX_PASSWORD, "Content-Type": "application/json"}

    def renew(
        self,
        body: Any,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> requests.Response:
        query = {"gwsource": "external", "isSync": "true", "ttl": "300"} if params is None else params
        data = raw if raw is not None else __import__("json").dumps(body).encode()
        return self.session.put(
            f"{self.base}/certificate/renew", params=query, headers={**self.headers, **(headers or {})}, data=data
        )

    def search(self, **criteria: str) -> list[dict[str, Any]]:
        body = {"input": criteria, "filter": {"max": 50, "start": 1, "sortColumn": "validTo", "sortOrder": "desc"}}
        answer = self.session.post(
            f"{self.base}/certificate/search", params={"gwsource": "external"}, headers=self.headers, json=body
        )
        assert answer.status_code == 200, answer.text
        objects: list[dict[str, Any]] = answer.json()["response"]["response"]["objects"]
        return objects

    def download(self, resource_id: str, fmt: str, password: str | None = None) -> requests.Response:
        body = {"format": fmt, "password": password or "", "resourceId": resource_id, "isChainRequired": True}
        return self.session.post(
            f"{self.base}/certificate/download/format", params={"gwsource": "external"}, headers=self.headers, json=body
        )


@pytest.fixture
def avx(standins: StandIns) -> Iterator[Avx]:
    standins.reset()
    client = Avx(standins)
    yield client
    client.session.close()
    standins.reset()


def pfx_body(record: AvxCertificate, fmt: str = "PFX") -> dict[str, Any]:
    return {"resourceId": record.resource_id, "certificateFormat": {"format": fmt, "password": PASSWORD}}


def assert_row(answer: requests.Response, row: str) -> None:
    expected = STATUS_TABLE_ROWS[row]
    document = answer.json()
    assert (answer.status_code, document["appStatusCode"], document["message"]) == (
        expected.status,
        expected.code,
        expected.message,
    ), f"page line {expected.line}: {answer.status_code} {answer.text[:200]}"


# -- the status table, row by row (page 234-312): each row reached by the condition that causes it ------------------

# row -> (set-up on the record, request as (body, params, headers) from the record). None keeps the default.
Setup = Callable[[AvxCertificate], None]
Request = Callable[[AvxCertificate], tuple[Any, dict[str, str] | None, dict[str, str] | None]]


def _flag(name: str, value: object) -> Setup:
    return lambda record: setattr(record, name, value)


def _none(record: AvxCertificate) -> None:
    return None


ROW_CASES: dict[str, tuple[Setup, Request]] = {
    # 238: wrong password header (page 41-47)
    "AVX_GW_003": (_none, lambda r: (pfx_body(r), None, {"password": "wrong"})),
    # 242: a body that is not a JSON object (the payload, page 105-113)
    "INVALID_REQUEST": (_none, lambda r: (["not", "an", "object"], None, None)),
    # 246: a serialNumber that is not a serial
    "INVALID_SERIAL": (
        _none,
        lambda r: (
            {"commonName": r.common_name, "serialNumber": "not-a-serial!", "certificateFormat": {"format": "CRT"}},
            None,
            None,
        ),
    ),
    # 250: a resourceId that is not a Mongo ID (page 117)
    "INVALID_RESOURCE": (
        _none,
        lambda r: ({"resourceId": "not a mongo id", "certificateFormat": {"format": "CRT"}}, None, None),
    ),
    # 254: neither shape (page 121)
    "MANDATORY_EITHER": (_none, lambda r: ({"certificateFormat": {"format": "CRT"}}, None, None)),
    # 260: serialNumber without commonName
    "MANDATORY_CN": (
        _none,
        lambda r: ({"serialNumber": r.serial_number, "certificateFormat": {"format": "CRT"}}, None, None),
    ),
    # 264: commonName without serialNumber
    "MANDATORY_SERIAL": (
        _none,
        lambda r: ({"commonName": r.common_name, "certificateFormat": {"format": "CRT"}}, None, None),
    ),
    # 268: a format outside Table 4
    "INVALID_FORMAT": (
        _none,
        lambda r: ({"resourceId": r.resource_id, "certificateFormat": {"format": "ZIP"}}, None, None),
    ),
    # 272: no ACF permission (page 7)
    "AVX_GW_005": (_flag("acf_permission", False), lambda r: (pfx_body(r), None, None)),
    # 276: a well-formed resourceId AVX does not hold
    "NO_RECORDS_FOUND": (
        _none,
        lambda r: ({"resourceId": "0" * 24, "certificateFormat": {"format": "CRT"}}, None, None),
    ),
    # 280: the CA does not support renew (page 282)
    "CERT-VWF-0006": (_flag("ca_renews", False), lambda r: (pfx_body(r), None, None)),
    # 286: read-only group (page 10)
    "READ_GROUP": (_flag("group_rw", False), lambda r: (pfx_body(r), None, None)),
    # 290: an open work order (page 11)
    "OPEN_WORK_ORDERS_FOUND": (_flag("work_orders", 1), lambda r: (pfx_body(r), None, None)),
    # 296: the CA connector has no validity (page 9, 14)
    "CERT-GEN-0055": (_flag("ca_validity", False), lambda r: (pfx_body(r), None, None)),
    # 300: neither CSR nor key in AVX (page 12)
    "FAILED_NO_KEY": (_flag("has_key", False), lambda r: (pfx_body(r), None, None)),
    # 304: monitored (page 8)
    "CANNOT_PERFORM_OPERATION": (_flag("state", "monitored"), lambda r: (pfx_body(r), None, None)),
    # 308: no certificateFormat.format: renewed, not downloaded
    "FAILED_DOWNLOAD": (_none, lambda r: ({"resourceId": r.resource_id, "certificateFormat": {}}, None, None)),
    # 312: the CA cannot be reached (page 15; the page names no code for it)
    "avx-common-011": (_flag("ca_reachable", False), lambda r: (pfx_body(r), None, None)),
}


def test_every_row_of_the_status_table_has_a_case() -> None:
    assert sorted(ROW_CASES) == sorted(STATUS_TABLE_ROWS)


@pytest.mark.parametrize("row", sorted(STATUS_TABLE_ROWS))
def test_status_table_row(avx: Avx, row: str) -> None:
    record = avx.standin.add_certificate(f"row-{row.lower()}.contoso.com")
    setup, request = ROW_CASES[row]
    setup(record)
    body, params, headers = request(record)
    answer = avx.renew(body, params=params, headers=headers)
    assert_row(answer, row)
    renewed = len(record.renewals)
    # Only line 308 says AVX renewed ("performed successfully but failed to download"): a new record exists.
    assert renewed == (1 if row == "FAILED_DOWNLOAD" else 0), row
    if row == "FAILED_DOWNLOAD":
        (new,) = record.renewals
        assert new.resource_id != record.resource_id and avx.search(resourceId=new.resource_id)


def test_the_202_row_is_the_answer_of_a_triggered_renewal(avx: Avx) -> None:
    """Page 237 (202, appStatusCode null): a renewal without isSync=true (page 3, 73) is triggered, not waited on."""
    record = avx.standin.add_certificate("async.contoso.com")
    answer = avx.renew(pfx_body(record), params={"gwsource": "external"})
    assert answer.status_code == 202 and answer.json()["appStatusCode"] is None
    assert answer.json()["message"] == ACCEPTED_MESSAGE
    assert answer.json()["response"]["certificateContent"] is None
    assert answer.json()["response"]["resourceId"] == record.renewals[0].resource_id


# -- the query parameters (page 59-103) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"isSync": "true"},  # gwsource missing (page 63: mandatory)
        {"gwsource": "external", "isSync": "yes"},  # page 79: true or false
        {"gwsource": "external", "isSync": "true", "ttl": "0"},  # page 93: a positive integer
        {"gwsource": "external", "isSync": "true", "ttl": "-5"},
        {"gwsource": "external", "isSync": "true", "ttl": "300s"},
        {"gwsource": "external", "isSync": "true", "autoApproval": "maybe"},  # page 95-103 (silent on others)
    ],
)
def test_query_parameters_outside_the_page_are_refused(avx: Avx, params: dict[str, str]) -> None:
    record = avx.standin.add_certificate("query.contoso.com")
    assert_row(avx.renew(pfx_body(record), params=params), "INVALID_REQUEST")
    assert record.renewals == []


def test_content_type_must_be_json(avx: Avx) -> None:
    """Page 57: "The value must be application/json"."""
    record = avx.standin.add_certificate("ctype.contoso.com")
    assert_row(avx.renew(pfx_body(record), headers={"Content-Type": "text/plain"}), "INVALID_REQUEST")


def test_auto_approval_is_the_default_and_true_is_the_same(avx: Avx) -> None:
    """Page 101: "If this parameter is not included in the query, auto-approval is enabled by default"."""
    record = avx.standin.add_certificate("auto.contoso.com")
    for params in (
        {"gwsource": "external", "isSync": "true"},
        {"gwsource": "external", "isSync": "true", "ttl": "60", "autoApproval": "true"},
    ):
        answer = avx.renew(pfx_body(record), params=params)
        assert answer.status_code == 200 and answer.json()["response"]["certificateContent"], answer.text


# -- a renewal is a new record (page 188, 332-336; NOTES) ----------------------------------------------------------


def test_a_renewal_creates_a_new_record_and_the_old_one_keeps_its_certificate(avx: Avx) -> None:
    record = avx.standin.add_certificate("newrecord.contoso.com")
    old_serial = record.serial_number
    answer = avx.renew(pfx_body(record)).json()["response"]
    (new,) = record.renewals
    assert answer["resourceId"] == answer["newCertificateId"] == new.resource_id != record.resource_id
    assert answer["newCertificateUuid"] == new.uuid and answer["requestId"]
    leaf = pkcs12.load_pkcs12(base64.b64decode(answer["certificateContent"]), PASSWORD.encode()).cert
    assert leaf is not None and leaf.certificate.serial_number == new.certificate.serial_number

    assert [o["serialNumber"] for o in avx.search(resourceId=record.resource_id)] == [old_serial]
    listed = {o["resourceId"]: o["serialNumber"] for o in avx.search(commonName=record.common_name)}
    assert listed == {record.resource_id: old_serial, new.resource_id: new.serial_number}


def test_renewing_by_common_name_and_serial_also_creates_a_new_record(avx: Avx) -> None:
    record = avx.standin.add_certificate("bycn.contoso.com")
    body = {
        "commonName": record.common_name,
        "serialNumber": record.serial_number,
        "certificateFormat": {"format": "CRT"},
    }
    answer = avx.renew(body).json()["response"]
    assert answer["resourceId"] == record.renewals[0].resource_id != record.resource_id


def test_an_old_record_renewed_again_is_accepted_and_names_another_new_record(avx: Avx) -> None:
    """The page is silent on renewing a record AVX has since renewed; the stand-in's AVX accepts it."""
    record = avx.standin.add_certificate("again.contoso.com")
    first = avx.renew(pfx_body(record)).json()["response"]["resourceId"]
    second = avx.renew(pfx_body(record)).json()["response"]["resourceId"]
    assert len({record.resource_id, first, second}) == 3


# -- manual approval (page 17, 95-103; NOTES) ---------------------------------------------------------------------


@pytest.mark.parametrize("names", ["new", "requested", "none"])
def test_manual_approval_answers_without_content_and_lists_the_record_once_approved(avx: Avx, names: str) -> None:
    avx.standin.approval_answer_names = names  # type: ignore[assignment]
    record = avx.standin.add_certificate(f"manual-{names}.contoso.com")
    params = {"gwsource": "external", "isSync": "true", "autoApproval": "false"}
    answer = avx.renew(pfx_body(record), params=params)
    assert answer.status_code == 202 and answer.json()["message"] == ACCEPTED_MESSAGE
    response = answer.json()["response"]
    assert response["certificateContent"] is None and response["requestId"]
    (waiting,) = record.renewals
    assert (
        response.get("resourceId") == {"new": waiting.resource_id, "requested": record.resource_id, "none": None}[names]
    )

    assert len(avx.search(commonName=record.common_name)) == 1  # not listed before approval
    assert avx.download(waiting.resource_id, "CRT").json()["appStatusCode"] == "NO_RECORDS_FOUND"
    assert_row(avx.renew(pfx_body(record), params=params), "OPEN_WORK_ORDERS_FOUND")  # page 11, 290

    approved = avx.standin.approve(response["requestId"])
    assert approved is waiting and approved.serial_number != record.serial_number
    listed = {o["resourceId"] for o in avx.search(commonName=record.common_name)}
    assert listed == {record.resource_id, waiting.resource_id}
    assert avx.renew(pfx_body(record)).status_code == 200  # the work order is closed


# -- Table 4: the download formats, row by row (page 162-175) ------------------------------------------------------


def test_every_row_of_the_format_table_is_known_to_the_app() -> None:
    from shared.core.certificates import FORMATS

    assert {row.value: row.password_required for row in FORMAT_TABLE} == {
        name: info.password_required for name, info in FORMATS.items()
    }


def parsed(row: FormatRow, content: bytes, record: AvxCertificate) -> int:
    """The serial of the certificate in a file of this format (PK8: the key's size, it holds no certificate)."""
    value = row.value
    if value in ("PFX", "PK12"):
        loaded = pkcs12.load_pkcs12(content, PASSWORD.encode()).cert
        assert loaded is not None
        return loaded.certificate.serial_number
    if value in ("CRT", "CERT", "PEM"):
        return x509.load_pem_x509_certificates(content)[0].serial_number
    if value in ("CER", "DER", "DERCER"):
        return x509.load_der_x509_certificate(content).serial_number
    if value in ("P7B", "P7C"):
        # a PKCS#7 bundle is a set: the leaf is the one not self-issued
        return next(c for c in pkcs7.load_der_pkcs7_certificates(content) if c.subject != c.issuer).serial_number
    if value == "PK8":
        key = serialization.load_pem_private_key(content, None)
        assert key.public_key() == record.certificate.public_key()  # type: ignore[comparison-overlap]
        return record.certificate.serial_number
    assert value == "JKS" and content[:4] == b"\xfe\xed\xfe\xed"
    return record.certificate.serial_number


@pytest.mark.parametrize("row", FORMAT_TABLE, ids=lambda r: f"{r.value}@{r.line}")
def test_format_table_row_on_renew(avx: Avx, row: FormatRow) -> None:
    record = avx.standin.add_certificate(f"fmt-{row.value.lower()}.contoso.com")
    if row.password_required:  # "Password Required: Yes"
        refused = avx.renew({"resourceId": record.resource_id, "certificateFormat": {"format": row.value}})
        assert_row(refused, "INVALID_REQUEST")
        assert record.renewals == []
    block = {"format": row.value, **({"password": PASSWORD} if row.password_required else {})}
    answer = avx.renew({"resourceId": record.resource_id, "certificateFormat": block})
    assert answer.status_code == 200, answer.text
    (new,) = record.renewals
    content = base64.b64decode(answer.json()["response"]["certificateContent"])
    assert parsed(row, content, new) == new.certificate.serial_number


@pytest.mark.parametrize("row", FORMAT_TABLE, ids=lambda r: f"{r.value}@{r.line}")
def test_format_table_row_on_download(avx: Avx, row: FormatRow) -> None:
    record = avx.standin.add_certificate(f"dl-{row.value.lower()}.contoso.com")
    if row.password_required:
        assert avx.download(record.resource_id, row.value).json()["appStatusCode"] == "INVALID_REQUEST"
    answer = avx.download(record.resource_id, row.value, PASSWORD if row.password_required else None)
    assert answer.status_code == 200
    assert parsed(row, answer.content, record) == record.certificate.serial_number


def test_search_may_leave_out_valid_from(avx: Avx) -> None:
    """NOTES lists commonName, serialNumber, resourceId, status, validTo, "..." - silent on validFrom."""
    record = avx.standin.add_certificate("novalidfrom.contoso.com")
    assert "validFrom" in avx.search(resourceId=record.resource_id)[0]
    avx.standin.search_lists_valid_from = False
    assert "validFrom" not in avx.search(resourceId=record.resource_id)[0]
